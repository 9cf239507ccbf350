"""The plain PyTorch Inception depthwise conv: the reference every fast path is held to, and the CPU path."""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F


def branch_split_sizes(num_channels: int, weights: Sequence[torch.Tensor]) -> List[int]:
    """Channel split (identity, branch 0, branch 1, ...) implied by the branch weights."""
    branch_chs = [int(w.shape[0]) for w in weights]
    num_identity = num_channels - sum(branch_chs)
    if num_identity < 0:
        raise ValueError(
            f"branches need {sum(branch_chs)} channels but the input has {num_channels}")
    return [num_identity] + branch_chs


def inception_dwconv_reference(
        x: torch.Tensor,
        weights: Sequence[torch.Tensor],
        biases: Sequence[Optional[torch.Tensor]],
) -> torch.Tensor:
    """Identity channels first, then one depthwise conv per branch (weight (c, 1, kh, kw), 'same' zero padding)."""
    splits = branch_split_sizes(x.shape[1], weights)
    parts = list(torch.split(x, splits, dim=1))
    out = [parts[0]]
    for part, w, b in zip(parts[1:], weights, biases):
        kh, kw = w.shape[-2:]
        out.append(F.conv2d(part, w, b, padding=(kh // 2, kw // 2), groups=w.shape[0]))
    return torch.cat(out, dim=1)
