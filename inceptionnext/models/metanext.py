"""MetaNeXt: the block, the stage builder and the model that InceptionNeXt instantiates.

Block: token mixer -> BatchNorm -> 1x1-conv MLP -> layer scale -> drop path -> residual.
The module tree and state-dict keys match the official release and timm's `inception_next_*`.
"""

from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import DropPath, trunc_normal_
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices

from .fold import fold_metanext_block, fold_sequential
from .layers import ConvMlp, InceptionDWConv2d, MlpClassifierHead, downsample_conv, stage_strides_and_dilations
from .model_api import TimmModelMixin, check_input_channels, drop_path_schedule


class FoldableSequential(nn.Sequential):
    """A conv + BatchNorm (stem) or BatchNorm + conv (downsample) pair; `reparameterize()` folds the BN for
    inference, the hook `timm.utils.reparameterize_model` looks for. Keys stay `0` and `1`."""

    def reparameterize(self):
        fold_sequential(self)


class MetaNeXtBlock(nn.Module):
    """token mixer -> norm -> MLP -> layer scale -> residual: one block of a MetaNeXt stage.

    Args:
        dim: channels.
        token_mixer: builds the spatial mixer from the channel count (and `dilation=` when above 1).
        norm_layer: the norm after the mixer (BatchNorm: foldable for inference).
        mlp_ratio: MLP expansion.
        act_layer: the MLP activation.
        ls_init_value: initial layer scale; None or 0 for none.
        drop_path: stochastic depth rate of the residual branch.
        dilation: dilation of the mixer (dilated stages).
    """

    def __init__(
        self,
        dim: int,
        token_mixer: Callable[[int], nn.Module] = InceptionDWConv2d,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        mlp_ratio: float = 4,
        act_layer=nn.GELU,
        ls_init_value: Optional[float] = 1e-6,
        drop_path: float = 0.0,
        dilation: int = 1,
    ):
        super().__init__()
        self.token_mixer = token_mixer(dim, dilation=dilation) if dilation > 1 else token_mixer(dim)
        self.norm = norm_layer(dim)
        self.mlp = ConvMlp(dim, int(mlp_ratio * dim), act_layer=act_layer)
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim)) if ls_init_value else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.mlp(self.norm(self.token_mixer(x)))
        if self.gamma is not None:
            x = x * self.gamma.reshape(1, -1, 1, 1)
        return self.drop_path(x) + shortcut

    def reparameterize(self):
        """Inference form: BatchNorm folded into mlp.fc1, layer scale into mlp.fc2 (see inceptionnext.deploy)."""
        fold_metanext_block(self)


