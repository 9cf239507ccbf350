"""A model in one file: its weights plus what rebuilds it, so that `load_model(path)` needs nothing else.

The record a file carries: the registered model name, class count, input channels, whether the weights are
folded for inference (`inceptionnext.deploy`), and the pretrained config the weights expect (preprocessing,
and class names as timm's `label_names`). Files written by `save_model` carry it (safetensors metadata, or a
dict around the state dict in .pth); training checkpoints of `inceptionnext.train` carry most of it; any other
weight file (official release, timm or hub state dict) needs the model name, and its class count is read off
its classifier. A .pth written here is still a training-checkpoint-style dict with a ``state_dict`` key, so
timm's own `load_checkpoint` and `pretrained_cfg_overlay=dict(file=...)` read it too.
"""

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import timm
import torch
import torch.nn as nn

from . import checksum
from .models.dense import create_any_model, get_dense_model, is_dense_model, is_model, list_dense_models
from .models.fold import is_folded, is_metanext_block, reparameterize_model
from .models.zoo import ZOO, get_entry
from .utils.files import write_atomically
from .utils.text import describe_value, excerpt
from .weights import (
    CheckpointError,
    PathLike,
    describe_mismatch,
    read_weight_file,
    scored_weights_key,
    unwrap_state_dict,
)

FORMAT = "inceptionnext.model"
TRAINING_FORMAT = "inceptionnext.train"  # what inceptionnext.train.checkpoint writes
EMA_KEYS = ("state_dict_ema", "model_ema")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# Pretrained-config keys that say where the original weights came from: they do not describe a saved file.
_SOURCE_KEYS = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "custom_load")


@dataclass
class ModelFile:
    """A weight file as read: the state dict and whatever record of the model it carries (None: not recorded).

    Args:
        path: the file.
        kind: 'model file' (written by `save_model`), 'training checkpoint' (`inceptionnext.train`) or
            'state dict' (anything else).
        state_dict: the weights.
        model_name: the registered model name.
        num_classes: the classifier's outputs.
        in_chans: the input channels.
        deploy: whether the weights are folded for inference.
        pretrained_cfg: the pretrained config the weights expect (preprocessing, `label_names`).
        weights_key: the checkpoint entry the weights came from (None: the file is the weights).
        scored_key: the entry that was scored best in training, where the file has several.
    """

    path: str
    kind: str  # 'model file' (written here), 'training checkpoint' (inceptionnext.train), 'state dict' (other)
    state_dict: Dict[str, torch.Tensor]
    model_name: Optional[str] = None
    num_classes: Optional[int] = None
    in_chans: Optional[int] = None
    deploy: Optional[bool] = None
    pretrained_cfg: Dict[str, Any] = field(default_factory=dict)
    weights_key: Optional[str] = None  # the checkpoint entry the weights came from (None: the file is the weights)
    scored_key: Optional[str] = None  # the entry that was scored best in training, where the file has several


EMA_CHOICE_HELP = (
    "default: the weights scored best in training (a checkpoint's EMA weights when its run kept and scored them)"
)


def describe_weights(mf: ModelFile) -> str:
    """Which weights of the file were loaded, in words, for the tools to print.

    Args:
        mf: the file as read.

    Returns:
        One line, e.g. "EMA weights (state_dict_ema) of run/model_best.pth, the ones scored best in training".
    """
    if mf.weights_key is None:
        return f"{mf.path} ({mf.kind})"
    ema = mf.weights_key in EMA_KEYS
    what = f"{'EMA' if ema else 'model'} weights ({mf.weights_key}) of {mf.path}"
    if mf.scored_key is None:
        return what
    if mf.weights_key == mf.scored_key:
        return what + ", the ones scored best in training"
    return what + f", not the {'EMA' if mf.scored_key in EMA_KEYS else 'model'} weights scored best in training"


# What a file's record may ask for before anything is built from it (far beyond any real model).
RECORD_LIMITS = {"num_classes": (0, 1_000_000), "in_chans": (1, 1024), "input_size": (1, 4096)}


