"""What a task brings to the shared training engine, and nothing more.

The engine owns everything tasks share: config, run folder, checkpoints and resume, torchrun/DDP, AMP, EMA,
the lr schedule, the optimizer, progress bars, the CSV log and the curves plot. A task owns its data, its model
builder, the loss of one batch, its evaluation (a metrics dict with one main metric, higher is better, which picks
``model_best.pth``) and the task-specific fields its checkpoints record (preprocessing, class names, ...).

Tasks register here (`register_task`), so the engine finds the one a config names without importing any task:
`inceptionnext.tasks` registers the library's three when the package is imported.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn


class Task:
    name: str = ""
    main_metric: str = ""  # a key of evaluate()'s dict; the best checkpoint maximises val_<main_metric>
    metric_label: str = ""  # how the log names the main metric, e.g. "top-1", "mIoU"
    log_columns: Sequence[str] = ()  # the CSV log's columns, in order (history rows may hold more)
    plot_metrics: Sequence[Tuple[str, str]] = ()  # (history key, legend label) for the metric panel of the plot

    def __init__(self, cfg, env):
        self.cfg, self.env, self.device = cfg, env, env.device

    def build_datasets(self) -> Tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, int]:
        """Train and validation datasets, and the number of classes they hold."""
        raise NotImplementedError

    def build_model(self, num_classes: int) -> nn.Module:
        """The model, with the weights the config names (cfg.pretrained / cfg.weights)."""
        raise NotImplementedError

    def describe_start(self, model: nn.Module) -> str:
        """What the built model started from, in words (the run's `weights:` line): the builder's own note
        (``model.start_note``) when it left one, else what the config names."""
        note = getattr(model, "start_note", None)
        if note:
            return note
        cfg = self.cfg
        if cfg.weights:
            return f"the weight file {cfg.weights}"
        if cfg.pretrained:
            return f"the pretrained weights of {cfg.model}"
        return "random initialisation (no pretrained weights, no weight file)"

    def data_config(self, model: nn.Module) -> Dict[str, Any]:
        """The evaluation preprocessing (input_size, mean, std, ...); recorded in every checkpoint."""
        raise NotImplementedError

    def build_loaders(
        self, train_set, val_set, data_cfg: Dict[str, Any], num_classes: int, batches_per_epoch: Optional[int]
    ):
        """(train loader, val loader). batches_per_epoch is set for iteration-based runs (cfg.iters): the train
        loader then yields exactly that many batches per round, continuing through the data across rounds and
        reproducible from ``sampler.set_epoch(round)``; None means one pass over the training set."""
        raise NotImplementedError

    def train_loss(self, model: nn.Module, batch) -> Tuple[torch.Tensor, int]:
        """The loss of one loader batch (moved to the device here) and the number of samples it averages over.
        The engine runs this under autocast and does the backward pass, accumulation and update."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, desc: str = "val") -> Dict[str, float]:
        """Metrics over the whole validation set, summed over all ranks; holds self.main_metric."""
        raise NotImplementedError

    def describe(self, row: Dict[str, Any]) -> str:
        """The validation part of one log line, from a history row (keys val_*)."""
        raise NotImplementedError

    def checkpoint_record(self, data_cfg: Dict[str, Any], train_set) -> Dict[str, Any]:
        """Task fields stored in each checkpoint beside the engine's (data_config, class names, ...)."""
        return {"data_config": dict(data_cfg)}

    def after_validation(self, model: nn.Module, out_dir: str, epoch: int) -> None:
        """Hook on rank 0 after a round whose validation made it the best so far, with the weights model_best.pth
        now holds (e.g. saving example predictions); default: nothing."""

    def after_best(self, model: nn.Module, out_dir: str, epoch: int) -> None:
        """Hook on rank 0 when a round's validation is the best so far (`model`: the weights that scored it, as
        passed to `evaluate`), e.g. writing per-class results of the best weights; default: nothing."""

    def run_summary(self, out_dir: str, best_checkpoint: str) -> List[str]:
        """Lines the end of a run adds to its summary (the worst class, the next commands ...); default: none."""
        return []

    def extra_outputs(self, out_dir: str) -> Dict[str, str]:
        """Further files the run wrote, {label: path}, listed with the checkpoint and log when it ends."""
        return {}


TASKS: Dict[str, type] = {}


def register_task(cls: type) -> type:
    """Class decorator: make a Task subclass available to the engine under its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no task name")
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> type:
    """The Task class registered under name; an unknown task is a ValueError naming the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS) or 'none registered'}")
    return TASKS[name]
