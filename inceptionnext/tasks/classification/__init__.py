"""Image classification: importing this registers its task with the engine."""

from .task import ClassificationTask

__all__ = ["ClassificationTask"]
