"""Semantic segmentation: importing this registers its task with the engine."""

from .config import SETTINGS, SegmentationConfig
from .task import SegmentationTask

__all__ = ["SegmentationTask", "SegmentationConfig", "SETTINGS"]
