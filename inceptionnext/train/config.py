"""Training configuration: one flat dataclass of known keys, filled from defaults, a YAML file and the command line.

Flat on purpose: every key can be overridden as ``--key value`` (or ``--set key=value``) without a path syntax,
and a misspelled key is an error that names it instead of a silently ignored setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import yaml

from ..data.images import INTERPOLATIONS as IMAGE_INTERPOLATIONS
from ..models.model_api import MAX_IMG_SIZE
from ..utils.files import write_atomically
from ..utils.text import describe_value, excerpt
from .checkpoint import read_checkpoint_config
from .task import TASKS


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
    ends, or a tuple of choices). Adding a key to TrainConfig is one line of this; a key that only one task
    reads is listed under that task in TASK_KEYS."""
    allowed = (
        Allowed(choices=tuple(allowed))
        if isinstance(allowed, (tuple, list))
        else (Allowed(interval=allowed) if allowed else None)
    )
    if allowed is not None and allowed.interval:
        allowed.bounds()  # a typo in an interval fails at import, not at a user's run
    return field(default=default, metadata={"help": help, "allowed": allowed})


INTERPOLATIONS = IMAGE_INTERPOLATIONS + ("random",)  # training may also draw one at random per image (timm)
MANY = "[0, 1000000]"


@dataclass
class TrainConfig:
    task: str = key(
        "classification",
        "what is trained: its data, model builder, loss and metrics; any task "
        "registered with the engine (inceptionnext.tasks: classification, segmentation, detection)",
    )

    # --- model: built by name through timm; the engine never looks inside it
    model: str = key("inceptionnext_a", "model name, any timm name (`inceptionnext list` shows this library's)")
    pretrained: bool = key(False, "load the model's default pretrained weights through timm")
    weights: Optional[str] = key(None, "or a local weight file to start from (any format the model library loads)")
    num_classes: Optional[int] = key(None, "classes; null: the dataset's class count", "[1, 1000000]")
    drop_path: float = key(0.0, "stochastic depth rate", "[0, 1)")
    drop: float = key(0.0, "dropout before the classifier", "[0, 1)")
    sync_bn: bool = key(False, "convert BatchNorm to SyncBatchNorm under DDP (CUDA only)")

    # --- data
    dataset: str = key(
        "folder",
        "classification: folder (an ImageFolder with train/ and val/ under data_dir) or "
        "digits (built in); segmentation: ade20k, masks (images/ + masks/ folders) or digit_scenes; "
        "detection: coco (images + one annotations JSON per split) or digits (the generated digit scenes)",
        ("folder", "digits", "ade20k", "masks", "digit_scenes", "coco"),
    )
    data_dir: Optional[str] = key(None, "the ImageFolder root (with the train_split and val_split folders)")
    train_split: str = key("train", "training folder under data_dir")
    val_split: str = key("val", "validation folder under data_dir")
    bad_images: str = key(
        "fail", "unreadable images: fail (an error naming the file) or skip (and count them)", ("fail", "skip")
    )
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
    train_interpolation: str = key(
        "random", "RandomResizedCrop's resize in training (timm's --train-interpolation)", INTERPOLATIONS
    )
    mean: Optional[Tuple[float, ...]] = key(None, "normalization mean per channel; null: the model's own", "[-10, 10]")
    std: Optional[Tuple[float, ...]] = key(None, "normalization std per channel; null: the model's own", "(0, 10]")

    # --- augmentation (timm)
    scale: Tuple[float, float] = key((0.08, 1.0), "RandomResizedCrop area range", "(0, 1]")
    ratio: Tuple[float, float] = key((3 / 4, 4 / 3), "RandomResizedCrop aspect ratio range", "(0, 100]")
    hflip: float = key(0.5, "horizontal flip probability", "[0, 1]")
    color_jitter: float = key(0.4, "color jitter strength (ignored when aa is set)", "[0, 10]")
    aa: Optional[str] = key(None, "timm auto-augment string, e.g. rand-m9-mstd0.5-inc1; null: none")
    reprob: float = key(0.0, "random erasing probability", "[0, 1]")
    remode: str = key("pixel", "random erasing fill", ("const", "rand", "pixel"))
    recount: int = key(1, "random erasing count", "[1, 100]")
    mixup: float = key(0.0, "mixup alpha; 0: off", "[0, 100]")
    cutmix: float = key(0.0, "cutmix alpha; 0: off", "[0, 100]")
    mixup_prob: float = key(1.0, "probability of mixup or cutmix per batch", "[0, 1]")
    mixup_switch_prob: float = key(0.5, "probability of cutmix instead of mixup when both are on", "[0, 1]")
    mixup_mode: str = key("batch", "how mixup parameters are drawn", ("batch", "pair", "elem"))
    smoothing: float = key(0.1, "label smoothing", "[0, 1)")

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

    # --- segmentation (task: segmentation); hflip above applies too
    crop_size: int = key(512, "training crop (padded with label 255 where the image is smaller)", "[8, 8192]")
    base_size: Optional[Tuple[int, ...]] = key(
        None, "(long, short) keep-ratio scale of train ratios and test resize", "[1, 16384]"
    )
    seg_scale: Optional[Tuple[float, float]] = key(
        (0.5, 2.0), "random rescale ratio range; null: no rescale", "(0, 100]"
    )
    cat_max_ratio: float = key(0.75, "redraw crops where one class covers more than this share", "(0, 1]")
    photometric: float = key(
        0.0,
        "probability of SSD-style photometric distortion (brightness, contrast, "
        "saturation, hue); segmentation applies it whenever > 0",
        "[0, 1]",
    )
    reduce_zero_label: bool = key(False, "label 0 -> 255 (ignored), others minus one (ADE20K)")
    aux_weight: float = key(0.4, "loss weight of the auxiliary FCN head (UperNet); 0 builds none", "[0, 100]")
    head_channels: Optional[int] = key(
        None, "decode head width; null: the paper's (UperNet 512, FPN 256)", "[1, 65536]"
    )
    test_mode: str = key("whole", "whole, or slide (crop_size windows every test_stride pixels)", ("whole", "slide"))
    test_stride: Optional[int] = key(None, "null: two thirds of crop_size (341 at 512)", "[1, 8192]")
    test_scales: Tuple[float, ...] = key((1.0,), "multi-scale test ratios, e.g. 0.5,0.75,1.0,1.25,1.5,1.75", "(0, 100]")
    test_flip: bool = key(False, "also average the horizontally flipped input")
    overlays: int = key(4, "val images drawn as image | ground truth | prediction after each round", "[0, 1000]")
    scene_counts: Tuple[int, int] = key((4000, 300), "digit_scenes: train and val scenes", "[1, 10000000]")
    scene_digits: Tuple[int, int] = key(
        (2, 3), "digit_scenes: fewest and most digits per scene (as many as fit)", "[1, 16]"
    )
    digit_scale: Tuple[float, float] = key(
        (3.5, 4.0), "digit_scenes: digit side, a multiple of its 8 px glyph", "[1, 64]"
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

    # --- detection (task: detection; model is a detector name such as retinanet_inceptionnext_a_fpn)
    backbone_weights: Optional[str] = key(None, "classification weights for the backbone, any format the loader reads")
    frozen_stages: int = key(-1, "-1 trains all; 0 freezes the stem; k also the first k stages", "[-1, 4]")
    frozen_bn: bool = key(False, "the backbone's BatchNorm layers become FrozenBatchNorm2d")
    fpn_channels: int = key(256, "FPN output channels", "[1, 4096]")
    anchor_sizes: Optional[Tuple[int, ...]] = key(
        None, "base anchor size of each of the 5 levels; null: the detector's", "[1, 100000]"
    )
    min_size: Tuple[int, ...] = key(
        (800,),
        "the detector resizes the shorter side to this (one of them per image in training: multi-scale)",
        "[8, 16384]",
    )
    max_size: int = key(1333, "... and the longer side to at most max_size", "[8, 16384]")
    zoom_out: float = key(0.0, "probability of SSD's zoom-out (image on a canvas up to 2x larger)", "[0, 1]")
    iou_crop: bool = key(False, "SSD's IoU-keeping random crop")
    aspect_grouping: bool = key(True, "batches of all-landscape or all-portrait images")
    score_thresh: float = key(0.05, "detections below this score are dropped before evaluation", "[0, 1]")
    detector_kwargs: Dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "more torchvision detector arguments, e.g. {box_batch_size_per_image: 128}", "allowed": None},
    )
    demo_images: int = key(1000, "dataset digits: train canvases of the generated detection demo", "[1, 10000000]")
    vis_images: int = key(8, "val images drawn with their detections after each validation (0: none)", "[0, 1000]")

    # --- fine-tuning on one's own images: early stopping, class balance, whole-image crops, experiment tracking
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
    class_balance: str = key(
        "none",
        "unequal class sizes: sampler (draw every class equally often) or loss (weight each class's loss by "
        "n_images / (n_classes x its images)); none: as the data comes",
        ("none", "sampler", "loss"),
    )
    crop_mode: Optional[str] = key(
        None,
        "how an image becomes a square input, in training and evaluation (recorded for predict, validate and "
        "export): center (resize the shorter side, cut a centre square: parts of wide or tall images are lost), "
        "squash (resize the whole image to a square) or border (resize the longer side, pad to a square); "
        "null: the model's own (center)",
        ("center", "squash", "border"),
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
    plot: bool = key(True, "draw curves.png when the run ends")


FIELDS: Dict[str, dataclasses.Field] = {f.name: f for f in fields(TrainConfig)}
ALLOWED: Dict[str, Optional[Allowed]] = {name: f.metadata.get("allowed") for name, f in FIELDS.items()}

# Keys that one task reads and the others ignore; every other key is for every task. `train --help` groups the
# keys this way, and a config that sets another task's key is refused, naming the task the key belongs to.
TASK_KEYS: Dict[str, Tuple[str, ...]] = {
    "classification": (
        "drop",
        "scale",
        "ratio",
        "color_jitter",
        "aa",
        "reprob",
        "remode",
        "recount",
        "mixup",
        "cutmix",
        "mixup_prob",
        "mixup_switch_prob",
        "mixup_mode",
        "smoothing",
        "bad_images",
        "train_interpolation",
        "class_balance",
        "crop_mode",
    ),
    "segmentation": (
        "crop_size",
        "base_size",
        "seg_scale",
        "cat_max_ratio",
        "reduce_zero_label",
        "aux_weight",
        "head_channels",
        "test_mode",
        "test_stride",
        "test_scales",
        "test_flip",
        "overlays",
        "scene_counts",
        "scene_digits",
        "digit_scale",
    ),
    "detection": (
        "backbone_weights",
        "frozen_stages",
        "frozen_bn",
        "fpn_channels",
        "anchor_sizes",
        "min_size",
        "max_size",
        "zoom_out",
        "iou_crop",
        "aspect_grouping",
        "score_thresh",
        "detector_kwargs",
        "demo_images",
        "vis_images",
    ),
}
KEY_TASK: Dict[str, str] = {k: task for task, keys in TASK_KEYS.items() for k in keys}


def _default(name: str) -> Any:
    f = FIELDS[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _changed(cfg: "TrainConfig", given: Sequence[str], names) -> Iterator[Tuple[str, str]]:
    """(key as written, field name) of each key in `given` among `names` that is set to a value other than its
    default: a whole dumped config (a run's config.yaml) holds every key, most of them at their defaults."""
    for k in given:
        name = k.replace("-", "_")
        if name in names and getattr(cfg, name) != _default(name):
            yield k, name


def check_task_keys(cfg: "TrainConfig", given: Sequence[str], where: str) -> None:
    """A ConfigError when `where` sets a key of a task other than the run's to a value other than its default (a
    segmentation key in a classification run would be silently ignored)."""
    for k, name in _changed(cfg, given, KEY_TASK):
        owner = KEY_TASK[name]
        if owner != cfg.task:
            raise ConfigError(
                f"config key '{k}' in {where} is a {owner} key; this run's task is {cfg.task} "
                f"(set task: {owner}, or remove the key)"
            )


# keys that only one kind of run reads: epoch runs count epochs, iteration runs (iters) count updates
EPOCH_RUN_KEYS = ("epochs", "warmup_epochs", "cooldown_epochs", "min_updates")
ITERATION_RUN_KEYS = ("eval_interval",)


def check_schedule_keys(cfg: "TrainConfig", given: Sequence[str], where: str) -> None:
    """A ConfigError when `where` sets a key the run's kind of schedule does not read to a value other than its
    default (`epochs` in an iteration run, `eval_interval` in an epoch run would be silently ignored)."""
    for k, name in _changed(cfg, given, EPOCH_RUN_KEYS + ITERATION_RUN_KEYS):
        if cfg.iters is not None and name in EPOCH_RUN_KEYS:
            instead = " (warm-up: warmup_iters)" if name == "warmup_epochs" else ""
            raise ConfigError(
                f"config key '{k}' in {where} counts epochs; this run counts updates (iters: {cfg.iters}): "
                f"remove the key{instead}, or unset iters for an epoch run"
            )
        if cfg.iters is None and name in ITERATION_RUN_KEYS:
            raise ConfigError(
                f"config key '{k}' in {where} is read by iteration runs only; this run counts epochs "
                "(set iters for an iteration run, or remove the key)"
            )


def check_task(cfg: "TrainConfig") -> None:
    """The run's task must be registered with the engine (`train.task.register_task`)."""
    if TASKS and cfg.task not in TASKS:
        raise ConfigError(f"config key 'task': {describe_value(cfg.task)} is not a task; known: {', '.join(TASKS)}")


CHOICES = {name: a.choices for name, a in ALLOWED.items() if a is not None and a.choices is not None}
SHORT_FLAGS = {"batch_size": ["-b"]}  # timm's train.py spelling
MAX_CONFIG_BYTES = 1 << 20  # a config is a page of keys; anything larger is not one
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


def _types() -> Dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


# Names other tools (timm's train.py, PyTorch Lightning, Hugging Face, mmcv, Keras) give to keys this config has:
# an unknown key that is one of these is answered with the key it means, ahead of the spelling matches.
ALIASES = {
    "lr": ("learning_rate", "base_lr", "lr_base", "init_lr", "max_lr", "learningrate"),
    "batch_size": ("batch", "bs", "batchsize", "train_batch_size", "per_device_train_batch_size", "samples_per_gpu"),
    "epochs": ("num_epochs", "n_epochs", "max_epochs", "epoch", "total_epochs", "num_train_epochs"),
    "iters": ("max_iters", "num_iters", "total_iters", "max_steps", "steps", "iterations"),
    "weight_decay": ("wd", "decay", "l2", "weightdecay"),
    "opt": ("optimizer", "optim", "optimiser", "solver"),
    "sched": ("scheduler", "lr_scheduler", "lr_schedule", "schedule", "lr_policy", "policy"),
    "warmup_epochs": ("warmup", "warm_up", "warmup_epoch", "num_warmup_epochs"),
    "warmup_iters": ("warmup_steps", "num_warmup_steps", "warmup_iter"),
    "workers": ("num_workers", "n_workers", "dataloader_num_workers", "workers_per_gpu", "j"),
    "img_size": ("image_size", "input_size", "imgsz", "resolution", "size", "crop_size_train"),
    "model": ("arch", "architecture", "model_name", "network", "net"),
    "drop_path": ("drop_path_rate", "stochastic_depth", "droppath"),
    "drop": ("dropout", "drop_rate", "dropout_rate"),
    "smoothing": ("label_smoothing", "label_smooth", "ls"),
    "aa": ("auto_augment", "autoaugment", "randaugment", "rand_augment"),
    "mixup": ("mixup_alpha",),
    "cutmix": ("cutmix_alpha",),
    "data_dir": ("data", "data_path", "data_root", "dataset_dir", "dataset_path", "root", "train_dir"),
    "weights": ("pretrained_weights", "init_weights", "checkpoint", "load_from", "initial_checkpoint", "finetune"),
    "clip_grad": ("grad_clip", "clip_grad_norm", "max_grad_norm", "gradient_clip_val"),
    "grad_accum": (
        "gradient_accumulation_steps",
        "accumulation_steps",
        "accum_iter",
        "accumulate_grad_batches",
        "update_freq",
    ),
    "amp": ("precision", "mixed_precision", "fp16", "bf16", "half"),
    "output": ("output_dir", "out_dir", "save_dir", "work_dir", "log_dir", "logdir"),
    "experiment": ("exp_name", "run_name", "name", "experiment_name"),
    "seed": ("random_seed", "manual_seed"),
    "ema": ("model_ema", "use_ema"),
    "ema_decay": ("model_ema_decay",),
    "min_lr": ("lr_min", "eta_min", "final_lr", "end_lr"),
    "eval_interval": ("eval_every", "val_interval", "eval_steps", "validation_interval"),
    "num_classes": ("classes", "n_classes", "nb_classes", "num_labels"),
    "momentum": ("beta1",),
    "track": ("log", "logger", "loggers", "report_to", "tracking", "trackers", "log_with"),
}
KEY_ALIASES = {alias: name for name, aliases in ALIASES.items() for alias in aliases}


def suggest_keys(key: str, n: int = 3) -> List[str]:
    """Config keys an unknown `key` may mean: the key its usual alias names (learning_rate -> lr), then the
    closest spellings."""
    norm = key.strip().lower().replace("-", "_")
    found = [KEY_ALIASES[norm]] if KEY_ALIASES.get(norm) in FIELDS else []
    for close in difflib.get_close_matches(norm, FIELDS, n=n) if len(key) <= 100 else []:
        if close not in found:
            found.append(close)
    return found[:n]


def unknown_key_error(key: str, where: str) -> ConfigError:
    close = suggest_keys(key)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run with --help for the list of keys"
    return ConfigError(f"unknown config key '{excerpt(key, 60)}' in {where}{hint}")


def check_allowed(key: str, value: Any, where: str) -> None:
    """A ConfigError naming the key, its value and what it accepts, unless `value` (each value of a tuple) is
    allowed; null is allowed wherever the key's default is null."""
    allowed = ALLOWED.get(key)
    if value is None or allowed is None:
        return
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, float) and not math.isfinite(v) or not allowed.admits(v):
            shown = describe_value(v) + (f" (in {excerpt(value, 60)})" if isinstance(value, tuple) else "")
            raise ConfigError(
                f"config key '{key}' in {where}: {shown} is not allowed; it must be {allowed}"
                + (" for each value" if isinstance(value, tuple) else "")
            )


def apply_overrides(cfg: TrainConfig, values: Dict[str, Any], where: str) -> TrainConfig:
    """Return a copy of cfg with values set, each checked against the known keys and coerced to its type."""
    types = _types()
    updates = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys in {where} are names; found {describe_value(key)} as a key")
        key = key.replace("-", "_")
        if key not in FIELDS:
            raise unknown_key_error(key, where)
        if key == "grad_accum" and str(value).strip().lower() == "auto":
            value = None
        value = _coerce(key, value, types[key])
        check_allowed(key, value, where)
        updates[key] = value
    return dataclasses.replace(cfg, **updates)


CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def _in_checkout(path: str) -> str:
    """A relative configs/... path that is not found from here, found in the checkout this package runs from;
    else a ConfigError saying where the recipes live."""
    rel = os.path.normpath(path)
    if not os.path.isabs(rel) and rel.split(os.sep)[0] == "configs":
        candidate = os.path.join(os.path.dirname(CONFIGS_DIR), rel)
        if os.path.isfile(candidate):
            return candidate
    where = (
        f"in {CONFIGS_DIR}"
        if os.path.isdir(CONFIGS_DIR)
        else "in the configs/ folder of the inceptionnext source checkout (not part of an installed wheel)"
    )
    raise ConfigError(
        f"config file not found: {path}; the shipped recipes are {where}, e.g. "
        "configs/finetune/inceptionnext_t.yaml; pass a path to one or to your own YAML"
    )


def _yaml_error(path: str, e: Exception) -> ConfigError:
    """Where and why the YAML parser stopped, without the file's lines (PyYAML quotes them)."""
    mark = getattr(e, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or type(e).__name__
    if isinstance(e, yaml.reader.ReaderError) and isinstance(e.character, int):
        problem = f"character #x{e.character:02x} is not allowed in YAML text"
        at = f" at character {e.position + 1}"
    return ConfigError(f"config file {path} is not valid YAML{at}: {excerpt(problem, 100)}")


def load_yaml(path: str, _seen: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """A YAML config as a dict; ``_base_: other.yaml`` (relative to the file, or a list of such) is read first
    and overridden. Only YAML files are read, and errors never echo a file's lines."""
    if not os.path.isfile(path):
        path = _in_checkout(path)
    if os.path.abspath(path) in _seen:
        raise ConfigError(f"config file {path} includes itself through _base_")
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is {os.path.getsize(path) / 2**20:.1f} MiB; a config is at most "
            f"{MAX_CONFIG_BYTES // 2**20} MiB of YAML"
        )
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (a binary file?)") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise _yaml_error(path, e) from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of too many digits, nesting too deep
        raise ConfigError(f"config file {path}: cannot read a value ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value, got {type(data).__name__}")
    base = data.pop("_base_", None)
    if base is not None:
        bases = base if isinstance(base, list) else [base]
        merged: Dict[str, Any] = {}
        for name in bases:
            if not isinstance(name, str) or not name.lower().endswith((".yaml", ".yml")):
                raise ConfigError(
                    f"config file {path}: _base_ names YAML files (.yaml or .yml) to include, not "
                    f"{describe_value(name)}"
                )
            merged.update(load_yaml(os.path.join(os.path.dirname(path), name), _seen + (os.path.abspath(path),)))
        merged.update(data)
        data = merged
    return data


def config_to_dict(cfg: TrainConfig) -> Dict[str, Any]:
    """Plain dict (tuples as lists) for YAML and checkpoints."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg: TrainConfig, path: str, extra_comment: str = "") -> None:
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    if extra_comment:
        text = "".join(f"# {line}\n" for line in extra_comment.splitlines()) + text
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))


TRAIN_DESCRIPTION = (
    "Train or fine-tune a model from a YAML config: an image classifier, a segmentation or a "
    "detection model (the task key). Any config key can be set as --key value."
)


def build_parser(description: str = TRAIN_DESCRIPTION, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """One --key option per config field (dashes or underscores), plus --config and --set key=value."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )  # --warmup-epoch is an unknown key, not --warmup-epochs
    parser.add_argument("--config", "-c", help="YAML file of config keys", default=None)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key (repeatable)"
    )
    types = _types()
    groups = {None: parser.add_argument_group("keys for every task")}
    groups.update({task: parser.add_argument_group(f"{task} keys (task: {task})") for task in TASK_KEYS})
    for name, f in FIELDS.items():
        flags = sorted({f"--{name}", f"--{name.replace('_', '-')}"}) + SHORT_FLAGS.get(name, [])
        default = f.default if f.default is not dataclasses.MISSING else None
        allowed = f.metadata.get("allowed")
        text = f.metadata.get("help", "") + (f"; {allowed}" if allowed else "")
        switch = dict(nargs="?", const="true") if types[name] is bool else {}  # --pretrained alone means true
        groups[KEY_TASK.get(name)].add_argument(
            *flags, dest=name, metavar="V", help=f"{text} (default: {default})".replace("%", "%%"), **switch
        )
    return parser


def parse_config(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> TrainConfig:
    """Defaults < checkpoint's config (when resuming without --config) < YAML file < --key value < --set."""
    parser = build_parser(prog=prog)
    args, rest = parser.parse_known_args(argv)
    for token in rest:
        if token.startswith("--"):
            raise unknown_key_error(token[2:].split("=")[0].replace("-", "_"), "the command line")
        raise ConfigError(f"unexpected command-line argument {token!r}; options look like --key value")
    cli = {k: v for k, v in vars(args).items() if k not in ("config", "set")}
    sets = {}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        sets[k.strip()] = v
    cfg = TrainConfig()
    resume = sets.get("resume", cli.get("resume"))
    if args.config is None and resume not in (None, "auto"):
        cfg = apply_overrides(cfg, read_checkpoint_config(resume), f"checkpoint {resume}")
    given = []
    if args.config is not None:
        values = load_yaml(args.config)
        cfg = apply_overrides(cfg, values, args.config)
        given.append((list(values), args.config))
    cfg = apply_overrides(cfg, cli, "the command line")
    cfg = apply_overrides(cfg, sets, "--set")
    check_task(cfg)
    for keys, where in given + [(list(cli), "the command line"), (list(sets), "--set")]:
        check_task_keys(cfg, keys, where)
        check_schedule_keys(cfg, keys, where)
    return cfg


def plan_batch(cfg: TrainConfig, world_size: int) -> Tuple[int, float, str]:
    """(grad_accum, lr, what was done) for this many processes.

    The recipes hold lr at global batch lr_batch, as the official runs do (fewer GPUs: more accumulation). With
    grad_accum auto (None), accumulation is chosen to reach lr_batch when batch_size x processes divides it;
    otherwise, or with grad_accum set, the lr scales linearly to the global batch that results.
    """
    per_step = cfg.batch_size * world_size
    accum = cfg.grad_accum
    if cfg.lr_batch is None:
        accum = accum or 1
        return accum, cfg.lr, f"global batch {per_step * accum}; lr {cfg.lr:.6g} as given (lr_batch: none)"
    if accum is None and cfg.lr_batch % per_step == 0:
        accum = cfg.lr_batch // per_step
        return (
            accum,
            cfg.lr,
            (
                f"global batch {cfg.lr_batch} held as the recipe's: {cfg.batch_size} x {world_size} "
                f"processes x {accum} accumulation; lr {cfg.lr:.6g} as the recipe"
            ),
        )
    why = (
        "grad_accum set"
        if accum is not None
        else f"{cfg.lr_batch} is not a multiple of batch_size x processes = {per_step}"
    )
    accum = accum or 1
    lr = cfg.lr * per_step * accum / cfg.lr_batch
    return (
        accum,
        lr,
        (
            f"global batch {per_step * accum} ({why}): lr scaled linearly from {cfg.lr:.6g} at "
            f"{cfg.lr_batch} to {lr:.6g}"
        ),
    )


def effective_lr(cfg: TrainConfig, world_size: int) -> float:
    """The lr this many processes train with (`plan_batch`)."""
    return plan_batch(cfg, world_size)[1]
