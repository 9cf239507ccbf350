"""Object detection and instance segmentation: importing this registers its task with the engine."""

from .config import SETTINGS, DetectionConfig
from .task import DetectionTask

__all__ = ["DetectionTask", "DetectionConfig", "SETTINGS"]
