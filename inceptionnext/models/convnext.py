"""The paper's ConvNeXt ablations (smaller kernels, partial depthwise convs) in the official ConvNeXt key layout.

Layout as released: `downsample_layers.{i}` (stem = index 0), `stages.{i}.{j}` blocks with `dwconv`, `norm`,
`pwconv1`, `pwconv2`, `gamma`; final `norm` and `head`. A partial conv keeps its weights under `dwconv.conv`.
"""

from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d, SelectAdaptivePool2d, trunc_normal_
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices

from .layers import DWConv2d, PartialDWConv2d, downsample_conv, stage_strides_and_dilations
from .model_api import TimmModelMixin, check_input_channels, drop_path_schedule


class ConvNeXtBlock(nn.Module):
    """dwconv -> (to NHWC) LayerNorm -> Linear 4x -> GELU -> Linear -> layer scale -> (to NCHW) -> residual.

    Args:
        dim: channels.
        dwconv: the depthwise conv (a `DWConv2d` or `PartialDWConv2d`).
        drop_path: stochastic depth rate of the residual branch.
        ls_init_value: initial layer scale; 0 for none.
    """

    def __init__(self, dim: int, dwconv: nn.Module, drop_path: float = 0.0, ls_init_value: float = 1e-6):
        super().__init__()
        self.dwconv = dwconv
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim)) if ls_init_value > 0 else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        if self.gamma is not None:
            x = x * self.gamma
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))


def make_dwconv(
    dim: int, kernel_size: int, conv_ratio: float, fast_path: Optional[bool], dilation: int = 1
) -> nn.Module:
    """Full depthwise conv at ratio 1 (key `dwconv.weight`), else a partial one (key `dwconv.conv.weight`)."""
    if conv_ratio >= 1.0:
        return DWConv2d(dim, kernel_size, fast_path=fast_path, dilation=dilation)
    return PartialDWConv2d(dim, kernel_size, conv_ratio=conv_ratio, fast_path=fast_path, dilation=dilation)


def make_pool(global_pool: str) -> SelectAdaptivePool2d:
    """The head's global pool; the LayerNorm after it needs C-wide features. '' keeps every position (the head
    then norms and classifies each one, as timm's ConvNeXt does)."""
    pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
    if pool.feat_mult() != 1:
        raise ValueError(
            f"ConvNeXt's head norms the pooled C-wide features, so global_pool must keep that width "
            f"('avg', 'max', 'avgmax', ..., or '' for none), got {global_pool!r}"
        )
    return pool


