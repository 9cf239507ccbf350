"""Inference re-parameterization: fold BatchNorm and layer scale into the neighbouring convolutions.

An InceptionNeXt (MetaNeXt) model in eval mode has three kinds of foldable pairs:

* stem: 4x4/4 conv -> BatchNorm            (``fold_bn_after_conv``)
* downsample: BatchNorm -> 2x2/2 conv      (``fold_bn_before_conv``; exact because the conv has no padding)
* block: token mixer -> BatchNorm -> fc1 ... fc2 -> * gamma
  (BatchNorm into fc1 with ``fold_bn_before_conv``, gamma into fc2 with ``fold_scale_into_conv``)

``reparameterize_model`` does all of them and, by default, swaps every folded block for
``FusedMetaNeXtBlock``, whose CPU inference path runs fc1+GELU and fc2+residual-add as two fused oneDNN
convolutions. The state-dict keys of a folded model are those of the unfolded one minus the removed
BatchNorms and ``gamma``, so a folded checkpoint loads into ``create_deploy_model(name)``.

The arithmetic is done in float64 and cast back, so folded outputs match the unfolded model to fp32
rounding.
"""

import warnings
from typing import Any, Optional

import torch
import torch.nn as nn

from ..utils.tracing import is_fx_tracing

__all__ = [
    "fold_bn_after_conv",
    "fold_bn_before_conv",
    "fold_scale_into_conv",
    "fold_sequential",
    "fold_metanext_block",
    "FusedMetaNeXtBlock",
    "reparameterize_model",
    "create_deploy_model",
    "is_metanext_block",
    "is_folded",
]


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm):
    """The eval-mode BatchNorm as y = scale * x + shift (float64)."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"expected a BatchNorm module, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    if bn.training:  # reachable through timm.utils.reparameterize_model, which does not check the mode
        warnings.warn(
            "folding a BatchNorm that is in train mode: the fold uses its running statistics, so the "
            "folded model matches the eval-mode model, not train mode",
            stacklevel=3,
        )
    mean = bn.running_mean.double()
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _check_conv(conv: nn.Module) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected an nn.Conv2d, got {type(conv).__name__}")


def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> nn.Conv2d:
    """A copy of `conv`'s geometry holding the given (float64) weight and bias, cast back to conv's dtype."""
    ref = conv.weight
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=bias is not None,
        padding_mode=conv.padding_mode,
        device=ref.device,
        dtype=ref.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(weight.to(ref.dtype))
        if bias is not None:
            new.bias.copy_(bias.to(ref.dtype))
    new.train(conv.training)
    return new


def fold_bn_after_conv(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv2d:
    """conv -> BatchNorm as one conv: BN scales each output channel and shifts it."""
    _check_conv(conv)
    scale, shift = _bn_scale_shift(bn)
    if scale.numel() != conv.out_channels:
        raise ValueError(f"BatchNorm has {scale.numel()} channels but the conv outputs {conv.out_channels}")
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    return _new_conv(conv, weight, bias * scale + shift)


def _has_zero_padding(conv: nn.Conv2d) -> bool:
    if isinstance(conv.padding, str):
        return conv.padding == "valid" or all(k == 1 for k in conv.kernel_size)
    return all(p == 0 for p in conv.padding)


def fold_bn_before_conv(bn: nn.modules.batchnorm._BatchNorm, conv: nn.Conv2d) -> nn.Conv2d:
    """BatchNorm -> conv as one conv: BN scales the conv's input channels; its shift becomes a bias.

    Only exact without padding (zero padding after BN is not zero padding before it), which holds for
    the downsample's 2x2/2 conv and the MLP's 1x1 fc1.
    """
    _check_conv(conv)
    if not _has_zero_padding(conv):
        raise ValueError(
            f"cannot fold a BatchNorm into a conv with padding {conv.padding}: the result would differ at the borders"
        )
    scale, shift = _bn_scale_shift(bn)
    if scale.numel() != conv.in_channels:
        raise ValueError(f"BatchNorm has {scale.numel()} channels but the conv takes {conv.in_channels}")
    w = conv.weight.double()  # (out, in / groups, kh, kw)
    groups, out_per_group, in_per_group = conv.groups, conv.out_channels // conv.groups, w.shape[1]
    # input channel seen by w[o, c] is (o // out_per_group) * in_per_group + c
    scale_g = scale.view(groups, 1, in_per_group).expand(groups, out_per_group, in_per_group)
    shift_g = shift.view(groups, 1, in_per_group).expand(groups, out_per_group, in_per_group)
    scale_oc = scale_g.reshape(conv.out_channels, in_per_group, 1, 1)
    shift_oc = shift_g.reshape(conv.out_channels, in_per_group, 1, 1)
    bias = (
        conv.bias.double()
        if conv.bias is not None
        else torch.zeros(conv.out_channels, dtype=torch.float64, device=w.device)
    )
    bias = bias + (w * shift_oc).sum(dim=(1, 2, 3))
    return _new_conv(conv, w * scale_oc, bias)


def fold_scale_into_conv(conv: nn.Conv2d, scale: torch.Tensor) -> nn.Conv2d:
    """conv -> per-channel scale (layer scale) as one conv: scale the output rows and the bias."""
    _check_conv(conv)
    scale = scale.detach().double().flatten()
    if scale.numel() != conv.out_channels:
        raise ValueError(f"scale has {scale.numel()} entries but the conv outputs {conv.out_channels}")
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = conv.bias.double() * scale if conv.bias is not None else None
    return _new_conv(conv, weight, bias)


def fold_sequential(seq: nn.Sequential) -> bool:
    """Fold a two-module (conv, BN) stem or (BN, conv) downsample in place; the BN's slot becomes Identity.

    Slots keep their indices so the conv's state-dict key (``stem.0``, ``downsample.1``) is unchanged.
    Returns whether anything was folded.
    """
    if not isinstance(seq, nn.Sequential) or len(seq) != 2:
        return False
    first, second = seq[0], seq[1]
    is_bn = lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm)  # noqa: E731
    if isinstance(first, nn.Conv2d) and is_bn(second):
        seq[0], seq[1] = fold_bn_after_conv(first, second), nn.Identity()
        return True
    if is_bn(first) and isinstance(second, nn.Conv2d) and _has_zero_padding(second):
        seq[0], seq[1] = nn.Identity(), fold_bn_before_conv(first, second)
        return True
    return False


def is_metanext_block(module: nn.Module) -> bool:
    """A MetaNeXt block: token_mixer -> norm -> mlp (fc1 ... fc2 as convs) -> optional gamma -> residual."""
    mlp = getattr(module, "mlp", None)
    return (
        hasattr(module, "token_mixer")
        and hasattr(module, "norm")
        and hasattr(module, "gamma")
        and isinstance(getattr(mlp, "fc1", None), nn.Conv2d)
        and isinstance(getattr(mlp, "fc2", None), nn.Conv2d)
    )


def fold_metanext_block(block: nn.Module) -> bool:
    """Fold a block's BatchNorm into mlp.fc1 and its layer scale into mlp.fc2, in place.

    Afterwards ``block.norm`` is Identity and ``block.gamma`` is None; the block's own forward is unchanged
    and computes the same function. Returns whether anything changed.
    """
    if not is_metanext_block(block):
        raise TypeError(f"{type(block).__name__} is not a MetaNeXt block (token_mixer, norm, mlp.fc1/fc2, gamma)")
    changed = False
    if isinstance(block.norm, nn.modules.batchnorm._BatchNorm):
        block.mlp.fc1 = fold_bn_before_conv(block.norm, block.mlp.fc1)
        block.norm = nn.Identity()
        changed = True
    elif not isinstance(block.norm, nn.Identity):
        raise TypeError(f"cannot fold a block norm of type {type(block.norm).__name__}")
    if block.gamma is not None:
        block.mlp.fc2 = fold_scale_into_conv(block.mlp.fc2, block.gamma)
        block.gamma = None
        changed = True
    return changed


_MKLDNN_CONV = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)


def _mkldnn_bf16_supported() -> bool:
    """Whether oneDNN *can* run bf16 convolutions (AVX-512 BW/VL/DQ or AVX-NE-CONVERT), emulated or not: the
    fused path's correctness gate. Whether bf16 is *worth* running is `utils.cpu.native_bf16`."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def _fused_post_op(act: Optional[nn.Module]) -> Optional[str]:
    """The oneDNN post-op that computes `act` exactly: exact GELU, or Hardswish (the fast-act deploy lever)."""
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return "gelu"
    if isinstance(act, nn.Hardswish):
        return "hardswish"
    return None


