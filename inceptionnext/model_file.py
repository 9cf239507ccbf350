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
from typing import Any, Dict, List, Mapping, Optional

import timm
import torch
import torch.nn as nn

from .deploy import is_folded, is_metanext_block, reparameterize_model
from .weights import (CheckpointError, PathLike, describe_mismatch, read_weight_file, unwrap_state_dict,
                      write_atomically)

FORMAT = 'inceptionnext.model'
TRAINING_FORMAT = 'inceptionnext.train'
WEIGHT_SUFFIXES = ('.safetensors', '.pth', '.pt', '.bin')
# Pretrained-config keys that say where the original weights came from: they do not describe a saved file.
_SOURCE_KEYS = ('url', 'file', 'state_dict', 'hf_hub_id', 'hf_hub_filename', 'source', 'custom_load')


@dataclass
class ModelFile:
    """A weight file as read: the state dict and whatever record of the model it carries (None: not recorded)."""
    path: str
    kind: str  # 'model file' (written here), 'training checkpoint' (inceptionnext.train), 'state dict' (other)
    state_dict: Dict[str, torch.Tensor]
    model_name: Optional[str] = None
    num_classes: Optional[int] = None
    in_chans: Optional[int] = None
    deploy: Optional[bool] = None
    pretrained_cfg: Dict[str, Any] = field(default_factory=dict)


def check_model_name(name: str) -> str:
    """`name` if timm can build it, else a ValueError listing close names."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        raise ValueError(f"unknown model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                      "; `inceptionnext list` shows the names"))
    return name


def _same_model(a: str, b: str) -> bool:
    """Same architecture: equal names, or an inceptionnext short name and its official alias."""
    from .models.zoo import get_entry
    if a.split('.')[0] == b.split('.')[0]:
        return True
    try:
        return get_entry(a) == get_entry(b)
    except KeyError:
        return False


def portable_cfg(cfg: Optional[Mapping[str, Any]], num_classes: int) -> Dict[str, Any]:
    """A model's pretrained config as JSON-safe values, minus where its original weights came from."""
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
    out['num_classes'] = num_classes
    return out


