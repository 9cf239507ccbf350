"""One registry for the dense models (semantic segmentation and detection), apart from timm's.

timm's registry holds what timm's API fits: backbones and classifiers, which every tool that walks
`timm.list_models()` may trace, script and test. A dense model takes images to masks or boxes, so it lives
here: `create_dense_model(name, ...)` builds one, `list_dense_models(task)` names them, and
`inceptionnext list --task segmentation|detection` prints them.
"""

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import timm
import torch.nn as nn

DENSE_TASKS = ("segmentation", "detection")


@dataclass(frozen=True)
class DenseModel:
    """One registered architecture: a head of `task` on a zoo backbone, built by `builder(**kwargs)`; its
    `default_cfg` is the preprocessing and class count it is built with (what timm calls a pretrained config)."""

    name: str
    task: str
    head: str
    backbone: str
    builder: Callable[..., nn.Module]
    default_cfg: Dict[str, Any] = field(default_factory=dict)


DENSE_MODELS: Dict[str, DenseModel] = {}


def register_dense_model(entry: DenseModel) -> DenseModel:
    if entry.task not in DENSE_TASKS:
        raise ValueError(f"{entry.name}: task {entry.task!r} is not one of {', '.join(DENSE_TASKS)}")
    DENSE_MODELS[entry.name] = entry
    return entry


def get_dense_model(name: str, task: Optional[str] = None) -> DenseModel:
    """The registered dense model `name` (of `task`, when given); a KeyError with close names otherwise.

    Args:
        name: the model's name (a tag after '.' is ignored).
        task: 'segmentation' or 'detection'; None for either.

    Returns:
        The registry entry (name, task, backbone, builder).

    Raises:
        KeyError: no such model of that task; the message suggests close names.
    """
    entry = DENSE_MODELS.get(name.split(".")[0])
    if entry is None or (task is not None and entry.task != task):
        names = list_dense_models(task)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        what = f"a {task} model" if task else "a segmentation or detection model"
        raise KeyError(
            f"{name!r} is not {what}"
            + (
                f"; did you mean {', '.join(close)}?"
                if close
                else f"; `inceptionnext list --task {task or 'segmentation'}` shows the names"
            )
        )
    return entry


def is_dense_model(name: Optional[str], task: Optional[str] = None) -> bool:
    entry = DENSE_MODELS.get(name.split(".")[0]) if name else None
    return entry is not None and (task is None or entry.task == task)


def list_dense_models(task: Optional[str] = None, pattern: str = "*") -> List[str]:
    """Registered dense model names of `task` (all tasks when None) matching the shell-style `pattern`.

    Args:
        task: 'segmentation' or 'detection'; None for both.
        pattern: a shell-style pattern, e.g. `"upernet_*"`.

    Returns:
        The names, sorted.
    """
    return sorted(
        n for n, e in DENSE_MODELS.items() if (task is None or e.task == task) and fnmatch.fnmatch(n, pattern)
    )


def create_dense_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the dense model `name`, e.g. ``create_dense_model("upernet_inceptionnext_t", num_classes=150,
    pretrained=True)`` (segmentation: `pretrained` loads the backbone's ImageNet weights) or
    ``create_dense_model("maskrcnn_inceptionnext_t_fpn", num_classes=80)``; the options are the builder's.

    Args:
        name: a registered dense model (`list_dense_models`).
        **kwargs: the builder's options (`create_segmenter`, `create_detector`).

    Returns:
        The model.

    Raises:
        KeyError: `name` is not a registered dense model.
    """
    return get_dense_model(name).builder(**kwargs)


def create_any_model(name: str, **kwargs: Any) -> nn.Module:
    """Any model this library names: a dense model from this registry, anything else from timm's.

    Args:
        name: a dense model or a timm model name.
        **kwargs: the builder's or `timm.create_model`'s options.

    Returns:
        The model.

    Raises:
        RuntimeError: timm knows no model of that name (timm's own error).
    """
    return create_dense_model(name, **kwargs) if is_dense_model(name) else timm.create_model(name, **kwargs)


def is_model(name: str) -> bool:
    return is_dense_model(name) or timm.is_model(name)
