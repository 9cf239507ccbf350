"""`inceptionnext info`: one model in detail: its stages and token mixers, the feature channels and strides a
backbone user gets, the preprocessing its weights expect, where the weights come from, the paper's figures.

    inceptionnext info inceptionnext_t
    inceptionnext info inceptionnext_b_384 --json
"""

import argparse
import json
from typing import Any, Dict, List

import timm
import torch
import torch.nn as nn

from ..model_file import check_model_name
from ..models.complexity import count_params_and_macs
from ..models.layers import DWConv2d, PartialDWConv2d
from ..models.zoo import get_entry, paper_figures
from .common import reports_errors, summary

PREPROCESSING_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")


def describe_mixer(mixer: nn.Module) -> str:
    """A token mixer in words: which channels each branch convolves with which kernel (ours, or timm's
    InceptionDWConv2d, which has the same parts)."""
    if hasattr(mixer, "split_indexes") and hasattr(mixer, "dwconv_hw"):
        ident, *branches = mixer.split_indexes
        kernels = ["x".join(map(str, c.kernel_size)) for c in (mixer.dwconv_hw, mixer.dwconv_w, mixer.dwconv_h)]
        return f"identity {ident} | " + " | ".join(f"{k} on {n}" for k, n in zip(kernels, branches))
    if isinstance(mixer, PartialDWConv2d):
        conv = mixer.conv
        return f"{'x'.join(map(str, conv.kernel_size))} on {conv.in_channels} channels, identity on the rest"
    if isinstance(mixer, (DWConv2d, nn.Conv2d)):
        return f"{'x'.join(map(str, mixer.kernel_size))} depthwise on all {mixer.in_channels} channels"
    return type(mixer).__name__


def _first_mixer(stage: nn.Module) -> nn.Module:
    for m in stage.modules():
        if isinstance(m, (PartialDWConv2d, DWConv2d)) or hasattr(m, "split_indexes"):
            return m
    return nn.Identity()


def _depth(stage: nn.Module) -> int:
    blocks = getattr(stage, "blocks", stage)
    return len(blocks) if isinstance(blocks, nn.Sequential) else 1


def model_info(name: str) -> Dict[str, Any]:
    check_model_name(name)
    with torch.device("meta"):
        model = timm.create_model(name)
    params, macs = count_params_and_macs(name)
    cfg = dict(model.pretrained_cfg or {})
    info: Dict[str, Any] = dict(
        name=name,
        class_name=type(model).__name__,
        params_m=round(params / 1e6, 2),
        macs_g=round(macs / 1e9, 2),
        num_classes=model.num_classes,
        num_features=getattr(model, "num_features", None),
        feature_channels=[f["num_chs"] for f in model.feature_info],
        feature_strides=[f["reduction"] for f in model.feature_info],
        preprocessing={k: cfg.get(k) for k in PREPROCESSING_KEYS},
        pretrained=dict(
            tags=timm.list_pretrained(f"{name.split('.')[0]}.*"), hf_hub_id=cfg.get("hf_hub_id"), url=cfg.get("url")
        ),
        paper=paper_figures(name),
    )
    try:
        entry = get_entry(name)
        info.update(
            alias=entry.alias if entry.alias != name else entry.name, family=entry.family, timm_name=entry.timm_name
        )
    except KeyError:
        pass
    stages = getattr(model, "stages", None)
    if isinstance(stages, (nn.Sequential, nn.ModuleList)):
        info["stages"] = [
            dict(
                depth=_depth(s),
                channels=f["num_chs"],
                stride=f["reduction"],
                token_mixer=describe_mixer(_first_mixer(s)),
            )
            for s, f in zip(stages, model.feature_info)
        ]
    return info


def format_info(info: Dict[str, Any]) -> str:
    fmt = lambda v: "x".join(map(str, v)) if isinstance(v, (list, tuple)) and len(v) == 3 and v[0] == 3 else v  # noqa
    lines: List[str] = [f"{info['name']} ({info['class_name']})"]
    if info.get("alias"):
        lines[0] += f", also {info['alias']}; timm's own implementation: {info.get('timm_name') or '-'}"
    pre = info["preprocessing"]
    lines += [
        f"params {info['params_m']:.2f} M, MACs {info['macs_g']:.2f} G at {fmt(pre['input_size'])}, "
        f"{info['num_classes']} classes from {info['num_features']} features"
    ]
    if info.get("stages"):
        lines += ["", "stage  depth  channels  stride  token mixer"]
        lines += [
            f"{i:<5}  {s['depth']:<5}  {s['channels']:<8}  {s['stride']:<6}  {s['token_mixer']}"
            for i, s in enumerate(info["stages"])
        ]
    lines += [
        "",
        f"features (features_only=True / forward_intermediates): channels {info['feature_channels']}, "
        f"strides {info['feature_strides']}",
        "preprocessing: " + ", ".join(f"{k} {fmt(v)}" for k, v in pre.items() if v is not None),
    ]
    pt = info["pretrained"]
    lines.append(
        "pretrained: "
        + (", ".join(pt["tags"]) or "none")
        + "".join(f"\n  {label}: {pt[key]}" for label, key in (("hub", "hf_hub_id"), ("release", "url")) if pt.get(key))
    )
    if info.get("paper"):
        p = info["paper"]
        lines.append(
            f"InceptionNeXt paper: top-1 {p['top1']}%, {p['params']} M params, {p['macs']} G MACs, "
            f"train {p['train_ips']} / inference {p['infer_ips']} img/s (A100, fp32, batch 128)"
        )
    return "\n".join(lines)


@reports_errors()
def cli(argv=None, prog: str = "inceptionnext info") -> int:
    p = argparse.ArgumentParser(prog=prog, description=summary(__doc__))
    p.add_argument("model", help="model name (any timm name; inceptionnext names get the most detail)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    a = p.parse_args(argv)
    info = model_info(a.model)
    print(json.dumps(info, indent=2, default=list) if a.json else format_info(info))
    return 0
