"""The plain PyTorch Inception depthwise conv: the reference every fast path is held to, the CPU path, and the
path TorchScript compiles (so it is written in the subset of Python that TorchScript takes)."""

from typing import List, Optional

import torch
import torch.nn.functional as F


def branch_split_sizes(num_channels: int, weights: List[torch.Tensor]) -> List[int]:
    """Channel split (identity, branch 0, branch 1, ...) implied by the branch weights.

    Args:
        num_channels: the input's channels.
        weights: the branch weights, (c, 1, kh, kw) each.

    Returns:
        [identity channels, branch 0 channels, branch 1 channels, ...].

    Raises:
        ValueError: the branches need more channels than the input has.
    """
    branch_chs = [int(w.shape[0]) for w in weights]
    num_identity = num_channels - sum(branch_chs)
    if num_identity < 0:
        raise ValueError(f"branches need {sum(branch_chs)} channels but the input has {num_channels}")
    return [num_identity] + branch_chs


def inception_dwconv_reference(
    x: torch.Tensor,
    weights: List[torch.Tensor],
    biases: List[Optional[torch.Tensor]],
    dilation: int = 1,
) -> torch.Tensor:
    """Identity channels first, then one depthwise conv per branch (weight (c, 1, kh, kw), 'same' zero padding,
    taps `dilation` apart).

    Args:
        x: input, (B, C, H, W).
        weights: one depthwise weight per branch.
        biases: one bias or None per branch.
        dilation: spacing of the taps.

    Returns:
        The output, the same shape as `x`.

    Raises:
        ValueError: the branches need more channels than `x` has.
    """
    splits = branch_split_sizes(x.shape[1], weights)
    parts = torch.split(x, splits, dim=1)
    out = [parts[0]]
    for i in range(len(weights)):
        w = weights[i]
        pad = [dilation * (w.shape[2] // 2), dilation * (w.shape[3] // 2)]
        out.append(F.conv2d(parts[i + 1], w, biases[i], padding=pad, dilation=dilation, groups=w.shape[0]))
    return torch.cat(out, dim=1)