def _check_record(mf: "ModelFile", cfg: Mapping[str, Any]) -> None:
    """Refuse record fields outside sane limits, or disagreeing with the weights the file holds, before a model
    is built from them (a 1 MB file asking for 1e9 classes would otherwise allocate terabytes)."""
    lo, hi = RECORD_LIMITS["num_classes"]
    if mf.num_classes is not None and not (isinstance(mf.num_classes, int) and lo <= mf.num_classes <= hi):
        raise CheckpointError(
            f"{mf.path}: its record asks for {describe_value(mf.num_classes)} classes; allowed: {lo} to {hi}"
        )
    lo, hi = RECORD_LIMITS["in_chans"]
    if mf.in_chans is not None and not (isinstance(mf.in_chans, int) and lo <= mf.in_chans <= hi):
        raise CheckpointError(
            f"{mf.path}: its record asks for {describe_value(mf.in_chans)} input channels; allowed: {lo} to {hi}"
        )
    size = mf.pretrained_cfg.get("input_size")
    lo, hi = RECORD_LIMITS["input_size"]
    if size is not None and not (
        isinstance(size, (list, tuple))
        and len(size) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in size)
    ):
        raise CheckpointError(
            f"{mf.path}: its record's input_size {describe_value(size)} is not [C, H, W] with each from {lo} to {hi}"
        )
    try:
        found = _classifier_classes(mf.state_dict, cfg.get("classifier"))
        chans = _first_conv_channels(mf.state_dict, cfg.get("first_conv"))
    except (TypeError, AttributeError, IndexError):
        raise CheckpointError(f"{mf.path}: its record's classifier or first_conv entry is damaged") from None
    if mf.num_classes is not None and found is not None and found != mf.num_classes:
        raise CheckpointError(f"{mf.path}: its record says {mf.num_classes} classes, its classifier has {found}")
    if mf.in_chans is not None and chans is not None and chans != mf.in_chans:
        raise CheckpointError(f"{mf.path}: its record says {mf.in_chans} input channels, its first conv has {chans}")
    names = mf.pretrained_cfg.get("label_names")
    if names is not None and not (
        isinstance(names, (list, tuple))
        and len(names) <= hi * 1000
        and all(isinstance(n, str) and len(n) <= 1000 for n in names)
    ):
        raise CheckpointError(f"{mf.path}: its record's label_names are not a list of short strings")


def default_cfg(name: str) -> Dict[str, Any]:
    """The pretrained config a model is built with: timm's for its models, the dense model's own otherwise."""
    if is_dense_model(name):
        return dict(get_dense_model(name).default_cfg)
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def check_model_name(name: str) -> str:
    """`name` if timm can build it, else a ValueError listing close names.

    Args:
        name: a timm or dense model name.

    Returns:
        `name`.

    Raises:
        ValueError: no such model; the message suggests close names.
    """
    if not is_model(name):
        close = difflib.get_close_matches(name, timm.list_models() + list_dense_models(), n=5, cutoff=0.6)
        raise ValueError(
            f"unknown model {name!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "; `inceptionnext list` shows the names")
        )
    return name


def _same_model(a: str, b: str) -> bool:
    """Same architecture: equal names, or an inceptionnext short name and its official alias."""
    if a.split(".")[0] == b.split(".")[0]:
        return True

    def entry(name):
        try:
            return get_entry(name)
        except KeyError:  # timm's own inception_next_* has our keys: the same weights fit it
            return next((e for e in ZOO if e.family == "inceptionnext" and e.timm_name == name.split(".")[0]), None)

    return entry(a) is not None and entry(a) == entry(b)


