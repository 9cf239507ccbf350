"""GPU micro-benchmark of the token mixer alone: fused kernel vs timm's InceptionDWConv2d vs one tensor copy.

    python -m inceptionnext.ops.bench [--batch 128 --channels 96 --size 56 --dtype bf16 --layout nhwc]

All rows are timed in the same run with triton.testing.do_bench (median ms); the copy row is the
bandwidth floor a one-pass kernel is measured against.
"""

import argparse
from typing import Dict, List

import torch

from ..utils.tables import markdown_table
from .dispatch import inception_dwconv

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def benchmark_token_mixer(
    batch: int = 128,
    channels: int = 96,
    size: int = 56,
    dtype: torch.dtype = torch.bfloat16,
    channels_last: bool = True,
    square_kernel: int = 3,
    band_kernel: int = 11,
    branch_ratio: float = 0.125,
    device: str = "cuda",
) -> List[Dict[str, object]]:
    """Rows {'name', 'fwd_ms', 'fwd_bwd_ms', 'fwd_vs_copy', 'fwd_bwd_vs_copy'} for copy, timm and ours.

    Ours is `inception_dwconv(..., fast=True)` on the very parameters of timm's module.

    Args:
        batch: batch size.
        channels: channels of the input.
        size: height and width of the input.
        dtype: the input's and parameters' dtype.
        channels_last: NHWC memory layout (else NCHW).
        square_kernel: the k x k branch's kernel size.
        band_kernel: the band branches' kernel size.
        branch_ratio: the share of channels each branch convolves.
        device: the CUDA device.

    Returns:
        One row per path, times in milliseconds (median of triton.testing.do_bench).

    Raises:
        RuntimeError: no CUDA device is available.
    """
    from timm.models.inception_next import InceptionDWConv2d
    from triton.testing import do_bench

    if not torch.cuda.is_available():
        raise RuntimeError("benchmark_token_mixer needs a CUDA device")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    timm_mixer = InceptionDWConv2d(channels, square_kernel, band_kernel, branch_ratio)
    timm_mixer = timm_mixer.to(device=device, dtype=dtype, memory_format=fmt)
    convs = [timm_mixer.dwconv_hw, timm_mixer.dwconv_w, timm_mixer.dwconv_h]
    weights = [c.weight for c in convs]
    biases = [c.bias for c in convs]
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    grad = torch.randn_like(x)
    out = torch.empty_like(x)
    params = [x, *weights, *biases]

    def ours():
        return inception_dwconv(x, weights, biases, fast=True)

    def fwd_bwd(fn):
        def run():
            fn().backward(grad)

        return run

    def timed(fn) -> float:
        return float(do_bench(fn, warmup=25, rep=200, grad_to_none=params, return_mode="median"))

    with torch.no_grad():
        copy_ms = timed(lambda: out.copy_(x))
        timm_fwd = timed(timm_mixer)
        ours_fwd = timed(ours)
    # A copy's backward is a copy too: fwd+bwd floor is two copies.
    rows = [
        ("tensor copy", copy_ms, 2 * copy_ms),
        ("timm InceptionDWConv2d", timm_fwd, timed(fwd_bwd(lambda: timm_mixer(x)))),
        ("inceptionnext fused", ours_fwd, timed(fwd_bwd(ours))),
    ]
    return [
        {"name": n, "fwd_ms": f, "fwd_bwd_ms": fb, "fwd_vs_copy": f / copy_ms, "fwd_bwd_vs_copy": fb / copy_ms}
        for n, f, fb in rows
    ]


def format_rows(rows: List[Dict[str, object]], title: str = "") -> str:
    """A markdown table of benchmark_token_mixer's rows.

    Args:
        rows: `benchmark_token_mixer`'s rows.
        title: a line above the table; empty for none.

    Returns:
        The table as text.
    """
    return markdown_table(
        ["op", "fwd ms", "fwd+bwd ms", "fwd / copy", "fwd+bwd / copy"],
        [
            (
                r["name"],
                f"{r['fwd_ms']:.3f}",
                f"{r['fwd_bwd_ms']:.3f}",
                f"{r['fwd_vs_copy']:.2f}x",
                f"{r['fwd_bwd_vs_copy']:.2f}x",
            )
            for r in rows
        ],
        title or None,
    )


def main(argv=None):
    """`python -m inceptionnext.ops.bench`: time the three paths and print the table.

    Args:
        argv: the command line; None reads `sys.argv`.
    """
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--channels", type=int, default=96)
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16")
    p.add_argument("--layout", choices=["nhwc", "nchw"], default="nhwc")
    p.add_argument("--band-kernel", type=int, default=11)
    p.add_argument("--branch-ratio", type=float, default=0.125)
    a = p.parse_args(argv)
    rows = benchmark_token_mixer(
        a.batch,
        a.channels,
        a.size,
        _DTYPES[a.dtype],
        a.layout == "nhwc",
        band_kernel=a.band_kernel,
        branch_ratio=a.branch_ratio,
    )
    title = (
        f"Token mixer {a.batch}x{a.channels}x{a.size}x{a.size} {a.dtype} {a.layout} on {torch.cuda.get_device_name()}"
    )
    print(format_rows(rows, title))


if __name__ == "__main__":
    main()
