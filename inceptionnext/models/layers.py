"""Building blocks shared by the zoo: the depthwise token mixers, the 1x1-conv MLP and the MLP classifier head.

Parameter names follow the official checkpoints (and timm's copies of them), so every released file loads as is.
FX keeps the mixer op whole, so a traced model still dispatches at run time (fused kernel included): timm's
tracer (features_only with feature_cls='fx', timm.layers.create_feature_extractor) keeps the mixer modules as
leaves, and any other torch.fx tracer (torchvision's create_feature_extractor) keeps `inception_dwconv` as one
leaf call. Only the first kind of graph can be scripted afterwards: TorchScript cannot read a generated list
of biases as the optional tensors the op takes, but it scripts the mixer modules themselves.
"""

from functools import partial
from typing import List, Optional, Type

import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d, register_notrace_function, register_notrace_module

from ..ops import inception_dwconv

torch.fx.wrap("inception_dwconv")  # calls from this module become leaf nodes under any torch.fx tracer
register_notrace_function(inception_dwconv)


def _depthwise(channels: int, kernel_size, dilation: int = 1) -> nn.Conv2d:
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"depthwise kernel sizes must be odd for 'same' padding, got {kh}x{kw}")
    return nn.Conv2d(
        channels,
        channels,
        (kh, kw),
        padding=(dilation * (kh // 2), dilation * (kw // 2)),
        dilation=dilation,
        groups=channels,
    )


def _check_dilation(dilation: int) -> int:
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be a positive int, got {dilation!r}")
    return dilation


@register_notrace_module
class InceptionDWConv2d(nn.Module):
    """Inception depthwise conv: channels split into identity | k x k | 1 x K | K x 1, in that order.

    Only `int(C * branch_ratio)` channels per branch are convolved; the rest pass through untouched,
    which is where InceptionNeXt's speed comes from. `fast_path` forces the fused kernel (True) or the
    plain PyTorch path (False); None lets `inceptionnext.ops` pick by device. `dilation` > 1 spaces the taps
    (dilated stages of output_stride 8/16); the weights are the same.

    Args:
        in_chs: input (and output) channels.
        square_kernel_size: the k of the k x k branch (odd).
        band_kernel_size: the K of the 1 x K and K x 1 branches (odd).
        branch_ratio: the share of channels each convolved branch gets.
        fast_path: True forces the fused kernel, False the PyTorch path, None picks by device.
        dilation: spacing of the taps (positive).

    Raises:
        ValueError: a kernel size is even, `dilation` is not a positive int, or `branch_ratio` gives less than
            one channel per branch or more than C / 3.
    """

    def __init__(
        self,
        in_chs: int,
        square_kernel_size: int = 3,
        band_kernel_size: int = 11,
        branch_ratio: float = 0.125,
        fast_path: Optional[bool] = None,
        dilation: int = 1,
    ):
        super().__init__()
        self.dilation = _check_dilation(dilation)
        gc = int(in_chs * branch_ratio)
        if gc < 1 or 3 * gc > in_chs:
            raise ValueError(
                f"InceptionDWConv2d: branch_ratio {branch_ratio} gives {gc} channels per branch for "
                f"{in_chs} input channels; need 1 <= int(C * ratio) and 3 * that <= C"
            )
        self.dwconv_hw = _depthwise(gc, square_kernel_size, dilation)
        self.dwconv_w = _depthwise(gc, (1, band_kernel_size), dilation)
        self.dwconv_h = _depthwise(gc, (band_kernel_size, 1), dilation)
        self.split_indexes = (in_chs - 3 * gc, gc, gc, gc)
        self.fast_path = fast_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = [self.dwconv_hw.weight, self.dwconv_w.weight, self.dwconv_h.weight]
        biases: List[Optional[torch.Tensor]] = [self.dwconv_hw.bias, self.dwconv_w.bias, self.dwconv_h.bias]
        return inception_dwconv(x, weights, biases, self.fast_path, self.dilation)


@register_notrace_module
class PartialDWConv2d(nn.Module):
    """Depthwise conv on the last `int(C * conv_ratio)` channels, identity on the rest (the paper's ablation).

    The weights sit under `conv`, as in the released ConvNeXt-variant checkpoints (`dwconv.conv.weight`).

    Args:
        in_chs: input (and output) channels.
        kernel_size: the conv's kernel size (odd).
        conv_ratio: the share of channels convolved.
        fast_path: True forces the fused kernel, False the PyTorch path, None picks by device.
        dilation: spacing of the taps (positive).

    Raises:
        ValueError: `conv_ratio` gives no channel or more than `in_chs`, the kernel size is even, or
            `dilation` is not a positive int.
    """

    def __init__(
        self,
        in_chs: int,
        kernel_size: int = 3,
        conv_ratio: float = 1.0,
        fast_path: Optional[bool] = None,
        dilation: int = 1,
    ):
        super().__init__()
        conv_chs = int(in_chs * conv_ratio)
        if not 1 <= conv_chs <= in_chs:
            raise ValueError(f"PartialDWConv2d: conv_ratio {conv_ratio} gives {conv_chs} of {in_chs} channels")
        self.dilation = _check_dilation(dilation)
        self.conv = _depthwise(conv_chs, kernel_size, dilation)
        self.fast_path = fast_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        biases: List[Optional[torch.Tensor]] = [self.conv.bias]
        return inception_dwconv(x, [self.conv.weight], biases, self.fast_path, self.dilation)


@register_notrace_module
class DWConv2d(nn.Conv2d):
    """Full depthwise conv ('same' padding) routed through the same fused op; keys stay `weight`/`bias`.

    Args:
        in_chs: input (and output) channels.
        kernel_size: the kernel size (odd).
        fast_path: True forces the fused kernel, False the PyTorch path, None picks by device.
        dilation: spacing of the taps (positive).

    Raises:
        ValueError: the kernel size is even or `dilation` is not a positive int.
    """

    def __init__(self, in_chs: int, kernel_size: int = 7, fast_path: Optional[bool] = None, dilation: int = 1):
        if kernel_size % 2 == 0:
            raise ValueError(f"depthwise kernel size must be odd, got {kernel_size}")
        super().__init__(
            in_chs,
            in_chs,
            kernel_size,
            padding=_check_dilation(dilation) * (kernel_size // 2),
            dilation=dilation,
            groups=in_chs,
        )
        self.dilation_rate = dilation
        self.fast_path = fast_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        biases: List[Optional[torch.Tensor]] = [self.bias]
        return inception_dwconv(x, [self.weight], biases, self.fast_path, self.dilation_rate)


class SamePadConv2d(nn.Conv2d):
    """A stride-1 conv that keeps the input size ('same'), as timm pads the downsample conv of a dilated stage:
    an odd total padding puts its extra pixel after the image (bottom, right). Keys stay `weight`/`bias`."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, dilation: int = 1):
        total = dilation * (kernel_size - 1)
        super().__init__(in_chs, out_chs, kernel_size, padding=(total + 1) // 2, dilation=dilation)
        self.crop = 2 * ((total + 1) // 2) - total  # 1 when symmetric padding added one pixel too many before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._conv_forward(x, self.weight, self.bias)
        return x[:, :, self.crop :, self.crop :] if self.crop > 0 else x


def downsample_conv(in_chs: int, out_chs: int, stride: int = 2, dilation: int = 1) -> nn.Conv2d:
    """The 2x2 conv between stages: stride 2 normally; stride 1 and 'same' padding in a dilated stage
    (output_stride 8 or 16), where the same weights see the full-resolution map."""
    if stride > 1:
        return nn.Conv2d(in_chs, out_chs, kernel_size=2, stride=stride)
    return SamePadConv2d(in_chs, out_chs, kernel_size=2, dilation=dilation)


def stage_strides_and_dilations(num_stages: int, output_stride: int, stem_stride: int = 4):
    """Per stage: (stride, (downsample dilation, block dilation), reduction), as timm's ConvNeXt and MetaNeXt
    build them: once the output stride is reached, later stages stop downsampling and dilate instead."""
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    out, reduction, dilation = [], stem_stride, 1
    for i in range(num_stages):
        stride = 2 if i > 0 else 1
        if reduction >= output_stride and stride > 1:
            dilation *= stride
            stride = 1
        reduction *= stride
        out.append((stride, (1 if dilation in (1, 2) else 2, dilation), reduction))
    return out


class ConvMlp(nn.Module):
    """Pointwise MLP as 1x1 convs, so the block stays in NCHW (or channels_last) without permutes.

    Args:
        in_features: input and output channels.
        hidden_features: channels between the two convs.
        act_layer: the activation's class.
        drop: dropout after the activation.
    """

    def __init__(self, in_features: int, hidden_features: int, act_layer: Type[nn.Module] = nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, hidden_features, kernel_size=1)
        self.norm = nn.Identity()
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden_features, in_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.norm(self.fc1(x)))))


class MlpClassifierHead(nn.Module):
    """Global pool -> Linear(C, rC) -> GELU -> LayerNorm -> dropout -> Linear(rC, classes).

    Args:
        in_features: channels of the feature map.
        num_classes: classifier outputs; 0 leaves the classifier out (pre-logits features).
        pool_type: timm's global pool type ('avg', 'max', 'avgmax', 'catavgmax').
        mlp_ratio: r, the hidden width over `in_features`.
        act_layer: the activation's class.
        norm_layer: the norm's constructor, called with the hidden width.
        drop: dropout before the classifier.

    Raises:
        ValueError: `pool_type` is empty (the head needs a global pool).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 1000,
        pool_type: str = "avg",
        mlp_ratio: float = 3,
        act_layer: Type[nn.Module] = nn.GELU,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        drop: float = 0.0,
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
        """New classifier (fine-tuning); `reset_other` also drops the pre-logits MLP (pool -> classifier only).

        Args:
            num_classes: the new classifier's outputs; 0 leaves it out.
            pool_type: a new global pool type; None keeps the current one.
            reset_other: also replace the pre-logits MLP by identities.

        Raises:
            ValueError: `pool_type` is empty, or changes the pooled width without `reset_other`.
        """
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
