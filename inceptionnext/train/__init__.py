"""Training engine on timm's components: configs, data, checkpoints, distributed runs, evaluation."""
from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig, apply_overrides, load_yaml, parse_config
from .data import DataError, DigitsDataset
from .engine import NonFiniteLossError, RunResult, Trainer, TrainError, create_model, fit
from .tasks.classification import evaluate

__all__ = [
    "CheckpointError", "ConfigError", "DataError", "DigitsDataset", "NonFiniteLossError", "RunResult", "TrainConfig",
    "TrainError", "Trainer", "apply_overrides", "create_model", "evaluate", "fit", "load_yaml", "parse_config",
]
