"""Which path the Inception depthwise conv takes: the fused Triton kernel or the plain PyTorch reference.

Which path runs: `fast=True/False` on the call (or ``fast_path=`` on the model) forces it; with `fast=None` a
``with fast_path(True/False):`` block forces it; outside one, the environment variable INCEPTIONNEXT_FAST_PATH=1/0
(read once, at the first call) does; otherwise the fused Triton kernel runs on CUDA tensors when Triton imports,
and the reference everywhere else. TorchScript compiles the reference only (the fused op is a
Python-side custom op). FX keeps `inception_dwconv` as one leaf call (see `inceptionnext.models.layers`), so a
traced model still dispatches at run time and reaches the fused kernel on CUDA.
"""

import contextlib
import os
from typing import List, Optional, Sequence, Union

import torch

from .reference import branch_split_sizes, inception_dwconv_reference

try:  # the Triton kernels import triton, an optional dependency
    from . import custom_op as _fused
    from .triton_dwconv import INTERPRETED as _TRITON_INTERPRETED
    from .triton_dwconv import MAX_BRANCHES as _MAX_BRANCHES

    _TRITON_ERROR: Optional[str] = None
except Exception as e:  # no Triton (CPU-only wheels, macOS, Windows) or a broken install
    _fused = None  # type: ignore[assignment]
    _TRITON_INTERPRETED = False
    _MAX_BRANCHES = 0
    _TRITON_ERROR = f"{type(e).__name__}: {e}"

ENV_VAR = "INCEPTIONNEXT_FAST_PATH"
_FAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


_UNREAD = object()
_env_default: object = _UNREAD  # INCEPTIONNEXT_FAST_PATH as read at the first call
_UNSET = object()
_block_choice: object = _UNSET  # the innermost fast_path() block's choice


