"""Parameter and multiply-accumulate counts, taken on the meta device: shapes only, no memory, no arithmetic."""

from typing import Optional, Sequence, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from .dense import create_any_model


def count_params_and_macs(name: str, input_size: Optional[Sequence[int]] = None, **kwargs) -> Tuple[int, int]:
    """(parameters, MACs for one image) of model `name` (timm or dense) at its pretrained input size or `input_size` (C, H, W)."""
    with torch.device("meta"):
        model = create_any_model(name, **kwargs).eval()
        size = tuple(input_size or model.pretrained_cfg.get("input_size") or (3, 224, 224))
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.empty(1, *size))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2
