"""Deploy-time speed levers: opt-in changes to a folded model that trade exactness for CPU speed.

The exact model is the default (no levers). A lever is applied to a folded copy, the copy remembers it
(``deploy_levers``), and `export` / `quantize` record it in the file they write (``inceptionnext.levers``), so a
file always says which numerics it runs. `quantize` checks a lever's int8 file against the EXACT fp32 model, so its
accuracy floor guards every lever.

Levers measured and kept (OpenVINO int8, AVX-512 VNNI Zen 5, interleaved with ResNet-50 and timm's port):

* ``fast-act``: the MLP's exact GELU becomes x * clip(0.2778 x + 1/2, 0, 1), written as a native HSwish with its
  input scale k = 6 * 0.2778 folded into fc1 and 1/k into fc2, so OpenVINO and oneDNN fuse it into fc1 like GELU.
  Max |error| vs GELU is 0.065 on [-8, 8]. +3-10% in OpenVINO int8, ~0 in fp32/bf16. Passes the floor on the
  trained digits atto (SQNR 35.7 dB, as the exact model); moved a half-trained T by 2.5 pt of agreement, so it is
  opt-in and the floor decides per checkpoint.

Measured and not shipped (slower): GELU tanh form (0.89-0.96x), the mixer as 1/2/3 depthwise convs without
split/concat (0.65-0.87x), channel permutation at export (1.0x), depthwise convs kept float (0.81-0.92x).
"""

import copy
import json
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.fold import FusedMetaNeXtBlock, is_folded, is_metanext_block, reparameterize_model
from ..models.layers import ConvMlp

__all__ = [
    "Lever",
    "LEVERS",
    "LEVERS_KEY",
    "HSWISH_SLOPE",
    "parse_levers",
    "apply_levers",
    "levers_of",
    "lever_label",
    "levers_metadata",
    "fast_activation",
    "activation_error",
]

LEVERS_KEY = "inceptionnext.levers"  # the file's record: a JSON list of lever names ([] = the exact model)
HSWISH_SLOPE = 0.2778  # a in x * clip(a x + 1/2, 0, 1): the minimax fit to exact GELU on [-8, 8]


@dataclass(frozen=True)
class Lever:
    """One deploy-time change: what it does (for reports) and the function that applies it to a folded copy."""

    name: str
    description: str
    apply: Callable[[nn.Module], None]  # changes a folded model in place


def activation_error(lo: float = -8.0, hi: float = 8.0, n: int = 160001) -> float:
    """max |fast-act(x) - GELU(x)| over [lo, hi] (float64): the lever's error on one activation."""
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    return (x * torch.clamp(HSWISH_SLOPE * x + 0.5, 0.0, 1.0) - F.gelu(x)).abs().max().item()


def fast_activation(model: nn.Module) -> None:
    """Every block MLP's exact GELU -> HSwish(k x) / k with k = 6a (the head keeps its GELU), in place."""
    k = 6.0 * HSWISH_SLOPE
    count = 0
    for m in model.modules():
        if isinstance(m, ConvMlp) and isinstance(m.act, nn.GELU):
            if m.act.approximate != "none":
                raise ValueError(f"fast-act replaces an exact GELU, not GELU(approximate={m.act.approximate!r})")
            m.act = nn.Hardswish()
            with torch.no_grad():  # HSwish(k x) / k: k into fc1's rows and bias, 1/k into fc2's weights
                m.fc1.weight.mul_(k)
                if m.fc1.bias is not None:
                    m.fc1.bias.mul_(k)
                m.fc2.weight.div_(k)
            count += 1
    if not count:
        raise ValueError("fast-act found no GELU MLP to change (is this a MetaNeXt model?)")
    for m in model.modules():
        if isinstance(m, FusedMetaNeXtBlock):
            m._fusable = FusedMetaNeXtBlock.can_fuse(m.mlp)  # oneDNN fuses hardswish as it fuses GELU


LEVERS: Dict[str, Lever] = {
    "fast-act": Lever(
        "fast-act", "MLP GELU -> x*clip(0.2778x+1/2,0,1) as a fused HSwish (max |err| 0.065)", fast_activation
    ),
}


def parse_levers(spec: Union[None, str, Iterable[str]]) -> Tuple[str, ...]:
    """Lever names from a comma list or names ('' / 'exact' / None: none), in LEVERS' order, each once."""
    if spec is None:
        return ()
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) for n in n.split(",")]
    names = [n for n in names if n and n != "exact"]
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        raise ValueError(f"unknown lever(s) {', '.join(unknown)}; levers: {', '.join(LEVERS)} (or 'exact')")
    return tuple(n for n in LEVERS if n in names)


def levers_of(model: nn.Module) -> Tuple[str, ...]:
    """The levers a model (or a runtime file's model) runs; () for the exact model."""
    return tuple(getattr(model, "deploy_levers", None) or ())


def lever_label(levers: Iterable[str]) -> str:
    """'exact' or the lever names joined with '+', for tables."""
    return "+".join(levers) or "exact"


def levers_metadata(levers: Iterable[str]) -> Dict[str, str]:
    """The file record of the levers (ONNX metadata property / OpenVINO rt_info)."""
    return {LEVERS_KEY: json.dumps(list(levers))}


def apply_levers(model: nn.Module, levers: Union[None, str, Iterable[str]]) -> nn.Module:
    """An eval-mode folded copy of `model` with `levers` applied (none: the exact folded model); `model` is kept."""
    levers = parse_levers(levers)
    if levers_of(model):
        raise ValueError(f"the model already runs levers {lever_label(levers_of(model))}; start from the exact model")
    model = model.eval()
    if any(is_metanext_block(m) for m in model.modules()) and not is_folded(model):
        out = reparameterize_model(model)
    else:
        out = copy.deepcopy(model)
    for name in levers:
        LEVERS[name].apply(out)
    if levers:
        out.deploy_levers = levers
    return out
