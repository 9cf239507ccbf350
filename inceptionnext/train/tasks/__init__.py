"""The tasks the one training engine runs; the config key ``task`` picks one by name.

A task module is imported only when a run asks for it, so classification never pays for the dense tasks'
imports, and a task module may import the engine's shared helpers without an import cycle.
"""
from __future__ import annotations

import importlib

from .base import Task

TASKS = {
    "classification": "inceptionnext.train.tasks.classification:ClassificationTask",
    "segmentation": "inceptionnext.train.tasks.segmentation:SegmentationTask",
    "detection": "inceptionnext.train.tasks.detection:DetectionTask",
}


def get_task(name: str) -> type:
    """The Task class registered under name; an unknown or not-yet-built task is a ValueError naming it."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise ValueError(f"task {name!r} is not available in this version of inceptionnext") from None
    return getattr(mod, cls)


__all__ = ["TASKS", "Task", "get_task"]
