"""The model table as data, and the one loop that registers every name with timm.

A name goes to its spec, the spec to the builder, the builder to timm's `build_model_with_cfg`, which loads
weights (from `weights.load_pretrained_state_dict`) and handles num_classes, in_chans and features_only.
"""

import contextlib
import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Dict, Optional, Tuple

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._builder import resolve_pretrained_cfg

from .. import weights
from .convnext import ConvNeXt
from .layers import InceptionDWConv2d
from .metanext import MetaNeXt

RELEASE_URL = "https://github.com/sail-sg/inceptionnext/releases/download/model/"
PRETRAINED_TAG = "sail_in1k"


@dataclass(frozen=True)
class ZooEntry:
    """One architecture: its names, how to build it, where its weights live and what the paper reports.

    Args:
        name: the short name users type.
        alias: the official long name (kept so the official scripts keep working).
        family: 'inceptionnext' or 'convnext'.
        arch: builder arguments.
        release_file: file name in the official release.
        hf_hub_id: timm's copy on the Hugging Face hub.
        timm_name: timm's own implementation of the same architecture (for benchmarks).
        cfg: preprocessing overrides (input size, crop_pct, ...).
        paper: params (M), MACs (G), top-1, throughputs (A100).
    """

    name: str  # the short name users type
    alias: Optional[str]  # the official long name (kept so the official scripts keep working)
    family: str  # 'inceptionnext' or 'convnext'
    arch: Dict[str, Any]  # builder arguments
    release_file: str  # file name in the official release
    hf_hub_id: Optional[str] = None  # timm's copy on the Hugging Face hub
    timm_name: Optional[str] = None  # timm's own implementation of the same architecture (for benchmarks)
    cfg: Dict[str, Any] = field(default_factory=dict)  # preprocessing overrides (input size, crop_pct, ...)
    paper: Dict[str, float] = field(default_factory=dict)  # params (M), MACs (G), top-1, throughputs (A100)

    @property
    def names(self) -> Tuple[str, ...]:
        """The short name and, when there is one, the official alias."""
        return (self.name, self.alias) if self.alias else (self.name,)


def _inception(band_kernel_size=11, branch_ratio=0.125, square_kernel_size=3, **arch):
    return dict(
        arch,
        mixer=dict(square_kernel_size=square_kernel_size, band_kernel_size=band_kernel_size, branch_ratio=branch_ratio),
    )


_TINY = dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
_SMALL = dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768))
_BASE = dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))

