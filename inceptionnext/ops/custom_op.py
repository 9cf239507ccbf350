"""The fused kernel as torch custom ops, so autograd and torch.compile(fullgraph=True) see one opaque op.

`inceptionnext::inception_dwconv` runs the forward (or, with flip=True and no biases, the input
gradient); `inceptionnext::inception_dwconv_param_grads` gives every branch's weight and bias gradient.
Fake (meta) implementations describe the outputs so the compiler traces without running the kernels.
"""

from typing import List, Optional

import torch
from torch import Tensor

from .triton_dwconv import _as_dense, dwconv_forward, dwconv_param_grads


@torch.library.custom_op("inceptionnext::inception_dwconv", mutates_args=())
def inception_dwconv_fused(
    x: Tensor, weights: List[Tensor], biases: List[Tensor], flip: bool, dilation: int = 1
) -> Tensor:
    """Identity copy plus every branch's depthwise conv (taps `dilation` apart) in one kernel (weights flipped
    if `flip`).

    An empty bias tensor means 'no bias': autograd only differentiates lists of plain Tensors, so None
    entries cannot be passed through the op.
    """
    return dwconv_forward(x, weights, [b if b.numel() else None for b in biases], flip=flip, dilation=dilation)


@inception_dwconv_fused.register_fake
def _(x, weights, biases, flip, dilation=1):
    return torch.empty_like(_as_dense(x))


@torch.library.custom_op("inceptionnext::inception_dwconv_param_grads", mutates_args=())
def inception_dwconv_param_grads(grad: Tensor, x: Tensor, weights: List[Tensor], dilation: int = 1) -> List[Tensor]:
    """[grad_w0, grad_b0, grad_w1, grad_b1, ...]: per-program partial sums, then a small reduction."""
    return dwconv_param_grads(grad, x, weights, dilation=dilation)


@inception_dwconv_param_grads.register_fake
def _(grad, x, weights, dilation=1):
    out = []
    for w in weights:
        out += [torch.empty_like(w, memory_format=torch.contiguous_format), w.new_empty(w.shape[0])]
    return out


def _setup_context(ctx, inputs, output):
    x, weights, biases, flip, *rest = inputs  # torch drops trailing arguments left at their default
    dilation = rest[0] if rest else 1
    ctx.flip = flip
    ctx.dilation = dilation
    ctx.save_for_backward(x, *weights)
    ctx.has_bias = [b.numel() > 0 for b in biases]


def _backward(ctx, grad):
    if ctx.flip:
        raise RuntimeError(
            "inceptionnext::inception_dwconv with flip=True is itself a backward; "
            "double backward through the fused kernel is not supported"
        )
    x, *weights = ctx.saved_tensors
    needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
    grad_x = None
    if needs_x:
        grad_x = inception_dwconv_fused(grad, weights, [w.new_empty(0) for w in weights], True, ctx.dilation)
    grad_w: List[Optional[Tensor]] = [None] * len(weights)
    grad_b: List[Optional[Tensor]] = [None] * len(weights)
    if any(needs_w) or any(needs_b):
        flat = inception_dwconv_param_grads(grad, x, weights, ctx.dilation)
        for i, has_bias in enumerate(ctx.has_bias):
            grad_w[i] = flat[2 * i] if needs_w[i] else None
            grad_b[i] = flat[2 * i + 1] if (has_bias and needs_b[i]) else None
    return (grad_x, grad_w, grad_b) + (None,) * (len(ctx.needs_input_grad) - 3)  # flip (and dilation)


inception_dwconv_fused.register_autograd(_backward, setup_context=_setup_context)
