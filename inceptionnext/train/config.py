"""The settings schema: the keys every task reads (`TrainConfig`), how a key is declared, and how a value from YAML
or the command line becomes the key's type.

Flat on purpose: every key can be overridden as ``--key value`` (or ``--set key=value``) without a path syntax,
and a misspelled key is an error that names it instead of a silently ignored setting. A task's own keys live in
its folder (``tasks/<task>/config.py``: a subclass of TrainConfig); `train.overrides` sets keys on a config,
`train.config_files` reads and writes YAML, `train.command_line` builds ``inceptionnext train``'s options.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional, Tuple

import yaml

from ..data.images import INTERPOLATIONS as IMAGE_INTERPOLATIONS
from ..models.model_api import MAX_IMG_SIZE
from ..utils.text import describe_value, excerpt


class ConfigError(ValueError):
    """A config file or override that cannot be used (unknown key, wrong type, bad value)."""


@dataclass(frozen=True)
class Allowed:
    """What a key accepts: an interval such as "[0, 1)" (for a tuple, each of its values) or a list of choices."""

    interval: Optional[str] = None
    choices: Optional[Tuple[str, ...]] = None

    def bounds(self) -> Tuple[float, float, bool, bool]:
        m = re.fullmatch(r"\s*([\[(])\s*([^,]+?)\s*,\s*([^,]+?)\s*([\])])\s*", self.interval or "")
        if not m:
            raise ValueError(f"bad interval {self.interval!r}")
        return float(m.group(2)), float(m.group(3)), m.group(1) == "(", m.group(4) == ")"

    def admits(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.interval is None:
            return True
        lo, hi, lo_open, hi_open = self.bounds()
        return (
            math.isfinite(value)
            and (value > lo if lo_open else value >= lo)
            and (value < hi if hi_open else value <= hi)
        )

    def __str__(self) -> str:
        return ("one of " + ", ".join(self.choices)) if self.choices is not None else f"in {self.interval}"


def key(default: Any, help: str, allowed: Any = None) -> Any:
    """One config key: its default, what it does, and what it accepts (an interval "[lo, hi]" with ( ) for open
    ends, or a tuple of choices). Adding a key is one line of this: in TrainConfig when every task reads it, in
    the task's config class (``tasks/<task>/config.py``) when only that task does.

    Args:
        default: the key's default value.
        help: what it does, for `train --help` and the config dumps.
        allowed: an interval such as "[0, 1)", a tuple or list of choices, or None for any value of its type.

    Returns:
        The dataclass field.

    Raises:
        ValueError: `allowed` is an interval that cannot be read.
    """
    allowed = (
        Allowed(choices=tuple(allowed))
        if isinstance(allowed, (tuple, list))
        else (Allowed(interval=allowed) if allowed else None)
    )
    if allowed is not None and allowed.interval:
        allowed.bounds()  # a typo in an interval fails at import, not at a user's run
    return field(default=default, metadata={"help": help, "allowed": allowed})


INTERPOLATIONS = IMAGE_INTERPOLATIONS + ("random",)  # training may also draw one at random per image (timm)


@dataclass
class TrainConfig:
    """The keys every task reads. A run's config is an instance of its task's subclass (`config_class`), which
    adds that task's own keys and its datasets."""

    task: str = key(
        "classification",
        "what is trained: its data, model builder, loss and metrics; any task registered with the engine "
        "(the library's: classification, segmentation, detection; task_module imports one of your own)",
    )
    task_module: Optional[str] = key(
        None, "a Python module to import before the config is read, e.g. one that registers a task of your own"
    )

    # --- model: built by name through timm; the engine never looks inside it
    model: str = key("inceptionnext_a", "model name, any timm name (`inceptionnext list` shows this library's)")
    pretrained: bool = key(False, "load the model's default pretrained weights through timm")
    weights: Optional[str] = key(None, "or a local weight file to start from (any format the model library loads)")
    num_classes: Optional[int] = key(None, "classes; null: the dataset's class count", "[1, 1000000]")
    drop_path: float = key(0.0, "stochastic depth rate", "[0, 1)")
    sync_bn: bool = key(False, "convert BatchNorm to SyncBatchNorm under DDP (CUDA only)")

    # --- data
    dataset: str = key("folder", "the data the task reads: one of its datasets (each task's keys below list them)")
    data_dir: Optional[str] = key(None, "the ImageFolder root (with the train_split and val_split folders)")
    train_split: str = key("train", "training folder under data_dir")
    val_split: str = key("val", "validation folder under data_dir")
    workers: Optional[int] = key(
        None,
        "data loading processes per training process; null: the cores each process "
        "gets (at most 8); more than the machine's cores is capped to them",
        "[0, 256]",
    )
    pin_memory: bool = key(True, "pin host memory for faster copies to the GPU")

    # --- preprocessing; None takes the model's pretrained config
    img_size: Optional[int] = key(
        None,
        "input size in pixels, at least the model's total stride (checked against "
        "the model, as predict/validate/export do); null: the model's own (32 for digits)",
        f"[0, {MAX_IMG_SIZE}]",  # the top bounds memory; too small (0 too) is checked against the model
    )
    crop_pct: Optional[float] = key(None, "evaluation center-crop fraction; null: the model's own", "(0, 1]")
    interpolation: Optional[str] = key(
        None, "evaluation resize interpolation; null: the model's own", IMAGE_INTERPOLATIONS
    )
    mean: Optional[Tuple[float, ...]] = key(None, "normalization mean per channel; null: the model's own", "[-10, 10]")
    std: Optional[Tuple[float, ...]] = key(None, "normalization std per channel; null: the model's own", "(0, 10]")

    # --- augmentation every task's data reads
    hflip: float = key(0.5, "horizontal flip probability", "[0, 1]")
    photometric: float = key(
        0.0,
        "probability of SSD-style photometric distortion (brightness, contrast, saturation, hue); applied whenever > 0",
        "[0, 1]",
    )

    # --- optimisation
    batch_size: int = key(128, "images per process per step", "[1, 65536]")
    grad_accum: Optional[int] = key(
        None, "micro-batches per optimizer step; null (auto): hold lr_batch, see plan_batch", "[1, 65536]"
    )
    opt: str = key("adamw", "optimizer, any name timm's create_optimizer_v2 knows")
    lr: float = key(4e-3, "learning rate at global batch lr_batch ...", "(0, 10]")
    lr_batch: Optional[int] = key(
        None, "... scaled linearly to the actual global batch; null: lr is absolute", "[1, 16777216]"
    )
    weight_decay: float = key(0.05, "weight decay", "[0, 10]")
    momentum: float = key(0.9, "momentum (SGD-type optimizers)", "[0, 1)")
    layer_decay: Optional[float] = key(None, "layer-wise lr decay (fine-tuning); null: off", "(0, 1]")
    clip_grad: Optional[float] = key(None, "gradient clipping threshold; null: off", "(0, 1000000]")
    clip_mode: str = key("norm", "gradient clipping mode", ("norm", "value", "agc"))

    # --- schedule (timm create_scheduler_v2), stepped on every optimizer update
    sched: str = key(
        "cosine", "lr schedule", ("cosine", "tanh", "step", "multistep", "poly", "constant", "wsd", "rsqrt", "none")
    )
    epochs: int = key(300, "training epochs", "[1, 100000]")
    warmup_epochs: int = key(20, "linear warm-up epochs", "[0, 100000]")
    warmup_lr: float = key(1e-6, "lr at the start of warm-up", "[0, 10]")
    min_lr: float = key(1e-6, "lr at the end of the schedule", "[0, 10]")
    cooldown_epochs: int = key(0, "epochs at min_lr after the schedule", "[0, 100000]")
    decay_rate: float = key(
        0.1, "timm's decay_rate: the power of the poly schedule, the step schedules' factor", "(0, 100]"
    )
    iters: Optional[int] = key(
        None, "iteration-based run: this many optimizer updates in all (epochs unused)", "[1, 100000000]"
    )
    eval_interval: int = key(1000, "... validated and checkpointed every eval_interval updates", "[1, 100000000]")
    warmup_iters: int = key(
        0, "linear warm-up updates: of an iteration run, or of an epoch run instead of warmup_epochs", "[0, 100000000]"
    )

    # --- EMA (timm ModelEmaV3)
    ema: bool = key(False, "keep an exponential moving average of the weights")
    ema_decay: float = key(0.9999, "EMA decay per optimizer update (1 would never learn)", "[0, 1)")
    ema_warmup: bool = key(False, "timm's EMA decay warm-up")
    best_on: str = key(
        "auto",
        "pick model_best.pth by the model's or the EMA's top-1; auto: the EMA's when on",
        ("auto", "model", "ema"),
    )

    # --- speed
    amp: str = key("none", "mixed precision (fp16 uses a grad scaler)", ("none", "bf16", "fp16"))
    channels_last: bool = key(False, "channels-last memory format")
    compile: bool = key(False, "torch.compile the model")
    device: str = key("auto", "device; auto: CUDA when available", ("auto", "cpu", "cuda"))
    dist_timeout: float = key(
        600.0,
        "seconds a distributed collective waits for the other ranks before the run "
        "stops with an error naming the rank and collective",
        "[1, 86400]",
    )

    # --- fine-tuning on one's own images: early stopping, enough updates, experiment tracking
    patience: Optional[int] = key(
        None,
        "early stopping: end the run after this many validations without a new best of the metric that picks "
        "model_best.pth; null: run the whole schedule",
        "[1, 100000000]",
    )
    min_updates: Optional[int] = key(
        None,
        "epoch runs: at least this many optimizer updates; epochs is raised to reach them (a small set gets "
        "enough updates whatever its size); null: epochs as given",
        "[1, 100000000]",
    )
    track: Optional[Tuple[str, ...]] = key(
        None,
        "experiment tracking: any of tensorboard (<run>/tensorboard), mlflow (mlflow_uri), wandb (offline, "
        "<run>/wandb); null: none. Only the main process logs; a resumed run continues its tracked run",
        ("tensorboard", "mlflow", "wandb"),
    )
    mlflow_uri: Optional[str] = key(
        None,
        "MLflow tracking URI: a sqlite:///path.db or file: store, or a tracking server's http(s) URL; "
        "null: sqlite:///<output>/mlflow.db",
    )

    # --- run
    seed: int = key(42, "random seed", "[0, 9223372036854775807]")
    output: str = key("output", "folder that holds the run folders")
    experiment: Optional[str] = key(
        None, "run folder name under output ({model} becomes the model name); null: <model>-<timestamp>"
    )
    resume: Optional[str] = key(None, "a checkpoint path, or auto for <output>/<experiment>/last.pth")
    stop_after_epoch: Optional[int] = key(
        None, "end the process after this epoch (scheduled interruption)", "[1, 100000]"
    )
    progress: bool = key(True, "progress bars on a terminal")
    plot: bool = key(
        True,
        "draw the run's pictures: curves.png when it ends and the task's pictures of each best epoch "
        "(val_predictions.png, confusion_matrix.png, mistakes.png; val_overlays.png; detections.png); false: "
        "numbers only (log.csv, per_class.json), no matplotlib work",
    )


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null", "~", ""}


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise a ConfigError naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(key, value, inner)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError("expected true or false")
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list, tuple)):
                raise ValueError("expected a string")
            return str(value)
        if origin is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ValueError("expected a mapping such as {key: value}")
            return dict(value)
        if origin in (tuple, Tuple):
            if isinstance(value, str):
                value = [
                    v
                    for v in value.replace("(", "").replace(")", "").replace("[", "").replace("]", "").split(",")
                    if v.strip()
                ]
            if not isinstance(value, (list, tuple)):
                raise ValueError("expected a list")
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(key, v, args[0]) for v in value)
            if len(value) != len(args):
                raise ValueError(f"expected {len(args)} values")
            return tuple(_coerce(key, v, a) for v, a in zip(value, args))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config key '{key}': cannot use {describe_value(value)} ({excerpt(e, 100)})") from None
    raise ConfigError(f"config key '{key}': unsupported type {tp}")