ZOO: Tuple[ZooEntry, ...] = (
    ZooEntry(
        "inceptionnext_a",
        "inceptionnext_atto",
        "inceptionnext",
        _inception(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), band_kernel_size=9, branch_ratio=0.25),
        "inceptionnext_atto.pth",
        "timm/inception_next_atto.sail_in1k",
        "inception_next_atto",
        paper=dict(params=4.2, macs=0.51, top1=75.3, train_ips=2661, infer_ips=9876),
    ),
    ZooEntry(
        "inceptionnext_t",
        "inceptionnext_tiny",
        "inceptionnext",
        _inception(**_TINY),
        "inceptionnext_tiny.pth",
        "timm/inception_next_tiny.sail_in1k",
        "inception_next_tiny",
        paper=dict(params=28, macs=4.2, top1=82.3, train_ips=901, infer_ips=2900),
    ),
    ZooEntry(
        "inceptionnext_s",
        "inceptionnext_small",
        "inceptionnext",
        _inception(**_SMALL),
        "inceptionnext_small.pth",
        "timm/inception_next_small.sail_in1k",
        "inception_next_small",
        paper=dict(params=49, macs=8.4, top1=83.5, train_ips=521, infer_ips=1750),
    ),
    ZooEntry(
        "inceptionnext_b",
        "inceptionnext_base",
        "inceptionnext",
        _inception(**_BASE),
        "inceptionnext_base.pth",
        "timm/inception_next_base.sail_in1k",
        "inception_next_base",
        cfg=dict(crop_pct=0.95),
        paper=dict(params=87, macs=14.9, top1=84.0, train_ips=375, infer_ips=1244),
    ),
    ZooEntry(
        "inceptionnext_b_384",
        "inceptionnext_base_384",
        "inceptionnext",
        _inception(**_BASE),
        "inceptionnext_base_384.pth",
        "timm/inception_next_base.sail_in1k_384",
        "inception_next_base",
        cfg=dict(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
        paper=dict(params=87, macs=43.6, top1=85.2, train_ips=139, infer_ips=428),
    ),
) + tuple(
    ZooEntry(
        name,
        None,
        "convnext",
        dict(_TINY, kernel_size=k, conv_ratio=ratio),
        f"{name}_1k_224_ema.pth",
        timm_name="convnext_tiny",
        paper=dict(params=params, macs=macs, top1=top1, train_ips=train, infer_ips=infer),
    )
    for name, k, ratio, params, macs, top1, train, infer in (
        ("convnext_tiny_k5", 5, 1.0, 29, 4.4, 82.0, 675, 2704),
        ("convnext_tiny_k3", 3, 1.0, 28, 4.4, 81.5, 798, 2802),
        ("convnext_tiny_k3_par1_2", 3, 1 / 2, 28, 4.4, 81.4, 818, 2740),
        ("convnext_tiny_k3_par3_8", 3, 3 / 8, 28, 4.4, 81.4, 847, 2762),
        ("convnext_tiny_k3_par1_4", 3, 1 / 4, 28, 4.4, 81.3, 871, 2808),
        ("convnext_tiny_k3_par1_8", 3, 1 / 8, 28, 4.4, 80.8, 901, 2833),
        ("convnext_tiny_k3_par1_16", 3, 1 / 16, 28, 4.4, 80.1, 916, 2846),
    )
)

# The paper's reference points for models timm implements itself (Table 1, A100, fp32, batch 128).
PAPER_REFERENCE = {
    "resnet50": dict(params=26, macs=4.1, top1=78.4, train_ips=969, infer_ips=3149),
    "convnext_tiny": dict(params=29, macs=4.5, top1=82.1, train_ips=575, infer_ips=2413),
    "convnext_atto": dict(params=3.7, macs=0.55, top1=75.7, train_ips=835, infer_ips=4539),
}


def get_entry(name: str) -> ZooEntry:
    """The zoo entry for a short or official name (a pretrained tag after '.' is ignored).

    Args:
        name: e.g. `inceptionnext_t`, `inception_next_tiny` or `inceptionnext_t.sail_in1k`.

    Returns:
        The entry.

    Raises:
        KeyError: no entry has that name; the message lists the known names.
    """
    base = name.split(".")[0]
    for entry in ZOO:
        if base in entry.names:
            return entry
    raise KeyError(f"{name!r} is not an inceptionnext model; known: {', '.join(n for e in ZOO for n in e.names)}")


def paper_figures(name: str) -> Optional[Dict[str, float]]:
    """The paper's figures for a zoo name, its official alias, timm's implementation of it, or a reference model.

    Args:
        name: the model's name (a pretrained tag after '.' is ignored).

    Returns:
        Params (M), MACs (G), top-1 and throughputs as the paper reports them, or None for a name it does not
        report.
    """
    base = name.split(".")[0]
    if base in PAPER_REFERENCE:
        return PAPER_REFERENCE[base]
    for entry in ZOO:
        if base in entry.names or base == entry.timm_name:
            return entry.paper
    return None


def _pretrained_cfg(entry: ZooEntry) -> Dict[str, Any]:
    cfg = dict(
        url=RELEASE_URL + entry.release_file,
        hf_hub_id=entry.hf_hub_id,
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=(7, 7),
        crop_pct=0.875,
        interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        license="apache-2.0",
        paper_name="InceptionNeXt: When Inception Meets ConvNeXt",
        paper_ids="arXiv:2303.16900",
        origin_url="https://github.com/sail-sg/inceptionnext",
    )
    if entry.family == "inceptionnext":
        cfg.update(first_conv="stem.0", classifier="head.fc2")
    else:
        cfg.update(first_conv="downsample_layers.0.0", classifier="head")
    cfg.update(entry.cfg)
    return cfg


