"""Image classification: importing this registers its task with the engine."""

from .config import SETTINGS, ClassificationConfig
from .task import ClassificationTask

__all__ = ["ClassificationTask", "ClassificationConfig", "SETTINGS"]