def portable_cfg(cfg: Optional[Mapping[str, Any]], num_classes: int, in_chans: int = 3) -> Dict[str, Any]:
    """A model's pretrained config as JSON-safe values, minus where its original weights came from, with the
    model's own class count and input channels.

    Args:
        cfg: the pretrained config; None for none.
        num_classes: the model's classes.
        in_chans: the model's input channels (set in `input_size`).

    Returns:
        The config, without None values, values JSON cannot hold and the weights' sources (url, file, hub id).
    """
    out = {}
    for key, value in (cfg or {}).items():
        if key in _SOURCE_KEYS or value is None:
            continue
        if isinstance(value, tuple):
            value = list(value)
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[key] = value
    out["num_classes"] = num_classes
    if out.get("input_size"):
        out["input_size"] = [in_chans] + list(out["input_size"][1:])
    return out


def _cfg_overlay(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """The saved config back in timm's types (tuples where timm keeps tuples)."""
    return {
        k: tuple(v) if isinstance(v, list) and k not in ("label_names", "label_descriptions") else v
        for k, v in cfg.items()
        if k not in _SOURCE_KEYS and k != "architecture"
    }


def _entries(obj: Mapping[str, Any]) -> List[str]:
    return [k for k in EMA_KEYS + ("state_dict", "model") if isinstance(obj.get(k), Mapping)]


def _choose_weights(path: str, obj: Mapping[str, Any], use_ema: Optional[bool]) -> Optional[str]:
    """The checkpoint entry to load: the scored one by default (`weights.scored_weights_key`), the EMA or the
    model weights when `use_ema` says which; None for a file that is a plain state dict."""
    entries = _entries(obj)
    if not entries:
        if use_ema:
            raise CheckpointError(f"{path}: holds no EMA weights (no {' or '.join(EMA_KEYS)} entry)")
        return None
    if use_ema is None:
        return scored_weights_key(obj)
    wanted = [k for k in entries if (k in EMA_KEYS) == use_ema]
    if not wanted:
        raise CheckpointError(
            f"{path}: holds no EMA weights (trained with ema: false)"
            if use_ema
            else f"{path}: holds only EMA weights; drop --no-ema"
        )
    return wanted[0]


def _from_training_checkpoint(path: str, obj: Mapping[str, Any], use_ema: Optional[bool]) -> ModelFile:
    if obj.get("state_dict") is None:
        raise CheckpointError(f"{path}: training checkpoint without weights")
    key = _choose_weights(path, obj, use_ema)
    cfg = dict(obj.get("data_config") or {})
    class_to_idx = obj.get("class_to_idx")
    if class_to_idx:
        cfg["label_names"] = [name for name, _ in sorted(class_to_idx.items(), key=lambda kv: kv[1])]
    return ModelFile(
        path,
        "training checkpoint",
        unwrap_state_dict(obj[key], path),
        obj.get("arch"),
        obj.get("num_classes"),
        None,
        False,
        cfg,
        key,
        scored_weights_key(obj),
    )


def _scored_if_several(obj: Mapping[str, Any]) -> Optional[str]:
    return scored_weights_key(obj) if len(_entries(obj)) > 1 else None


def read_model_file(path: PathLike, use_ema: Optional[bool] = None) -> ModelFile:
    """Read any weight file the library loads, with its record of the model where it has one.

    Args:
        path: any weight file the library reads.
        use_ema: of a checkpoint holding model and EMA weights, None reads the ones scored best in training
            (this engine's checkpoints record which; others: the EMA weights, which timm's train.py scores);
            True or False picks the EMA or the model weights.

    Returns:
        The state dict with whatever record the file carries: model name, class count, input channels,
        folded or not, pretrained config, and which checkpoint entry the weights came from.

    Raises:
        CheckpointError: the file cannot be read or is damaged, or lacks the weights `use_ema` asks for.
    """
    path = str(path)
    obj, metadata = read_weight_file(path)
    in_metadata = metadata.get("format") == FORMAT  # safetensors; a .pth carries the record beside its weights
    if in_metadata or (isinstance(obj, Mapping) and obj.get("format") == FORMAT):
        if use_ema:
            raise CheckpointError(f"{path}: a converted model file holds one set of weights; drop use_ema")
        try:
            record = json.loads(metadata["record"]) if in_metadata else obj
            state_dict = unwrap_state_dict(obj, path)
            return ModelFile(
                path,
                "model file",
                state_dict,
                record["model"],
                int(record["num_classes"]),
                int(record["in_chans"]),
                bool(record["deploy"]),
                dict(record.get("pretrained_cfg") or {}),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise CheckpointError(f"{path}: its model record is damaged ({type(e).__name__}: {excerpt(e, 200)})") from e
    if isinstance(obj, Mapping) and obj.get("format") == TRAINING_FORMAT:  # its checksum: read_weight_file
        return _from_training_checkpoint(path, obj, use_ema)
    if not isinstance(obj, Mapping):
        return ModelFile(path, "state dict", unwrap_state_dict(obj, path))
    key = _choose_weights(path, obj, use_ema)
    return ModelFile(
        path,
        "state dict",
        unwrap_state_dict(obj[key] if key else obj, path),
        weights_key=key,
        scored_key=_scored_if_several(obj),
    )


def _classifier_classes(state_dict: Mapping[str, torch.Tensor], classifier: Any) -> Optional[int]:
    names = [classifier] if isinstance(classifier, str) else list(classifier or ())
    weight = state_dict.get(f"{names[-1]}.weight") if names else None
    return int(weight.shape[0]) if weight is not None else None


def _first_conv_channels(state_dict: Mapping[str, torch.Tensor], first_conv: Any) -> Optional[int]:
    weight = state_dict.get(f"{first_conv}.weight") if isinstance(first_conv, str) else None
    return int(weight.shape[1]) if weight is not None and weight.dim() == 4 else None


def load_model(
    path: PathLike,
    model_name: Optional[str] = None,
    *,
    num_classes: Optional[int] = None,
    use_ema: Optional[bool] = None,
    deploy: Optional[bool] = None,
    **kwargs: Any,
) -> nn.Module:
    """An eval-mode model with the weights of `path`, rebuilt from the file's record.

    Folded weights are detected (from the record, else from the keys) and the model is folded before loading,
    unless `deploy` says which. `model.weights_note` says which weights were loaded.

    Args:
        path: any weight file the library reads: a converted file, a training checkpoint, an official `.pth`,
            a timm state dict or `.safetensors`.
        model_name: needed only for files without a record (bare state dicts); must agree with the record
            otherwise.
        num_classes: the class count the file must have; None takes the file's.
        use_ema: of a checkpoint holding model and EMA weights, True or False picks the EMA or the model
            weights; None takes the ones scored best in training.
        deploy: True or False forces a folded or unfolded model; None decides from the file.
        **kwargs: passed to `timm.create_model` (e.g. `fast_path`, `drop_rate`).

    Returns:
        The model, in eval mode.

    Raises:
        CheckpointError: the file cannot be read, is damaged, names another model, or its weights do not fit
            the model (the message names the first mismatching keys).
    """
    mf = read_model_file(path, use_ema)
    if model_name and mf.model_name and not _same_model(model_name, mf.model_name):
        raise CheckpointError(f"{path}: holds weights for {mf.model_name}, not {model_name}")
    name = model_name or mf.model_name
    if not name:
        raise CheckpointError(
            f"{path}: a plain state dict does not say which model it is for; name the model (--model, model_name=)"
        )
    check_model_name(name)
    cfg = dict(default_cfg(name), **mf.pretrained_cfg)
    _check_record(mf, cfg)
    found = mf.num_classes if mf.num_classes is not None else _classifier_classes(mf.state_dict, cfg.get("classifier"))
    if num_classes is not None and found is not None and num_classes != found:
        raise CheckpointError(f"{path}: its classifier has {found} classes, not num_classes={num_classes}")
    classes = next(n for n in (num_classes, found, 1000) if n is not None)
    in_chans = mf.in_chans or _first_conv_channels(mf.state_dict, cfg.get("first_conv")) or 3
    overlay = _cfg_overlay(mf.pretrained_cfg)
    size = overlay.get("input_size") or cfg.get("input_size")
    if size and size[0] != in_chans:
        overlay["input_size"] = (in_chans, *size[1:])
    model = create_any_model(
        name, num_classes=classes, in_chans=in_chans, pretrained_cfg_overlay=overlay or None, **kwargs
    ).eval()
    if deploy is None:
        deploy = mf.deploy
    foldable = any(is_metanext_block(m) for m in model.modules())
    if deploy is None and foldable and describe_mismatch(mf.state_dict, model):
        folded = reparameterize_model(model)
        deploy = not describe_mismatch(mf.state_dict, folded)
    if deploy:
        model = reparameterize_model(model, inplace=True)
    try:
        model.load_state_dict(mf.state_dict)
    except (CheckpointError, RuntimeError) as e:
        raise CheckpointError(f"{path}: {e}".replace("state dict: ", "")) from e
    model.weights_note = describe_weights(mf)
    return model


def save_model(
    model: nn.Module,
    path: PathLike,
    model_name: Optional[str] = None,
    label_names: Optional[List[str]] = None,
    check: Optional[Callable[[str], None]] = None,
) -> Path:
    """Write `model`'s weights with the record that rebuilds it.

    Args:
        model: the model to save (folded or not).
        path: `.safetensors` (the record in the metadata) or any other suffix (torch.save of a dict with
            `state_dict`, which timm's loaders also read). Written atomically, with a checksum.
        model_name: the registered name; defaults to the one the model was built under.
        label_names: class names to record (the model's own by default).
        check: called with the temporary file before it replaces `path`; raise to keep the old file.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"{path}: unknown weight format {path.suffix!r}; use one of {', '.join(WEIGHT_SUFFIXES)}")
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    name = check_model_name(model_name or cfg.get("architecture") or type(model).__name__)
    num_classes = getattr(model, "num_classes", None)
    if not isinstance(num_classes, int):
        raise ValueError(f"{name}: the model has no integer num_classes to record")
    if label_names is not None:
        if len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label names for a model with {num_classes} classes")
        cfg["label_names"] = list(label_names)
    in_chans = int(getattr(model, "in_chans", 3))
    record = dict(
        format=FORMAT,
        version=1,
        model=name,
        num_classes=num_classes,
        in_chans=in_chans,
        deploy=is_folded(model),
        pretrained_cfg=portable_cfg(cfg, num_classes, in_chans),
    )
    state_dict = model.state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        metadata = checksum.seal_metadata(tensors, {"format": FORMAT, "record": json.dumps(record)})
        write = lambda tmp: save_file(tensors, tmp, metadata=metadata)  # noqa: E731
    else:
        record["state_dict"] = {k: v.detach().cpu() for k, v in state_dict.items()}
        checksum.seal(record)  # checked on every read, as training checkpoints are
        write = lambda tmp: torch.save(record, tmp)  # noqa: E731

    def write_and_check(tmp: str) -> None:
        write(tmp)
        if check is not None:
            check(tmp)

    return write_atomically(path, write_and_check)


@dataclass
class ConvertResult:
    """What `convert` wrote.

    Args:
        model: the model as written.
        path: the file written.
        max_abs_diff: read-back outputs vs the source model (None: not verified).
    """

    model: nn.Module  # the model as written
    path: Path
    max_abs_diff: Optional[float] = None  # read-back outputs vs the source model (None: not verified)


def convert(
    src: PathLike,
    dst: PathLike,
    model_name: Optional[str] = None,
    *,
    deploy: bool = False,
    use_ema: Optional[bool] = None,
    num_classes: Optional[int] = None,
    verify: bool = True,
) -> ConvertResult:
    """Read any weight file, check it fits the model, optionally fold it, and write it with its record.

    Args:
        src: any weight file the library reads.
        dst: the file to write: `.safetensors` or `.pth`.
        model_name: needed only for files without a record.
        deploy: fold the model before writing (faster inference, outputs within fp32 rounding).
        use_ema: which weights of a checkpoint holding both, as in `load_model`.
        num_classes: the class count the file must have.
        verify: read the new file back before it replaces `dst`: it must rebuild a model whose outputs equal
            the converted model's exactly and, when folded here, the source model's within fp32 rounding.

    Returns:
        The model as written, the path, and the largest difference of the read-back outputs from the source
        model's (None when not verified).

    Raises:
        CheckpointError: the source cannot be read or does not fit the model, or the written file fails the
            read-back check (nothing replaces `dst` then).
    """
    dst = Path(dst)
    if dst.suffix not in WEIGHT_SUFFIXES:
        graph = dst.suffix in (".onnx", ".pt2", ".ts", ".torchscript")
        raise ValueError(
            f"{dst}: unknown weight format {dst.suffix!r}; use one of {', '.join(WEIGHT_SUFFIXES)}"
            + ("; an ONNX, TorchScript or torch.export file is written by `inceptionnext export`" if graph else "")
        )
    source = load_model(src, model_name, num_classes=num_classes, use_ema=use_ema)
    model, folded_here = source, False
    if deploy and not is_folded(source):
        if not any(is_metanext_block(m) for m in source.modules()):
            raise ValueError(
                f"{source.pretrained_cfg.get('architecture')}: nothing to fold; deploy folds the "
                "BatchNorm and layer scale of InceptionNeXt (MetaNeXt) blocks"
            )
        model, folded_here = reparameterize_model(source), True
    result = ConvertResult(model, dst)

    def check(tmp: str) -> None:
        size = list(model.pretrained_cfg.get("input_size") or (model.in_chans, 224, 224))
        x = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected, got = model(x), load_model(tmp)(x)
            if not torch.equal(got, expected):
                raise CheckpointError(f"{dst}: read back, it does not reproduce the converted model's outputs")
            result.max_abs_diff = float((got - source(x)).abs().max()) if folded_here else 0.0
        if folded_here and not torch.allclose(got, source(x), rtol=1e-4, atol=1e-5):
            raise CheckpointError(f"{dst}: the folded model differs from the source by {result.max_abs_diff:.2e}")

    save_model(model, dst, check=check if verify else None)
    return result


def save_hub_folder(
    src: PathLike,
    folder: PathLike,
    model_name: Optional[str] = None,
    *,
    use_ema: Optional[bool] = None,
    verify: bool = True,
) -> nn.Module:
    """Any weight file as timm's hub format (`config.json` + `model.safetensors`, what `push_to_hub` uploads).

    `timm.create_model("local-dir:FOLDER", pretrained=True)` (or `hf-hub:` once uploaded) then rebuilds the
    model. timm rebuilds hub models from their config, unfolded, so folded files cannot be written this way.

    Args:
        src: any weight file the library reads.
        folder: the folder to write.
        model_name: needed only for files without a record.
        use_ema: which weights of a checkpoint holding both, as in `load_model`.
        verify: load the folder back through `local-dir:`; it must give identical outputs.

    Returns:
        The model that was written.

    Raises:
        CheckpointError: the source cannot be read or does not fit, or the folder fails the check.
        ValueError: the source holds a folded model, or `folder` exists and is not a folder.
    """
    from timm.models import save_for_hf

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: exists and is not a folder; the hub format is a folder")
    model = load_model(src, model_name, use_ema=use_ema).eval()
    if is_folded(model):
        raise ValueError(
            f"{src}: holds a folded model, which timm's hub format cannot rebuild; convert the unfolded weights"
        )
    save_for_hf(model, str(folder), safe_serialization=True)
    if verify:
        size = list(model.pretrained_cfg.get("input_size") or (model.in_chans, 224, 224))
        x = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            if not torch.equal(timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x), model(x)):
                raise CheckpointError(f"{folder}: read back, it does not reproduce the model's outputs")
    return model


__all__ = [
    "FORMAT",
    "ConvertResult",
    "ModelFile",
    "check_model_name",
    "convert",
    "describe_weights",
    "load_model",
    "portable_cfg",
    "read_model_file",
    "save_hub_folder",
    "save_model",
]
