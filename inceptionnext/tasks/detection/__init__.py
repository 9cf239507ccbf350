"""Object detection and instance segmentation: importing this registers its task with the engine."""

from .task import DetectionTask

__all__ = ["DetectionTask"]
