"""What a task brings to the shared training engine, and nothing more.

The engine owns everything tasks share: config, run folder, checkpoints and resume, torchrun/DDP, AMP, EMA,
the lr schedule, the optimizer, progress bars, the CSV log and the curves plot. A task owns its data, its model
builder, the loss of one batch, its evaluation (a metrics dict with one main metric, higher is better, which picks
``model_best.pth``) and the task-specific fields its checkpoints record (preprocessing, class names, ...). Its
settings (`TaskSettings`, in ``tasks/<task>/config.py``) declare its own config keys, its datasets and what it
supports.

Tasks register here (`register_task`), so the engine and the command line find the one a config names, and every
task's keys, without importing any task: `inceptionnext.tasks` registers the library's three when the package is
imported; a task of your own registers when its module is imported (the ``task_module`` key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .config import TrainConfig, config_fields


@dataclass(frozen=True)
class TaskSettings:
    """What a task declares about its settings: its config class (TrainConfig plus the task's own keys and its
    `dataset` choices), the metrics it reports, the one that picks ``model_best.pth``, and the kinds of run it
    supports (an epoch run counts epochs; an iteration run, ``iters``, counts optimizer updates).

    Args:
        config: the task's config class, a `TrainConfig` subclass.
        metrics: keys of evaluate()'s dict (the log's val_* columns).
        best_metric: the one of them that picks model_best.pth (higher is better).
        best_label: how the log names it, e.g. "top-1", "mIoU".
        epoch_runs: the task trains by epochs.
        iteration_runs: the task trains by iterations (`iters`).
        plan_from_data: fills the keys a run leaves unset from its data: (config, the keys given) -> ({key:
            value}, one line per key saying why); None: the task chooses nothing from its data.
    """

    config: type
    metrics: Tuple[str, ...]  # keys of evaluate()'s dict (the log's val_* columns)
    best_metric: str  # the one of them that picks model_best.pth (higher is better)
    best_label: str  # how the log names it, e.g. "top-1", "mIoU"
    epoch_runs: bool = True
    iteration_runs: bool = False
    plan_from_data: Optional[Callable[[Any, Collection[str]], Tuple[Dict[str, Any], List[str]]]] = None

    @property
    def datasets(self) -> Tuple[str, ...]:
        """The task's datasets, its default first."""
        return tuple(config_fields(self.config)["dataset"].metadata["allowed"].choices)

    @property
    def own_keys(self) -> Tuple[str, ...]:
        """The keys this task adds to the shared ones."""
        shared = config_fields(TrainConfig)
        return tuple(k for k in config_fields(self.config) if k not in shared)


def run_kind_problem(name: str, settings: TaskSettings, iters: Optional[int]) -> Optional[str]:
    """Why a run of task `name` cannot count what it asks to (epochs, or updates when iters is set), else None;
    the one message every task's refusal uses."""
    if iters is not None and not settings.iteration_runs:
        return f"task {name} trains by epochs, not by iterations: unset iters"
    if iters is None and not settings.epoch_runs:
        return f"task {name} trains by iterations, not by epochs: set iters and eval_interval"
    return None


