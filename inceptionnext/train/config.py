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
from pathlib import Path
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot be used (unknown key, wrong type, bad value)."""


@dataclass
class TrainConfig:
    # --- model: built by name through timm; the engine never looks inside it
    model: str = "inceptionnext_a"
    pretrained: bool = False            # load the model's default pretrained weights through timm
    weights: Optional[str] = None       # or a local weight file (any format the model library loads)
    num_classes: Optional[int] = None   # None: the dataset's class count
    drop_path: float = 0.0              # stochastic depth rate
    drop: float = 0.0                   # dropout before the classifier
    sync_bn: bool = False               # convert BatchNorm to SyncBatchNorm under DDP (CUDA only)

    # --- data
    dataset: str = "folder"             # "folder" (ImageFolder with train/ and val/) or "digits" (built in)
    data_dir: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    bad_images: str = "fail"            # unreadable images: "fail" (error naming the file) or "skip" (count them)
    workers: int = 4
    pin_memory: bool = True

    # --- preprocessing; None takes the model's pretrained config
    img_size: Optional[int] = None
    crop_pct: Optional[float] = None
    interpolation: Optional[str] = None
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
    grad_accum: int = 1                 # micro-batches per optimizer step
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
    experiment: Optional[str] = None    # run folder name under output; None: <model>-<timestamp>
    resume: Optional[str] = None        # a checkpoint path, or "auto" for <run dir>/last.pth
    stop_after_epoch: Optional[int] = None  # end the process after this epoch (scheduled interruption)
    progress: bool = True
    plot: bool = True


FIELDS: Dict[str, dataclasses.Field] = {f.name: f for f in fields(TrainConfig)}
CHOICES = {
    "dataset": ("folder", "digits"),
    "bad_images": ("fail", "skip"),
    "amp": ("none", "bf16", "fp16"),
    "best_on": ("auto", "model", "ema"),
    "device": ("auto", "cpu", "cuda"),
    "clip_mode": ("norm", "value", "agc"),
    "mixup_mode": ("batch", "pair", "elem"),
    "sched": ("cosine", "tanh", "step", "multistep", "poly", "constant", "wsd", "rsqrt", "none"),
}
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
        value = _coerce(key, value, types[key])
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"config key '{key}' in {where}: {value!r} is not one of {', '.join(CHOICES[key])}")
        updates[key] = value
    return dataclasses.replace(cfg, **updates)


def load_yaml(path: str, _seen: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """A YAML config as a dict; ``_base_: other.yaml`` (relative to the file) is read first and overridden."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
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
    from ..weights import write_atomically
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))


def build_parser(description: str = "Train an image classifier", prog: Optional[str] = None) -> argparse.ArgumentParser:
    """One --key option per config field (dashes or underscores), plus --config and --set key=value."""
    parser = argparse.ArgumentParser(prog=prog, description=description, argument_default=argparse.SUPPRESS,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", "-c", help="YAML file of config keys", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key (repeatable)")
    for name, f in FIELDS.items():
        flags = sorted({f"--{name}", f"--{name.replace('_', '-')}"})
        default = f.default if f.default is not dataclasses.MISSING else None
        parser.add_argument(*flags, dest=name, metavar="V", help=f"(default: {default})")
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


def effective_lr(cfg: TrainConfig, world_size: int) -> float:
    """The recipe's lr holds at global batch lr_batch; scale it linearly to batch_size * world_size * grad_accum."""
    if cfg.lr_batch is None:
        return cfg.lr
    global_batch = cfg.batch_size * world_size * cfg.grad_accum
    return cfg.lr * global_batch / cfg.lr_batch