def _cfg_overlay(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """The saved config back in timm's types (tuples where timm keeps tuples)."""
    return {k: tuple(v) if isinstance(v, list) and k not in ('label_names', 'label_descriptions') else v
            for k, v in cfg.items() if k not in _SOURCE_KEYS and k != 'architecture'}


def _from_training_checkpoint(path: str, obj: Mapping[str, Any], use_ema: bool) -> ModelFile:
    key = 'state_dict_ema' if use_ema else 'state_dict'
    if obj.get(key) is None:
        raise CheckpointError(f"{path}: holds no EMA weights (trained with ema: false)" if use_ema else
                              f"{path}: training checkpoint without weights")
    cfg = dict(obj.get('data_config') or {})
    class_to_idx = obj.get('class_to_idx')
    if class_to_idx:
        cfg['label_names'] = [name for name, _ in sorted(class_to_idx.items(), key=lambda kv: kv[1])]
    return ModelFile(path, 'training checkpoint', unwrap_state_dict(obj[key], path), obj.get('arch'),
                     obj.get('num_classes'), None, False, cfg)


def read_model_file(path: PathLike, use_ema: bool = False) -> ModelFile:
    """Read any weight file the library loads, with its record of the model where it has one.

    `use_ema` picks the EMA weights of a training checkpoint (an error when it has none); other files hold one
    set of weights (timm's convention of preferring EMA applies to foreign checkpoints).
    """
    path = str(path)
    obj, metadata = read_weight_file(path)
    if metadata.get('format') == FORMAT or (isinstance(obj, Mapping) and obj.get('format') == FORMAT):
        try:
            record = json.loads(metadata['record']) if metadata.get('format') == FORMAT else obj
            state_dict = unwrap_state_dict(obj, path)
            return ModelFile(path, 'model file', state_dict, record['model'], int(record['num_classes']),
                             int(record['in_chans']), bool(record['deploy']), dict(record.get('pretrained_cfg') or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: its model record is damaged ({type(e).__name__}: {e})") from e
    if isinstance(obj, Mapping) and obj.get('format') == TRAINING_FORMAT:
        return _from_training_checkpoint(path, obj, use_ema)
    if use_ema:
        raise CheckpointError(f"{path}: use_ema applies to training checkpoints of inceptionnext.train only")
    return ModelFile(path, 'state dict', unwrap_state_dict(obj, path))


def _classifier_classes(state_dict: Mapping[str, torch.Tensor], classifier: Any) -> Optional[int]:
    names = [classifier] if isinstance(classifier, str) else list(classifier or ())
    weight = state_dict.get(f"{names[-1]}.weight") if names else None
    return int(weight.shape[0]) if weight is not None else None


def _first_conv_channels(state_dict: Mapping[str, torch.Tensor], first_conv: Any) -> Optional[int]:
    weight = state_dict.get(f"{first_conv}.weight") if isinstance(first_conv, str) else None
    return int(weight.shape[1]) if weight is not None and weight.dim() == 4 else None


def load_model(path: PathLike, model_name: Optional[str] = None, *, num_classes: Optional[int] = None,
               use_ema: bool = False, deploy: Optional[bool] = None, **kwargs: Any) -> nn.Module:
    """An eval-mode model with the weights of `path`, rebuilt from the file's record.

    `model_name` is needed only for files without a record, and must agree with the record otherwise. Folded
    weights are detected (from the record, else from the keys) and the model is folded before loading, unless
    `deploy` says which. Other kwargs go to `timm.create_model` (e.g. `fast_path`, `drop_rate`).
    """
    mf = read_model_file(path, use_ema)
    if model_name and mf.model_name and not _same_model(model_name, mf.model_name):
        raise CheckpointError(f"{path}: holds weights for {mf.model_name}, not {model_name}")
    name = model_name or mf.model_name
    if not name:
        raise CheckpointError(f"{path}: a plain state dict does not say which model it is for; name the model "
                              "(--model, model_name=)")
    check_model_name(name)
    cfg = timm.models.get_pretrained_cfg(name)
    cfg = dict(cfg.to_dict() if cfg is not None else {}, **mf.pretrained_cfg)
    found = mf.num_classes or _classifier_classes(mf.state_dict, cfg.get('classifier'))
    if num_classes is not None and found is not None and num_classes != found:
        raise CheckpointError(f"{path}: its classifier has {found} classes, not num_classes={num_classes}")
    classes = num_classes or found or 1000
    in_chans = mf.in_chans or _first_conv_channels(mf.state_dict, cfg.get('first_conv')) or 3
    model = timm.create_model(name, num_classes=classes, in_chans=in_chans,
                              pretrained_cfg_overlay=_cfg_overlay(mf.pretrained_cfg) or None, **kwargs).eval()
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
        raise CheckpointError(f"{path}: {e}".replace('state dict: ', '')) from e
    return model


def save_model(model: nn.Module, path: PathLike, model_name: Optional[str] = None,
               label_names: Optional[List[str]] = None) -> Path:
    """Write `model`'s weights with the record that rebuilds it: safetensors for .safetensors, else torch.save.

    Written atomically. The name defaults to the one the model was built under (its pretrained config).
    """
    path = Path(path)
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"{path}: unknown weight format {path.suffix!r}; use one of {', '.join(WEIGHT_SUFFIXES)}")
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    name = check_model_name(model_name or cfg.get('architecture') or type(model).__name__)
    num_classes = getattr(model, 'num_classes', None)
    if not isinstance(num_classes, int):
        raise ValueError(f"{name}: the model has no integer num_classes to record")
    if label_names is not None:
        if len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label names for a model with {num_classes} classes")
        cfg['label_names'] = list(label_names)
    record = dict(format=FORMAT, version=1, model=name, num_classes=num_classes,
                  in_chans=int(getattr(model, 'in_chans', 3)), deploy=is_folded(model),
                  pretrained_cfg=portable_cfg(cfg, num_classes))
    state_dict = model.state_dict()
    if path.suffix == '.safetensors':
        from safetensors.torch import save_file
        tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        metadata = {'format': FORMAT, 'record': json.dumps(record)}
        return write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    record['state_dict'] = {k: v.detach().cpu() for k, v in state_dict.items()}
    return write_atomically(path, lambda tmp: torch.save(record, tmp))


def convert(src: PathLike, dst: PathLike, model_name: Optional[str] = None, *, deploy: bool = False,
            use_ema: bool = False, num_classes: Optional[int] = None) -> nn.Module:
    """Read any weight file, check it fits the model, optionally fold it, and write it with its record.

    Returns the model as written, so callers can compare its outputs with the file read back.
    """
    if Path(dst).suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"{dst}: unknown weight format {Path(dst).suffix!r}; use one of {', '.join(WEIGHT_SUFFIXES)}")
    model = load_model(src, model_name, num_classes=num_classes, use_ema=use_ema)
    if deploy and not is_folded(model):
        model = reparameterize_model(model, inplace=True)
    save_model(model, dst)
    return model


__all__ = ['FORMAT', 'ModelFile', 'check_model_name', 'convert', 'load_model', 'portable_cfg', 'read_model_file',
           'save_model']