def task_key(name: str) -> Any:
    """A task config's `task` key: the shared key, defaulting to the task's own name.

    Args:
        name: the task's name.

    Returns:
        The dataclass field.
    """
    return key(name, TrainConfig.__dataclass_fields__["task"].metadata["help"])


def dataset_key(datasets: Dict[str, str]) -> Any:
    """A task's `dataset` key: its datasets {name: what it is}, the first one the default.

    Args:
        datasets: {name: what it is}, in the order `--help` lists them.

    Returns:
        The dataclass field, its choices the names.
    """
    return key(next(iter(datasets)), "; ".join(f"{k}: {v}" for k, v in datasets.items()), tuple(datasets))


def config_fields(cls: type = TrainConfig) -> Dict[str, dataclasses.Field]:
    """The keys of a config class, {name: field}, in declaration order."""
    return dict(_fields_of(cls))


@functools.lru_cache(maxsize=None)
def _fields_of(cls: type) -> Dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(cls)}


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> Dict[str, Any]:
    """A config class's key types, resolved once: resolving them is most of the cost of reading a config."""
    return typing.get_type_hints(cls)


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def coerce_value(cls: type, key: str, value: Any) -> Any:
    """`value` (from YAML or the command line) as the type of `cls`'s key, or a ConfigError naming the key."""
    return _coerce(key, value, _type_hints(cls)[key])


def check_allowed(cls: type, key: str, value: Any, where: str) -> None:
    """A ConfigError naming the key, its value and what it accepts, unless `value` (each value of a tuple) is
    allowed; null is allowed wherever the key's default is null."""
    allowed = config_fields(cls)[key].metadata.get("allowed")
    if value is None or allowed is None:
        return
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, float) and not math.isfinite(v) or not allowed.admits(v):
            shown = describe_value(v) + (f" (in {excerpt(value, 60)})" if isinstance(value, tuple) else "")
            raise ConfigError(
                f"config key '{key}' in {where}: {shown} is not allowed; it must be {allowed}"
                + (" for each value" if isinstance(value, tuple) else "")
            )


def config_to_dict(cfg: TrainConfig) -> Dict[str, Any]:
    """Plain dict (tuples as lists) for YAML and checkpoints: the shared keys and the run's task's."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
