"""Training configuration: one flat dataclass of known keys, filled from defaults, a YAML file and the command line.

Flat on purpose: every key can be overridden as ``--key value`` (or ``--set key=value``) without a path syntax,
and a misspelled key is an error that names it instead of a silently ignored setting.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot be used (unknown key, wrong type, bad value)."""


@dataclass
class TrainConfig:
    task: str = "classification"        # what is trained: its data, model builder, loss and metrics (train/tasks)

    # --- model: built by name through timm; the engine never looks inside it
    model: str = "inceptionnext_a"
    pretrained: bool = False            # load the model's default pretrained weights through timm
    weights: Optional[str] = None       # or a local weight file (any format the model library loads)
    num_classes: Optional[int] = None   # None: the dataset's class count
    drop_path: float = 0.0              # stochastic depth rate
    drop: float = 0.0                   # dropout before the classifier
    sync_bn: bool = False               # convert BatchNorm to SyncBatchNorm under DDP (CUDA only)

    # --- data
    dataset: str = "folder"             # classification: "folder" (ImageFolder train/ val/) or "digits" (built in);
                                        # segmentation: "ade20k", "masks" (images/ + masks/ folders), "digit_scenes"
    data_dir: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    bad_images: str = "fail"            # unreadable images: "fail" (error naming the file) or "skip" (count them)
    workers: int = 4
    pin_memory: bool = True

    # --- preprocessing; None takes the model's pretrained config
    img_size: Optional[int] = None
    crop_pct: Optional[float] = None
    interpolation: Optional[str] = None  # evaluation resize; None: the model's (bicubic for these models)
    train_interpolation: str = "random"  # RandomResizedCrop's resize in training (timm's --train-interpolation)
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None

    # --- augmentation (timm)
    scale: Tuple[float, float] = (0.08, 1.0)    # RandomResizedCrop area range
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    color_jitter: float = 0.4
    aa: Optional[str] = None            # RandAugment string, e.g. rand-m9-mstd0.5-inc1
    reprob: float = 0.0                 # random erasing probability
    remode: str = "pixel"
    recount: int = 1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    smoothing: float = 0.1

    # --- optimisation
    batch_size: int = 128               # per process
    grad_accum: Optional[int] = None    # micro-batches per optimizer step; None (auto): hold lr_batch, see plan_batch
    opt: str = "adamw"
    lr: float = 4e-3                    # learning rate at global batch lr_batch ...
    lr_batch: Optional[int] = None      # ... scaled linearly to the actual global batch; None: lr is absolute
    weight_decay: float = 0.05
    momentum: float = 0.9
    layer_decay: Optional[float] = None  # layer-wise LR decay (fine-tuning)
    clip_grad: Optional[float] = None
    clip_mode: str = "norm"

    # --- schedule (timm create_scheduler_v2), stepped on every optimizer update
    sched: str = "cosine"
    epochs: int = 300
    warmup_epochs: int = 20
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6
    cooldown_epochs: int = 0
    decay_rate: float = 0.1             # timm's decay_rate: the power of the poly schedule, the step schedules' factor
    iters: Optional[int] = None         # iteration-based run: this many optimizer updates in all (epochs is unused)
    eval_interval: int = 1000           # ... validated and checkpointed every eval_interval updates
    warmup_iters: int = 0               # ... with this many linear warm-up updates

    # --- segmentation (task: segmentation); hflip above applies too
    crop_size: int = 512                # training crop (padded with label 255 where the image is smaller)
    base_size: Optional[Tuple[int, ...]] = None  # (long, short) keep-ratio scale of train ratios and test resize
    seg_scale: Optional[Tuple[float, float]] = (0.5, 2.0)  # random rescale ratio range; None: no rescale
    cat_max_ratio: float = 0.75         # redraw crops where one class covers more than this share
    photometric: bool = True            # random brightness/contrast/saturation/hue (SSD-style distortion)
    reduce_zero_label: bool = False     # label 0 -> 255 (ignored), others minus one (ADE20K)
    aux_weight: float = 0.4             # loss weight of the auxiliary FCN head (UperNet); 0 builds none
    head_channels: Optional[int] = None  # decode head width; None: the paper's (UperNet 512, FPN 256)
    test_mode: str = "whole"            # "whole" or "slide" (crop_size windows every test_stride pixels)
    test_stride: Optional[int] = None   # None: two thirds of crop_size (341 at 512)
    test_scales: Tuple[float, ...] = (1.0,)  # multi-scale test ratios, e.g. 0.5,0.75,1.0,1.25,1.5,1.75
    test_flip: bool = False             # also average the horizontally flipped input
    overlays: int = 4                   # val images drawn as image | truth | prediction after each round
    scene_counts: Tuple[int, int] = (4000, 300)  # digit_scenes: train and val scenes

    # --- EMA (timm ModelEmaV3)
    ema: bool = False
    ema_decay: float = 0.9999
    ema_warmup: bool = False
    best_on: str = "auto"               # pick model_best.pth by the "model" or the "ema" top-1; auto: ema if on

    # --- speed
    amp: str = "none"                   # "none", "bf16" or "fp16" (fp16 uses a grad scaler)
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"                # "auto", "cpu", "cuda"

    # --- run
    seed: int = 42
    output: str = "output"
    experiment: Optional[str] = None    # run folder under output ("{model}" becomes the model name); None: <model>-<timestamp>
    resume: Optional[str] = None        # a checkpoint path, or "auto" for <run dir>/last.pth
    stop_after_epoch: Optional[int] = None  # end the process after this epoch (scheduled interruption)
    progress: bool = True
    plot: bool = True