default_cfgs = generate_default_cfgs(
    {f"{name}.{PRETRAINED_TAG}": _pretrained_cfg(entry) for entry in ZOO for name in entry.names}
)


def _model_kwargs(entry: ZooEntry) -> Dict[str, Any]:
    arch = dict(entry.arch)
    if entry.family == "inceptionnext":
        arch["token_mixers"] = partial(InceptionDWConv2d, **arch.pop("mixer"))
    return arch


def create_zoo_model(variant: str, pretrained: bool = False, **kwargs):
    """Build `variant` through timm's builder; pretrained weights are fetched by `inceptionnext.weights`.

    Args:
        variant: a zoo name (short or official).
        pretrained: load the ImageNet weights (a local `file`, the hub copy, then the release URL).
        **kwargs: timm's `create_model` options (`num_classes`, `features_only`, `pretrained_cfg_overlay`,
            `device`, `dtype`, ...), `cache_dir` for downloads, and the model's own arguments.

    Returns:
        The model.

    Raises:
        KeyError: `variant` is not a zoo name.
        ValueError: a ConvNeXt variant is asked for `features_only` with `feature_cls` 'list' or 'dict'.
        FileNotFoundError: a local weight file named in the pretrained config does not exist.
        CheckpointError: the pretrained weights cannot be loaded or do not fit the model.
    """
    entry = get_entry(variant)
    cfg = resolve_pretrained_cfg(
        variant, kwargs.pop("pretrained_cfg", None), kwargs.pop("pretrained_cfg_overlay", None)
    )
    cache_dir = kwargs.pop("cache_dir", None)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)  # timm's create_model(device=, dtype=)
    source = "checkpoint"
    if pretrained:
        state_dict, source = weights.load_pretrained_state_dict(cfg.to_dict(), cache_dir=cache_dir)
        # timm's loader reads `hf-hub:`/`local-dir:` sources itself, ahead of a state dict: clear the source so it
        # takes the one read here (one read, our named errors)
        cfg = dataclasses.replace(cfg, state_dict=state_dict, source=None)
    if entry.family == "inceptionnext":
        model_cls, feature_cfg = MetaNeXt, dict(out_indices=(0, 1, 2, 3), flatten_sequential=True)
    else:
        model_cls, feature_cfg = ConvNeXt, dict(out_indices=(0, 1, 2, 3), feature_cls="getter")
        if kwargs.get("features_only") and kwargs.get("feature_cls") in ("list", "dict"):
            raise ValueError(
                f"{variant}: feature_cls={kwargs['feature_cls']!r} walks the model's top-level modules in order, "
                "which the official ConvNeXt layout (downsample_layers apart from stages) does not allow; use "
                "feature_cls='getter' (the default), 'hook' or 'fx'"
            )
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = build_model_with_cfg(
            model_cls,
            variant,
            pretrained,
            pretrained_cfg=cfg,
            pretrained_filter_fn=partial(weights.checkpoint_filter_fn, source=source),
            feature_cfg=feature_cfg,
            **dict(_model_kwargs(entry), **kwargs),
        )
    if dtype is not None:
        model = model.to(dtype=dtype)
    # the state dict rode in the config only to reach timm's loader; do not keep a second copy of the weights
    for m in {model, getattr(model, "model", model)}:
        if isinstance(getattr(m, "pretrained_cfg", None), dict):
            m.pretrained_cfg["state_dict"] = None
    return model


def register_entrypoint(name: str, builder, module_globals: Dict[str, Any], doc: str) -> None:
    """Register `name` with timm as a named function of the calling module that calls `builder(name, ...)`
    (timm reads the module's `default_cfgs` for its pretrained configs)."""

    def entrypoint(pretrained: bool = False, **kwargs):
        return builder(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = module_globals["__name__"]
    entrypoint.__doc__ = doc
    module_globals[name] = register_model(entrypoint)


for _entry in ZOO:
    for _name in _entry.names:
        register_entrypoint(
            _name, create_zoo_model, globals(), f"{_name} ({_entry.family}); see inceptionnext.models.zoo.ZOO"
        )