class ConvNeXt(TimmModelMixin, nn.Module):
    """The paper's ConvNeXt variants. `output_stride` 8 or 16 keeps the later stages at that resolution (stride-1
    downsample convs, dilated depthwise convs), as timm's ConvNeXt does; the weights are the same.

    Args:
        in_chans: input channels.
        num_classes: classes of the head; 0 gives a model without a classifier.
        global_pool: timm's pool type that keeps the width ('avg', 'max', ...), or '' to classify every
            position.
        depths: blocks per stage.
        dims: channels per stage.
        kernel_size: the depthwise kernel size (odd).
        conv_ratio: the share of channels the depthwise conv sees; below 1 the rest pass through
            (`PartialDWConv2d`).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly to this rate over the blocks.
        ls_init_value: initial layer scale; 0 for none.
        head_init_scale: factor on the classifier's initial weights and bias.
        fast_path: the fused mixer kernel: True or False forces it on or off, None decides by device.
        output_stride: 32, 16 or 8.

    Raises:
        ValueError: `depths` and `dims` differ in length, `output_stride` is not 8, 16 or 32, `global_pool`
            changes the width, or the kernel size is even.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Tuple[int, ...] = (3, 3, 9, 3),
        dims: Tuple[int, ...] = (96, 192, 384, 768),
        kernel_size: int = 7,
        conv_ratio: float = 1.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        ls_init_value: float = 1e-6,
        head_init_scale: float = 1.0,
        fast_path: Optional[bool] = None,
        output_stride: int = 32,
    ):
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError(f"depths {tuple(depths)} and dims {tuple(dims)} must have the same length")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        layout = stage_strides_and_dilations(len(dims), output_stride)
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))]
        )
        for i in range(len(dims) - 1):
            stride, dilation, _ = layout[i + 1]
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm2d(dims[i], eps=1e-6), downsample_conv(dims[i], dims[i + 1], stride, dilation[0])
                )
            )
        rates = drop_path_schedule(drop_path_rate, depths)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(
                    *[
                        ConvNeXtBlock(
                            dim,
                            make_dwconv(dim, kernel_size, conv_ratio, fast_path, layout[i][1][1]),
                            rates[i][j],
                            ls_init_value,
                        )
                        for j in range(depth)
                    ]
                )
                for i, (depth, dim) in enumerate(zip(depths, dims))
            ]
        )
        self.feature_info = [
            dict(num_chs=dim, reduction=layout[i][2], module=f"stages.{i}") for i, dim in enumerate(dims)
        ]
        self.num_features = self.head_hidden_size = dims[-1]
        self.pool = make_pool(global_pool)
        self.per_position = not global_pool  # global_pool='': norm and classifier at every position
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        if isinstance(self.head, nn.Linear):
            self.head.weight.data.mul_(head_init_scale)
            self.head.bias.data.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module):
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.is_meta:  # meta: shapes only, nothing to draw
            trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    # --- timm model API ---
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        """Parameter groups by name, for timm's layer-wise lr decay.

        Args:
            coarse: one group per stage instead of one per block.

        Returns:
            timm's group matcher: `stem` and `blocks` regular expressions.
        """
        return dict(
            stem=r"^downsample_layers\.0\.",
            blocks=[(r"^downsample_layers\.([1-9]\d*)", None), (r"^stages\.(\d+)", None)]
            if coarse
            else [(r"^downsample_layers\.([1-9]\d*)", (0,)), (r"^stages\.(\d+)\.(\d+)", None)],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        """Recompute the stages' activations in the backward pass instead of keeping them (less memory).

        Args:
            enable: on or off.
        """
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classifier layer.

        Returns:
            The final Linear (an Identity without classes).
        """
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        """A new classifier, on the model's device and dtype (fine-tuning).

        Args:
            num_classes: its outputs; 0 leaves it out.
            global_pool: a new pool type; None keeps the current one.

        Raises:
            ValueError: `global_pool` changes the pooled width.
        """
        if global_pool is not None:
            self.pool = make_pool(global_pool)
            self.global_pool = global_pool
            self.per_position = not global_pool
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.head = (
            nn.Linear(self.num_features, num_classes).to(ref.device, ref.dtype) if num_classes > 0 else nn.Identity()
        )

    def _stem_and_stages(self):
        stages = [self.stages[0]] + [
            nn.Sequential(ds, stage) for ds, stage in zip(self.downsample_layers[1:], self.stages[1:])
        ]
        return self.downsample_layers[0], stages

    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ):
        """Drop the stages after the last requested feature (timm's `forward_intermediates` API).

        Args:
            indices: the last n stages (an int) or the stage indices to keep.
            prune_norm: also drop the final norm.
            prune_head: also drop the classifier.

        Returns:
            The stage indices kept.
        """
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        self.downsample_layers = self.downsample_layers[: max_index + 1]
        self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.norm = nn.Identity()
        if prune_head or max_index < len(self.feature_info) - 1:
            self.reset_classifier(0)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, (B, C, H / output_stride, W / output_stride).

        Args:
            x: images, (B, in_chans, H, W).

        Returns:
            The feature map of the last stage.

        Raises:
            ValueError: `x` is not a (B, in_chans, H, W) tensor.
        """
        if not torch.jit.is_scripting():
            check_input_channels(self, x)
        for ds, stage in zip(self.downsample_layers, self.stages):
            x = ds(x)
            x = checkpoint_seq(stage, x) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool -> LayerNorm -> dropout -> classifier; with global_pool='' each position gets the norm and the
        classifier (NCHW in and out: (B, num_classes or C, H, W)).

        Args:
            x: the last stage's feature map.
            pre_logits: stop before the classifier.

        Returns:
            Logits (or pre-logits features).
        """
        if self.per_position:
            x = self.head_drop(self.norm(x.permute(0, 2, 3, 1)))
            return (x if pre_logits else self.head(x)).permute(0, 3, 1, 2)
        x = self.head_drop(self.norm(self.pool(x)))
        return x if pre_logits else self.head(x)