FIELDS: Dict[str, dataclasses.Field] = {f.name: f for f in fields(TrainConfig)}
CHOICES = {
    "task": ("classification", "segmentation", "detection"),
    "dataset": ("folder", "digits", "ade20k", "masks", "digit_scenes"),
    "test_mode": ("whole", "slide"),
    "bad_images": ("fail", "skip"),
    "amp": ("none", "bf16", "fp16"),
    "best_on": ("auto", "model", "ema"),
    "device": ("auto", "cpu", "cuda"),
    "clip_mode": ("norm", "value", "agc"),
    "mixup_mode": ("batch", "pair", "elem"),
    "sched": ("cosine", "tanh", "step", "multistep", "poly", "constant", "wsd", "rsqrt", "none"),
    "train_interpolation": ("random", "bilinear", "bicubic", "nearest", "box", "hamming", "lanczos"),
}
SHORT_FLAGS = {"batch_size": ["-b"]}  # timm's train.py spelling
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
        if origin in (tuple, Tuple):
            if isinstance(value, str):
                value = [v for v in value.replace("(", "").replace(")", "").replace("[", "").replace("]", "")
                         .split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise ValueError("expected a list")
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(key, v, args[0]) for v in value)
            if len(value) != len(args):
                raise ValueError(f"expected {len(args)} values")
            return tuple(_coerce(key, v, a) for v, a in zip(value, args))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config key '{key}': cannot use {value!r} ({e})") from None
    raise ConfigError(f"config key '{key}': unsupported type {tp}")


def _types() -> Dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def unknown_key_error(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, FIELDS, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run with --help for the list of keys"
    return ConfigError(f"unknown config key '{key}' in {where}{hint}")


def apply_overrides(cfg: TrainConfig, values: Dict[str, Any], where: str) -> TrainConfig:
    """Return a copy of cfg with values set, each checked against the known keys and coerced to its type."""
    types = _types()
    updates = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if key not in FIELDS:
            raise unknown_key_error(key, where)
        if key == "grad_accum" and str(value).strip().lower() == "auto":
            value = None
        value = _coerce(key, value, types[key])
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"config key '{key}' in {where}: {value!r} is not one of {', '.join(CHOICES[key])}")
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
    where = (f"in {CONFIGS_DIR}" if os.path.isdir(CONFIGS_DIR) else
             "in the configs/ folder of the inceptionnext source checkout (not part of an installed wheel)")
    raise ConfigError(f"config file not found: {path}; the shipped recipes are {where}, e.g. "
                      "configs/finetune/inceptionnext_t.yaml; pass a path to one or to your own YAML")


def load_yaml(path: str, _seen: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """A YAML config as a dict; ``_base_: other.yaml`` (relative to the file) is read first and overridden."""
    if not os.path.isfile(path):
        path = _in_checkout(path)
    if os.path.abspath(path) in _seen:
        raise ConfigError(f"config file {path} includes itself through _base_")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value, got {type(data).__name__}")
    base = data.pop("_base_", None)
    if base is not None:
        merged = load_yaml(os.path.join(os.path.dirname(path), base), _seen + (os.path.abspath(path),))
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
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def build_parser(description: str = "Train an image classifier", prog: Optional[str] = None) -> argparse.ArgumentParser:
    """One --key option per config field (dashes or underscores), plus --config and --set key=value."""
    parser = argparse.ArgumentParser(prog=prog, description=description, argument_default=argparse.SUPPRESS,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", "-c", help="YAML file of config keys", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key (repeatable)")
    types = _types()
    for name, f in FIELDS.items():
        flags = sorted({f"--{name}", f"--{name.replace('_', '-')}"}) + SHORT_FLAGS.get(name, [])
        default = f.default if f.default is not dataclasses.MISSING else None
        switch = dict(nargs="?", const="true") if types[name] is bool else {}  # --pretrained alone means true
        parser.add_argument(*flags, dest=name, metavar="V", help=f"(default: {default})", **switch)
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
        from .checkpoint import read_checkpoint_config  # the killed run's own config
        cfg = apply_overrides(cfg, read_checkpoint_config(resume), f"checkpoint {resume}")
    if args.config is not None:
        cfg = apply_overrides(cfg, load_yaml(args.config), args.config)
    cfg = apply_overrides(cfg, cli, "the command line")
    cfg = apply_overrides(cfg, sets, "--set")
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
        return accum, cfg.lr, (f"global batch {cfg.lr_batch} held as the recipe's: {cfg.batch_size} x {world_size} "
                               f"processes x {accum} accumulation; lr {cfg.lr:.6g} as the recipe")
    why = ("grad_accum set" if accum is not None else
           f"{cfg.lr_batch} is not a multiple of batch_size x processes = {per_step}")
    accum = accum or 1
    lr = cfg.lr * per_step * accum / cfg.lr_batch
    return accum, lr, (f"global batch {per_step * accum} ({why}): lr scaled linearly from {cfg.lr:.6g} at "
                       f"{cfg.lr_batch} to {lr:.6g}")


def effective_lr(cfg: TrainConfig, world_size: int) -> float:
    """The lr this many processes train with (`plan_batch`)."""
    return plan_batch(cfg, world_size)[1]