class FusedMetaNeXtBlock(nn.Module):
    """A folded MetaNeXt block for inference: token mixer -> fc1+GELU -> fc2 + shortcut.

    On CPU without autograd, fc1+GELU (or Hardswish, the fast-act lever) and fc2+residual-add each run as one
    oneDNN convolution with a fused post-op, which saves writing and re-reading the two largest activations of the
    block. Elsewhere (GPU, autograd, other activations, TorchScript and FX graphs) it runs the plain modules.
    Children keep the original names (``token_mixer``, ``mlp.fc1``, ``mlp.fc2``), so state dicts are
    interchangeable with a folded unfused block.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        if not is_metanext_block(block):
            raise TypeError(f"{type(block).__name__} is not a MetaNeXt block")
        if not isinstance(block.norm, nn.Identity) or block.gamma is not None:
            raise ValueError(
                "FusedMetaNeXtBlock needs a folded block (norm Identity, gamma None); call fold_metanext_block first"
            )
        self.token_mixer = block.token_mixer
        self.mlp = block.mlp
        self.drop_path = getattr(block, "drop_path", nn.Identity())
        self._fusable = self.can_fuse(self.mlp)
        self.train(block.training)

    @staticmethod
    def can_fuse(mlp: nn.Module) -> bool:
        """Whether the MLP's fc1+activation and fc2+add can run as fused oneDNN convolutions (call again after
        swapping its activation)."""
        drop = getattr(mlp, "drop", None)
        return (
            _MKLDNN_CONV is not None
            and torch.backends.mkldnn.is_available()
            and _fused_post_op(getattr(mlp, "act", None)) is not None
            and isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity)
            and (drop is None or isinstance(drop, nn.Identity) or getattr(drop, "p", 0.0) == 0.0)
            and all(
                c.kernel_size == (1, 1) and c.stride == (1, 1) and c.groups == 1 and c.padding_mode == "zeros"
                for c in (mlp.fc1, mlp.fc2)
            )
        )

    @torch.jit.unused
    def _use_fused(self, x: torch.Tensor, shortcut: torch.Tensor) -> bool:
        if not self._fusable or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16):
            return False
        if x.dtype == torch.bfloat16 and not _mkldnn_bf16_supported():
            return False  # the plain modules take PyTorch's own bf16 path on such a CPU
        if torch.compiler.is_compiling():
            return False  # the oneDNN ops have no fake-tensor kernel (graph break); the compiler fuses the plain path
        if torch.jit.is_tracing():
            return False  # torch.jit.trace cannot record them ("unsupported input list type"); trace the plain path
        if shortcut.dtype != x.dtype or shortcut.shape != x.shape:
            return False
        if self.mlp.fc1.weight.dtype != x.dtype and not torch.is_autocast_enabled("cpu"):
            return False  # mixed dtypes outside autocast: let the plain modules raise their usual error
        if self.training and not isinstance(self.drop_path, nn.Identity):
            return False
        # the fused oneDNN ops have no autograd formula
        return not torch.is_grad_enabled() or not (
            x.requires_grad or any(p.requires_grad for p in self.mlp.parameters())
        )

    @torch.jit.unused
    def _forward_fused(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        # under autocast the oneDNN ops see the autocast dtype, as autocast's own conv would
        w1, b1, w2, b2 = (
            None if t is None else t.to(x.dtype)
            for t in (self.mlp.fc1.weight, self.mlp.fc1.bias, self.mlp.fc2.weight, self.mlp.fc2.bias)
        )
        zero, one = [0, 0], [1, 1]
        post_op = _fused_post_op(self.mlp.act)
        x = _MKLDNN_CONV(x, w1, b1, zero, one, one, 1, post_op, [], "none" if post_op == "gelu" else "")
        return _MKLDNN_CONV.binary(x, shortcut, w2, b2, zero, one, one, 1, "add", None, None, [], None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.token_mixer(x)
        if not torch.jit.is_scripting():
            if not is_fx_tracing() and self._use_fused(x, shortcut):
                return self._forward_fused(x, shortcut)
        return self.drop_path(self.mlp(x)) + shortcut


def is_folded(model: nn.Module) -> bool:
    """Whether `model` holds folded MetaNeXt blocks.

    Args:
        model: any module.

    Returns:
        True when its blocks are folded (its state dict then lacks the block BatchNorms and layer scales).
    """
    return any(
        isinstance(m, FusedMetaNeXtBlock)
        or (is_metanext_block(m) and isinstance(m.norm, nn.Identity) and m.gamma is None)
        for m in model.modules()
    )


def reparameterize_model(model: nn.Module, inplace: bool = False, fuse: bool = True) -> nn.Module:
    """Fold every BatchNorm and layer scale of a MetaNeXt model for inference.

    Args:
        model: an InceptionNeXt or ConvNeXt-variant model in eval mode (folding uses the BatchNorm running
            statistics, which a model in train mode does not use).
        inplace: fold `model` itself instead of a deep copy.
        fuse: each folded block becomes a `FusedMetaNeXtBlock` (faster CPU inference, same outputs and
            state-dict keys); False keeps the plain folded modules.

    Returns:
        The folded model, matching the unfolded one within fp32 rounding.

    Raises:
        TypeError: `model` is not an `nn.Module`.
        RuntimeError: `model` is in train mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    if model.training:
        raise RuntimeError(
            "reparameterize_model needs a model in eval mode (call model.eval() first): folding "
            "uses BatchNorm running statistics, which train mode ignores"
        )
    if not inplace:
        import copy

        model = copy.deepcopy(model)

    count = 0

    def visit(parent: nn.Module) -> None:
        nonlocal count
        for name, child in list(parent.named_children()):
            if isinstance(child, FusedMetaNeXtBlock):
                continue
            if is_metanext_block(child):
                count += int(fold_metanext_block(child))
                if fuse:
                    child = FusedMetaNeXtBlock(child)
                    setattr(parent, name, child)
                    count += 1
                continue  # a block's mixer holds nothing to fold
            if isinstance(child, nn.Sequential) and fold_sequential(child):
                count += 1
                continue
            visit(child)

    visit(model)
    if count == 0:
        warnings.warn(f"reparameterize_model found nothing to fold in {type(model).__name__}", stacklevel=2)
    return model


def create_deploy_model(model_name: str, **kwargs: Any) -> nn.Module:
    """An eval-mode, folded model from a timm model name, ready to load a folded state dict.

    Args:
        model_name: a registered name, e.g. `"inceptionnext_t"`.
        **kwargs: `fuse` (default True) goes to `reparameterize_model`; the others to `timm.create_model`
            (pretrained weights loaded this way are folded after loading).

    Returns:
        The folded model.
    """
    import timm

    fuse = kwargs.pop("fuse", True)
    model = timm.create_model(model_name, **kwargs).eval()
    return reparameterize_model(model, inplace=True, fuse=fuse)
