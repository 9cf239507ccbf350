"""Building blocks shared by the zoo: the depthwise token mixers, the 1x1-conv MLP and the MLP classifier head.

Parameter names follow the official checkpoints (and timm's copies of them), so every released file loads as is.
"""
from functools import partial
from typing import Optional, Type

import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d

from ..ops import inception_dwconv


def _depthwise(channels: int, kernel_size) -> nn.Conv2d:
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"depthwise kernel sizes must be odd for 'same' padding, got {kh}x{kw}")
    return nn.Conv2d(channels, channels, (kh, kw), padding=(kh // 2, kw // 2), groups=channels)


class InceptionDWConv2d(nn.Module):
    """Inception depthwise conv: channels split into identity | k x k | 1 x K | K x 1, in that order.

    Only `int(C * branch_ratio)` channels per branch are convolved; the rest pass through untouched,
    which is where InceptionNeXt's speed comes from. `fast_path` forces the fused kernel (True) or the
    plain PyTorch path (False); None lets `inceptionnext.ops` pick by device.
    """

    def __init__(
            self,
            in_chs: int,
            square_kernel_size: int = 3,
            band_kernel_size: int = 11,
            branch_ratio: float = 0.125,
            fast_path: Optional[bool] = None,
    ):
        super().__init__()
        gc = int(in_chs * branch_ratio)
        if gc < 1 or 3 * gc > in_chs:
            raise ValueError(
                f"InceptionDWConv2d: branch_ratio {branch_ratio} gives {gc} channels per branch for "
                f"{in_chs} input channels; need 1 <= int(C * ratio) and 3 * that <= C")
        self.dwconv_hw = _depthwise(gc, square_kernel_size)
        self.dwconv_w = _depthwise(gc, (1, band_kernel_size))
        self.dwconv_h = _depthwise(gc, (band_kernel_size, 1))
        self.split_indexes = (in_chs - 3 * gc, gc, gc, gc)
        self.fast_path = fast_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        convs = (self.dwconv_hw, self.dwconv_w, self.dwconv_h)
        return inception_dwconv(x, [c.weight for c in convs], [c.bias for c in convs], fast=self.fast_path)


class PartialDWConv2d(nn.Module):
    """Depthwise conv on the last `int(C * conv_ratio)` channels, identity on the rest (the paper's ablation).

    The weights sit under `conv`, as in the released ConvNeXt-variant checkpoints (`dwconv.conv.weight`).
    """

    def __init__(self, in_chs: int, kernel_size: int = 3, conv_ratio: float = 1.0, fast_path: Optional[bool] = None):
        super().__init__()
        conv_chs = int(in_chs * conv_ratio)
        if not 1 <= conv_chs <= in_chs:
            raise ValueError(f"PartialDWConv2d: conv_ratio {conv_ratio} gives {conv_chs} of {in_chs} channels")
        self.conv = _depthwise(conv_chs, kernel_size)
        self.fast_path = fast_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return inception_dwconv(x, [self.conv.weight], [self.conv.bias], fast=self.fast_path)


class DWConv2d(nn.Conv2d):
    """Full depthwise conv ('same' padding) routed through the same fused op; keys stay `weight`/`bias`."""

    def __init__(self, in_chs: int, kernel_size: int = 7, fast_path: Optional[bool] = None):
        if kernel_size % 2 == 0:
            raise ValueError(f"depthwise kernel size must be odd, got {kernel_size}")
        super().__init__(in_chs, in_chs, kernel_size, padding=kernel_size // 2, groups=in_chs)
        self.fast_path = fast_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return inception_dwconv(x, [self.weight], [self.bias], fast=self.fast_path)


class ConvMlp(nn.Module):
    """Pointwise MLP as 1x1 convs, so the block stays in NCHW (or channels_last) without permutes."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: Type[nn.Module] = nn.GELU, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, hidden_features, kernel_size=1)
        self.norm = nn.Identity()
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden_features, in_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.norm(self.fc1(x)))))


class MlpClassifierHead(nn.Module):
    """Global pool -> Linear(C, rC) -> GELU -> LayerNorm -> dropout -> Linear(rC, classes)."""

    def __init__(
            self,
            in_features: int,
            num_classes: int = 1000,
            pool_type: str = 'avg',
            mlp_ratio: float = 3,
            act_layer: Type[nn.Module] = nn.GELU,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            drop: float = 0.,
    ):
        super().__init__()
        if not pool_type:
            raise ValueError("MlpClassifierHead needs a global pool type (e.g. 'avg'); it cannot be disabled")
        self.in_features = in_features
        self.num_features = hidden = int(mlp_ratio * in_features)
        self.global_pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=True)
        self.fc1 = nn.Linear(in_features * self.global_pool.feat_mult(), hidden)
        self.act = act_layer()
        self.norm = norm_layer(hidden)
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: Optional[str] = None, reset_other: bool = False):
        """New classifier (fine-tuning); `reset_other` also drops the pre-logits MLP (pool -> classifier only)."""
        ref = next(self.parameters(), None)  # the new classifier's device and dtype, read before fc1 can go
        if pool_type is not None:
            if not pool_type:
                raise ValueError("MlpClassifierHead needs a global pool type; it cannot be disabled")
            pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=True)
            if not reset_other and pool.feat_mult() != self.global_pool.feat_mult():
                raise ValueError(f"pool '{pool_type}' changes the pooled width; pass reset_other=True")
            self.global_pool = pool
        if reset_other:
            self.fc1, self.act, self.norm = nn.Identity(), nn.Identity(), nn.Identity()
            self.num_features = self.in_features * self.global_pool.feat_mult()
        fc2 = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if ref is not None:
            fc2 = fc2.to(device=ref.device, dtype=ref.dtype)
        self.fc2 = fc2.train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.norm(self.act(self.fc1(self.global_pool(x)))))
        return x if pre_logits else self.fc2(x)
