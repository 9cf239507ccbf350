"""Semantic segmentation: importing this registers its task with the engine."""

from .task import SegmentationTask

__all__ = ["SegmentationTask"]