class Task:
    """One task's part of a run: its data, model, loss of a batch, evaluation and checkpoint fields.

    Subclass it, set `name` and `settings`, implement the methods that raise NotImplementedError and register the
    class with `register_task`; the engine builds one per run.

    Args:
        cfg: the run's config (an instance of the task's config class).
        env: the process's distributed environment (rank, world size, device).
    """

    name: str = ""
    settings: TaskSettings  # declared in the task's config module
    log_columns: Sequence[str] = ()  # the CSV log's columns, in order (history rows may hold more)
    plot_metrics: Sequence[Tuple[str, str]] = ()  # (history key, legend label) for the metric panel of the plot

    def __init__(self, cfg, env):
        self.cfg, self.env, self.device = cfg, env, env.device

    @property
    def main_metric(self) -> str:
        """The key of evaluate()'s dict that picks the best checkpoint (it maximises val_<main_metric>)."""
        return self.settings.best_metric

    @property
    def metric_label(self) -> str:
        """How the log names the main metric, e.g. "top-1"."""
        return self.settings.best_label

    def build_datasets(self) -> Tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, int]:
        """Train and validation datasets, and the number of classes they hold.

        Returns:
            (train set, validation set, number of classes).
        """
        raise NotImplementedError

    def build_model(self, num_classes: int) -> nn.Module:
        """The model, with the weights the config names (cfg.pretrained / cfg.weights).

        Args:
            num_classes: the classes `build_datasets` found.

        Returns:
            The model, on the CPU.
        """
        raise NotImplementedError

    def describe_start(self, model: nn.Module) -> str:
        """What the built model started from, in words (the run's `weights:` line): the builder's own note
        (``model.start_note``) when it left one, else what the config names.

        Args:
            model: the model `build_model` built.

        Returns:
            One phrase, e.g. "the pretrained weights of inceptionnext_t".
        """
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
        """The evaluation preprocessing (input_size, mean, std, ...); recorded in every checkpoint.

        Args:
            model: the model being trained.

        Returns:
            timm's data config.
        """
        raise NotImplementedError

    def build_loaders(
        self,
        train_set,
        val_set,
        data_cfg: Dict[str, Any],
        num_classes: int,
        round_sampler: Optional[torch.utils.data.Sampler],
    ):
        """(train loader, val loader). round_sampler is the engine's `RoundSampler` in an iteration run (cfg.iters):
        the train loader draws from it (batch_size per batch, drop_last), which gives exactly one round of batches,
        continuing through the data across rounds; None in an epoch run (one pass over the training set).

        Args:
            train_set: the training set.
            val_set: the validation set.
            data_cfg: the evaluation preprocessing (`data_config`).
            num_classes: the classes of the sets.
            round_sampler: the engine's sampler in an iteration run, else None.

        Returns:
            (train loader, val loader).
        """
        raise NotImplementedError

    def train_loss(self, model: nn.Module, batch) -> Tuple[torch.Tensor, int]:
        """The loss of one loader batch (moved to the device here) and the number of samples it averages over.
        The engine runs this under autocast and does the backward pass, accumulation and update.

        Args:
            model: the model in train mode (DDP-wrapped in a distributed run).
            batch: one batch of the train loader.

        Returns:
            (the loss, a scalar tensor; the number of samples it averages over).
        """
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, desc: str = "val") -> Dict[str, float]:
        """Metrics over the whole validation set, summed over all ranks; holds self.main_metric.

        Args:
            model: the model (or its EMA copy) in eval mode.
            loader: the validation loader.
            desc: the progress bar's label.

        Returns:
            {metric: value}, the keys of `settings.metrics` among them.
        """
        raise NotImplementedError

    def describe(self, row: Dict[str, Any]) -> str:
        """The validation part of one log line, from a history row (keys val_*).

        Args:
            row: one round's history row.

        Returns:
            The text, e.g. "val top-1 91.2%".
        """
        raise NotImplementedError

    def checkpoint_record(self, data_cfg: Dict[str, Any], train_set) -> Dict[str, Any]:
        """Task fields stored in each checkpoint beside the engine's (data_config, class names, ...).

        Args:
            data_cfg: the evaluation preprocessing.
            train_set: the training set (its class names).

        Returns:
            {field: value}; by default the data config alone.
        """
        return {"data_config": dict(data_cfg)}

    def after_validation(self, model: nn.Module, out_dir: str, epoch: int) -> None:
        """Hook on rank 0 after a round whose validation made it the best so far, with the weights model_best.pth
        now holds, the ones that scored it as passed to `evaluate` (e.g. example predictions, per-class results);
        default: nothing.

        Args:
            model: the weights that scored best (the EMA module when the EMA scored best).
            out_dir: the run folder.
            epoch: the round just validated.
        """

    def run_summary(self, out_dir: str, best_checkpoint: str) -> List[str]:
        """Lines the end of a run adds to its summary (the worst class, the next commands ...); default: none.

        Args:
            out_dir: the run folder.
            best_checkpoint: the path of model_best.pth.

        Returns:
            The lines.
        """
        return []

    def extra_outputs(self, out_dir: str) -> Dict[str, str]:
        """Further files the run wrote, {label: path}, listed with the checkpoint and log when it ends.

        Args:
            out_dir: the run folder.

        Returns:
            {label: path}; by default none.
        """
        return {}


TASKS: Dict[str, type] = {}


def register_task(cls: type) -> type:
    """Class decorator: make a Task subclass available to the engine under its `name`, with its settings.

    Args:
        cls: the Task subclass.

    Returns:
        `cls`, registered.

    Raises:
        ValueError: it has no name, no `TaskSettings` whose config is a TrainConfig subclass, a config whose
            task key does not default to its name, or a best_metric that is not one of its metrics.
    """
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no task name")
    settings = getattr(cls, "settings", None)
    if not isinstance(settings, TaskSettings) or not issubclass(settings.config, TrainConfig):
        raise ValueError(f"{cls.__name__} declares no TaskSettings whose config is a TrainConfig subclass")
    if config_fields(settings.config)["task"].default != cls.name:
        raise ValueError(f"{settings.config.__name__}'s task key must default to {cls.name!r}")
    if settings.best_metric not in settings.metrics:
        raise ValueError(f"{cls.__name__}: best_metric {settings.best_metric!r} is not one of its metrics")
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> type:
    """The Task class registered under name; an unknown task is a ValueError naming the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS) or 'none registered'}")
    return TASKS[name]
