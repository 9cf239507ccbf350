"""The training engine on timm's components: config, loop, checkpoints, distributed runs, logs. It knows no task
by name: tasks register with it (`train.task.register_task`)."""

from ..data.digits import DigitsDataset
from ..data.folders import DataError
from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig, apply_overrides, load_yaml, parse_config
from .engine import NonFiniteLossError, RunResult, Trainer, TrainError, create_model, fit

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DigitsDataset",
    "NonFiniteLossError",
    "RunResult",
    "TrainConfig",
    "TrainError",
    "Trainer",
    "apply_overrides",
    "create_model",
    "fit",
    "load_yaml",
    "parse_config",
]