def read_env_choice() -> Optional[bool]:
    """INCEPTIONNEXT_FAST_PATH as a choice: True, False, or None (unset or auto); a ValueError for anything else."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"{ENV_VAR} must be 1 or 0 (or unset), got {value!r}")


def default_choice() -> Optional[bool]:
    """The path a call with fast=None takes: the enclosing fast_path() block's, else the environment's (read once)."""
    global _env_default
    if _block_choice is not _UNSET:
        return _block_choice  # type: ignore[return-value]
    if _env_default is _UNREAD:
        _env_default = read_env_choice()
    return _env_default  # type: ignore[return-value]


@contextlib.contextmanager
def fast_path(choice: Optional[bool]):
    """Within the block, calls that leave `fast` unset take this path: True the fused kernel, False the reference,
    None the pick by device (the environment variable ignored). The previous choice is back when the block ends.

    Args:
        choice: True, False or None, as above.
    """
    global _block_choice
    previous, _block_choice = _block_choice, choice
    try:
        yield
    finally:
        _block_choice = previous


def fast_path_available(x: Union[torch.Tensor, torch.device]) -> bool:
    """Whether the fused kernel can run on tensors like `x`, or on device `x` (CUDA with Triton, or Triton's
    interpreter on CPU).

    Args:
        x: a tensor or a device.

    Returns:
        True where Triton is importable and the device can run it.
    """
    if _fused is None:
        return False
    device = x if isinstance(x, torch.device) else x.device
    return device.type == "cuda" or (_TRITON_INTERPRETED and device.type == "cpu")


def _on_cuda(x: torch.Tensor) -> bool:
    return x.is_cuda


def _fast_unsupported(x: torch.Tensor, weights: Sequence[torch.Tensor]) -> Optional[str]:
    """Why the fused kernel cannot take this call, or None when it can."""
    if not fast_path_available(x):
        reason = _TRITON_ERROR or f"tensor on {x.device} (Triton needs CUDA, or TRITON_INTERPRET=1 for CPU)"
        return f"the fused Triton path is unavailable: {reason}"
    if x.dtype not in _FAST_DTYPES:
        return f"the fused Triton path takes float32/float16/bfloat16, got {x.dtype}"
    if len(weights) > _MAX_BRANCHES:
        return f"the fused Triton path takes at most {_MAX_BRANCHES} branches, got {len(weights)}"
    return None


def uses_fast_path(x: torch.Tensor, weights: Sequence[torch.Tensor] = (), fast: Optional[bool] = None) -> bool:
    """Which path `inception_dwconv(x, weights, ..., fast=fast)` will take; raises if a forced fast path cannot run.

    Args:
        x: the input the op would get.
        weights: the branch weights it would get.
        fast: the op's `fast` argument; None takes the enclosing `fast_path` block's choice, else the
            environment's.

    Returns:
        True for the fused kernel, False for the reference.

    Raises:
        RuntimeError: the fast path is forced but cannot take this call (no Triton, a CPU tensor, a dtype or
            branch count it does not take); the message says which.
        ValueError: `INCEPTIONNEXT_FAST_PATH` is set but is not 1/true/on/yes, 0/false/off/no or auto.
    """
    choice = fast if fast is not None else default_choice()
    if choice is False:
        return False
    reason = _fast_unsupported(x, weights)
    if choice is None:
        return _on_cuda(x) and reason is None
    if reason is not None:
        raise RuntimeError(f"fast path forced (fast=True, fast_path(True) or {ENV_VAR}=1) but {reason}")
    return True


def _check_args(x, weights, biases, dilation):
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if len(biases) != len(weights):
        raise ValueError(f"got {len(weights)} branch weights but {len(biases)} biases (use None for no bias)")
    for i, (w, b) in enumerate(zip(weights, biases)):
        if w.dim() != 4 or w.shape[1] != 1:
            raise ValueError(f"branch {i} weight must be depthwise (c, 1, kh, kw), got {tuple(w.shape)}")
        if w.shape[2] % 2 == 0 or w.shape[3] % 2 == 0:
            raise ValueError(f"branch {i} kernel {tuple(w.shape[2:])} must have odd sizes for 'same' padding")
        if b is not None and tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"branch {i} bias must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be a positive int, got {dilation!r}")
    branch_split_sizes(x.shape[1], list(weights))  # raises if the branches need more channels than x has


def _has_autocast(device_type: str) -> bool:
    """Whether autocast exists for this device type (not for 'meta', used to count FLOPs without memory)."""
    check = getattr(torch.amp, "is_autocast_available", None)
    return check(device_type) if check is not None else device_type in ("cpu", "cuda")


def _no_autocast(x):
    return torch.autocast(x.device.type, enabled=False) if _has_autocast(x.device.type) else contextlib.nullcontext()


def _autocast_dtype(x) -> Optional[torch.dtype]:
    """The dtype autocast would give nn.Conv2d on x's device, or None when autocast is off there."""
    device_type = x.device.type
    if not _has_autocast(device_type) or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def inception_dwconv(
    x: torch.Tensor,
    weights: List[torch.Tensor],
    biases: List[Optional[torch.Tensor]],
    fast: Optional[bool] = None,
    dilation: int = 1,
) -> torch.Tensor:
    """Identity channels copied, then each branch's depthwise conv on its channel slice, concatenated.

    `fast` forces the fused kernel (True) or the reference (False); None picks by device (see module doc).
    `dilation` spaces every branch's taps apart ('same' padding kept), as in a dilated (output_stride) stage.
    Under autocast, inputs are cast to the autocast dtype (as for nn.Conv2d) and so is the output.

    Args:
        x: input, (B, C, H, W).
        weights: one depthwise weight (c, 1, kh, kw) per branch, odd kernel sizes; the branches take the last
            channels, in order, and the first C - sum(c) channels pass through.
        biases: one bias (c,) or None per branch.
        fast: True forces the fused kernel, False the reference, None picks (see `fast_path`).
        dilation: spacing of the taps (positive).

    Returns:
        The output, the same shape as `x`.

    Raises:
        ValueError: `x` is not 4-D, weights and biases differ in number, a weight is not depthwise or has an
            even kernel size, a bias has the wrong shape or `dilation` is not a positive int; on the reference
            path also when the branches need more channels than `x` has.
        RuntimeError: the fast path is forced but cannot run this call.
    """
    if torch.jit.is_scripting():
        return inception_dwconv_reference(x, weights, biases, dilation)
    return _checked_dispatch(x, weights, biases, fast, dilation)


@torch.jit.unused
def _checked_dispatch(
    x: torch.Tensor,
    weights: List[torch.Tensor],
    biases: List[Optional[torch.Tensor]],
    fast: Optional[bool],
    dilation: int,
) -> torch.Tensor:
    _check_args(x, weights, biases, dilation)
    weights, biases = list(weights), list(biases)
    dtype = _autocast_dtype(x)
    if dtype is None:  # the common case: no autocast to cast for or to switch off
        return _dispatch(x, weights, biases, fast, dilation)
    cast = lambda t: t.to(dtype) if (t is not None and t.is_floating_point()) else t  # noqa: E731
    with _no_autocast(x):
        return _dispatch(cast(x), [cast(w) for w in weights], [cast(b) for b in biases], fast, dilation)


def _dispatch(x, weights, biases, fast, dilation):
    if uses_fast_path(x, weights, fast):
        no_bias = x.new_empty(0)
        return _fused.inception_dwconv_fused(x, weights, [no_bias if b is None else b for b in biases], False, dilation)
    return inception_dwconv_reference(x, weights, biases, dilation)


__all__ = [
    "inception_dwconv",
    "inception_dwconv_reference",
    "branch_split_sizes",
    "fast_path",
    "fast_path_available",
    "uses_fast_path",
    "ENV_VAR",
]