class MetaNeXtStage(nn.Module):
    """Optional downsample (BatchNorm + 2x2 stride-2 conv) followed by `depth` blocks.

    In a dilated stage (output_stride 8/16) the downsample conv keeps the resolution (stride 1, 'same' padding,
    taps `dilation[0]` apart) and the blocks' mixers are dilated by `dilation[1]`; the weights are unchanged.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        depth: number of blocks.
        downsample: start with the downsample; without it `in_chs` must equal `out_chs`.
        drop_path_rates: stochastic depth per block; None for none.
        norm_layer: the norm of the downsample and the blocks.
        stride: the downsample conv's stride (1 in a dilated stage).
        dilation: (downsample dilation, block dilation).
        **block_kwargs: passed to each `MetaNeXtBlock`.

    Raises:
        ValueError: a stage without downsample would change the width.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        downsample: bool = True,
        drop_path_rates: Optional[Sequence[float]] = None,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        stride: int = 2,
        dilation: Tuple[int, int] = (1, 1),
        **block_kwargs,
    ):
        super().__init__()
        self.grad_checkpointing = False
        if downsample:
            self.downsample = FoldableSequential(
                norm_layer(in_chs), downsample_conv(in_chs, out_chs, stride, dilation[0])
            )
        elif in_chs != out_chs:
            raise ValueError(f"a stage without downsampling cannot change width ({in_chs} -> {out_chs})")
        else:
            self.downsample = nn.Identity()
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.0] * depth
        self.blocks = nn.Sequential(
            *[
                MetaNeXtBlock(out_chs, norm_layer=norm_layer, drop_path=rates[i], dilation=dilation[1], **block_kwargs)
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class MetaNeXt(TimmModelMixin, nn.Module):
    """MetaNeXt backbone + MLP head: the InceptionNeXt architecture. Usually built by name through timm
    (`timm.create_model("inceptionnext_t")`), which also loads weights.

    Args:
        in_chans: input channels.
        num_classes: classes of the head; 0 gives a model without a classifier.
        global_pool: timm's pool type, `"avg"` by default (the MLP head pools first, so `""`, no pooling, is
            refused).
        depths: blocks per stage.
        dims: channels per stage.
        token_mixers: one callable `dim -> nn.Module` or one per stage (e.g. `partial(InceptionDWConv2d, ...)`);
            with `output_stride` 8 or 16 it must also take `dilation=`.
        norm_layer: the normalization of the stem and the blocks (BatchNorm: foldable for inference).
        act_layer: the MLP activation.
        mlp_ratios: MLP expansion per stage (one value or one per stage).
        head_mlp_ratio: expansion of the classifier's MLP head.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly to this rate over the blocks.
        ls_init_value: initial layer scale; None for no layer scale.
        fast_path: the fused Triton mixer kernel on CUDA: True or False forces it on or off, None decides
            (also `INCEPTIONNEXT_FAST_PATH`).
        output_stride: 32, 16 or 8; below 32 the later stages keep their resolution and dilate their depthwise
            kernels (same weights).

    Raises:
        ValueError: `depths` and `dims` differ in length, `output_stride` is not 8, 16 or 32, `global_pool` is
            empty, or a mixer's settings do not fit its stage's width.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Tuple[int, ...] = (3, 3, 9, 3),
        dims: Tuple[int, ...] = (96, 192, 384, 768),
        token_mixers: Union[Callable, Sequence[Callable]] = InceptionDWConv2d,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer=nn.GELU,
        mlp_ratios: Union[float, Sequence[float]] = (4, 4, 4, 3),
        head_mlp_ratio: float = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        ls_init_value: Optional[float] = 1e-6,
        fast_path: Optional[bool] = None,
        output_stride: int = 32,
    ):
        super().__init__()
        num_stages = len(depths)
        if len(dims) != num_stages:
            raise ValueError(f"depths {tuple(depths)} and dims {tuple(dims)} must have the same length")
        token_mixers = list(token_mixers) if isinstance(token_mixers, (list, tuple)) else [token_mixers] * num_stages
        mlp_ratios = list(mlp_ratios) if isinstance(mlp_ratios, (list, tuple)) else [mlp_ratios] * num_stages
        if fast_path is not None:
            token_mixers = [partial(m, fast_path=fast_path) for m in token_mixers]
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate

        self.stem = FoldableSequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), norm_layer(dims[0]))
        rates = drop_path_schedule(drop_path_rate, depths)
        self.feature_info = []
        stages, prev_chs = [], dims[0]
        for i, (stride, dilation, reduction) in enumerate(stage_strides_and_dilations(num_stages, output_stride)):
            stages.append(
                MetaNeXtStage(
                    prev_chs,
                    dims[i],
                    depths[i],
                    downsample=i > 0,
                    drop_path_rates=rates[i],
                    norm_layer=norm_layer,
                    stride=stride,
                    dilation=dilation,
                    token_mixer=token_mixers[i],
                    mlp_ratio=mlp_ratios[i],
                    act_layer=act_layer,
                    ls_init_value=ls_init_value,
                )
            )
            prev_chs = dims[i]
            self.feature_info.append(dict(num_chs=prev_chs, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = prev_chs
        self.head = MlpClassifierHead(
            self.num_features, num_classes, pool_type=global_pool, mlp_ratio=head_mlp_ratio, drop=drop_rate
        )
        self.head_hidden_size = self.head.num_features
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module):
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.is_meta:  # meta: shapes only, nothing to draw
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
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
            stem=r"^stem",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        """Recompute the blocks' activations in the backward pass instead of keeping them (less memory).

        Args:
            enable: on or off.
        """
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classifier layer.

        Returns:
            The head's final Linear (an Identity without classes).
        """
        return self.head.fc2

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None, reset_other: bool = False):
        """A new classifier, on the model's device and dtype (fine-tuning).

        Args:
            num_classes: its outputs; 0 leaves it out.
            global_pool: a new pool type; None keeps the current one.
            reset_other: also drop the head's pre-logits MLP (pool -> classifier only).

        Raises:
            ValueError: `global_pool` is empty, or changes the pooled width without `reset_other`.
        """
        self.head.reset(num_classes, global_pool, reset_other=reset_other)
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.head.to(device=ref.device, dtype=ref.dtype)  # a head left without parameters (pruned) had no reference
        self.head_hidden_size = self.head.num_features
        if global_pool is not None:
            self.global_pool = global_pool

    def _stem_and_stages(self):
        return self.stem, list(self.stages)

    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ):
        """Drop the stages after the last requested feature; the head goes too (it is sized for the last stage).

        Args:
            indices: the last n stages (an int) or the stage indices to keep.
            prune_norm: kept for timm's API (the MLP head has no separate final norm).
            prune_head: also drop the classifier when every stage is kept.

        Returns:
            The stage indices kept.
        """
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        if max_index < len(self.stages) - 1:
            self.stages = self.stages[: max_index + 1]
            self.num_features = self.feature_info[max_index]["num_chs"]
            self.head = MlpClassifierHead(self.num_features, 0, pool_type=self.global_pool)
            prune_head = True
        if prune_head:
            self.reset_classifier(0, reset_other=True)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map.

        Args:
            x: images, (B, in_chans, H, W).

        Returns:
            Features, (B, C, H / output_stride, W / output_stride).

        Raises:
            ValueError: `x` is not a (B, in_chans, H, W) tensor.
        """
        if not torch.jit.is_scripting():
            check_input_channels(self, x)
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool -> MLP -> classifier.

        Args:
            x: the last stage's feature map.
            pre_logits: stop before the classifier.

        Returns:
            Logits (B, num_classes), or the pre-logits features.
        """
        return self.head(x, pre_logits=pre_logits)
