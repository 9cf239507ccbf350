"""The training engine on timm's components: settings, loop, checkpoints, distributed runs, logs. It knows no task
by name: tasks register with it (`register_task`) and bring their own settings (`TaskSettings`)."""

from ..data.digits import DigitsDataset
from ..data.folders import DataError
from .checkpoint import CheckpointError
from .command_line import parse_config
from .config import ConfigError, TrainConfig, dataset_key, key, task_key
from .config_files import load_yaml, save_config
from .engine import NonFiniteLossError, RunResult, Trainer, TrainError, create_training_model, fit, plan_batch
from .overrides import apply_overrides, config_class, make_config
from .sampler import RoundSampler
from .task import Task, TaskSettings, register_task

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DigitsDataset",
    "NonFiniteLossError",
    "RoundSampler",
    "RunResult",
    "Task",
    "TaskSettings",
    "TrainConfig",
    "TrainError",
    "Trainer",
    "apply_overrides",
    "config_class",
    "create_training_model",
    "dataset_key",
    "fit",
    "key",
    "load_yaml",
    "make_config",
    "parse_config",
    "plan_batch",
    "register_task",
    "save_config",
    "task_key",
]
