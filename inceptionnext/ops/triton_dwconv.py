"""Triton kernels for the fused Inception depthwise conv: one pass over the input for every channel.

The forward kernel tiles (rows x columns x channels); each program reads its tile (plus the halo its
branches need) once and writes it once: identity channels are copied, branch channels get their
depthwise conv, all in fp32 and stored in the output dtype. Grad-input is the same kernel with
spatially flipped weights (a stride-1 'same' conv with odd kernel is its own transpose up to a flip).
Grad-weight/bias are per-program partial sums over a spatial tile and a chunk of the batch, reduced by
a small torch.sum afterwards (no atomics, deterministic).

The kernels index dense NCHW or NHWC tensors (anything else is copied to NCHW first). For NHWC a tile
spans BLOCK_C channels so loads are vectors along C; for NCHW a program owns one channel and loads
along W. C and W are passed divided by their power-of-two factor so the compiler knows the alignment.
Branch kernel sizes and channel offsets are constexprs so the taps unroll and channel alignment is known.
"""

from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl

MAX_BRANCHES = 3
# Grad-weight programs aimed for: enough to fill an H100 several times over; fewer means longer batch loops.
WGRAD_TARGET_PROGRAMS = 1024


@triton.jit
def _branch_conv(
    acc,
    x_base,
    w_ptr,
    b_ptr,
    hh,
    ww,
    cc,
    H,
    W,
    sxh,
    sxw,
    sxc,
    OFF: tl.constexpr,
    N: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    FLIP: tl.constexpr,
    DIL: tl.constexpr,
):
    """Add one branch's depthwise conv (taps DIL apart) to `acc` on the channels [OFF, OFF + N) of the tile."""
    cmask = (cc >= OFF) & (cc < OFF + N)
    cl = cc - OFF
    for dy in tl.static_range(KH):
        ih = hh + (dy - KH // 2) * DIL
        hmask = (ih >= 0) & (ih < H)
        for dx in tl.static_range(KW):
            iw = ww + (dx - KW // 2) * DIL
            m = hmask & (iw >= 0) & (iw < W) & cmask
            xv = tl.load(x_base + ih * sxh + iw * sxw + cc * sxc, mask=m, other=0.0)
            if FLIP:
                tap = (KH - 1 - dy) * KW + (KW - 1 - dx)
            else:
                tap = dy * KW + dx
            wv = tl.load(w_ptr + cl * (KH * KW) + tap, mask=cmask, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cl, mask=cmask, other=0.0).to(tl.float32)
    return acc


@triton.jit
def _dense_strides(C_q, H, W_q, ALIGN_C: tl.constexpr, ALIGN_W: tl.constexpr, CHANNELS_LAST: tl.constexpr):
    """(C, W, channel, row, column strides) of a dense NCHW or NHWC tensor.

    C and W arrive divided by their largest power-of-two factor (up to 16) and are multiplied back here,
    so the compiler knows that alignment and vectorizes loads along the contiguous dim.
    """
    C = C_q * ALIGN_C
    W = W_q * ALIGN_W
    if CHANNELS_LAST:
        s_c = 1
        s_w = C
        s_h = W * C
    else:
        s_w = 1
        s_h = W
        s_c = H * W
    return C, W, s_c, s_h, s_w


@triton.jit
def _tile_coords(
    pid,
    n_cb,
    n_ht,
    n_wt,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
):
    """Split a flat program id into (batch index, first row, first column, first channel).

    Channel blocks vary fastest for NHWC, columns fastest for NCHW, so programs that run together
    share halos in L2.
    """
    if CHANNELS_LAST:
        pid_c = pid % n_cb
        rest = pid // n_cb
        pid_w = rest % n_wt
        rest = rest // n_wt
        pid_h = rest % n_ht
        pid_b = rest // n_ht
    else:
        pid_w = pid % n_wt
        rest = pid // n_wt
        pid_h = rest % n_ht
        rest = rest // n_ht
        pid_c = rest % n_cb
        pid_b = rest // n_cb
    return pid_b, pid_h * BLOCK_H, pid_w * BLOCK_W, pid_c * BLOCK_C


@triton.jit
def _inception_dwconv_fwd_kernel(
    x_ptr,
    out_ptr,
    w0_ptr,
    b0_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    C_q,
    H,
    W_q,
    s_b,
    n_cb,
    n_ht,
    n_wt,
    ID_END: tl.constexpr,
    NUM_BRANCHES: tl.constexpr,
    OFF0: tl.constexpr,
    N0: tl.constexpr,
    KH0: tl.constexpr,
    KW0: tl.constexpr,
    BIAS0: tl.constexpr,
    OFF1: tl.constexpr,
    N1: tl.constexpr,
    KH1: tl.constexpr,
    KW1: tl.constexpr,
    BIAS1: tl.constexpr,
    OFF2: tl.constexpr,
    N2: tl.constexpr,
    KH2: tl.constexpr,
    KW2: tl.constexpr,
    BIAS2: tl.constexpr,
    FLIP: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    ALIGN_C: tl.constexpr,
    ALIGN_W: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
    DIL: tl.constexpr = 1,
):
    """x and out are dense with the same strides (NCHW or NHWC); see the module doc for the tiling."""
    C, W, sxc, sxh, sxw = _dense_strides(C_q, H, W_q, ALIGN_C, ALIGN_W, CHANNELS_LAST)
    pid_b, h0, w0, c0 = _tile_coords(tl.program_id(0), n_cb, n_ht, n_wt, BLOCK_H, BLOCK_W, BLOCK_C, CHANNELS_LAST)
    hh = h0 + tl.arange(0, BLOCK_H)[:, None, None]
    ww = w0 + tl.arange(0, BLOCK_W)[None, :, None]
    cc = c0 + tl.arange(0, BLOCK_C)[None, None, :]
    x_base = x_ptr + pid_b.to(tl.int64) * s_b
    acc = tl.zeros((BLOCK_H, BLOCK_W, BLOCK_C), dtype=tl.float32)
    # Each part runs only in programs whose channel block touches it (a uniform scalar branch).
    if c0 < ID_END:
        m = (hh < H) & (ww < W) & (cc < ID_END)
        acc += tl.load(x_base + hh * sxh + ww * sxw + cc * sxc, mask=m, other=0.0).to(tl.float32)
    if NUM_BRANCHES > 0:
        if (c0 < OFF0 + N0) & (c0 + BLOCK_C > OFF0):
            acc = _branch_conv(
                acc, x_base, w0_ptr, b0_ptr, hh, ww, cc, H, W, sxh, sxw, sxc, OFF0, N0, KH0, KW0, BIAS0, FLIP, DIL
            )
    if NUM_BRANCHES > 1:
        if (c0 < OFF1 + N1) & (c0 + BLOCK_C > OFF1):
            acc = _branch_conv(
                acc, x_base, w1_ptr, b1_ptr, hh, ww, cc, H, W, sxh, sxw, sxc, OFF1, N1, KH1, KW1, BIAS1, FLIP, DIL
            )
    if NUM_BRANCHES > 2:
        if (c0 < OFF2 + N2) & (c0 + BLOCK_C > OFF2):
            acc = _branch_conv(
                acc, x_base, w2_ptr, b2_ptr, hh, ww, cc, H, W, sxh, sxw, sxc, OFF2, N2, KH2, KW2, BIAS2, FLIP, DIL
            )
    m = (hh < H) & (ww < W) & (cc < C)
    out = out_ptr + pid_b.to(tl.int64) * s_b + hh * sxh + ww * sxw + cc * sxc
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _dwconv_param_grad_kernel(
    g_ptr,
    x_ptr,
    pw_ptr,
    pb_ptr,
    B,
    C_q,
    H,
    W_q,
    sb,
    n_cb,
    n_ht,
    n_wt,
    batch_per_prog,
    OFF: tl.constexpr,
    N: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    ALIGN_C: tl.constexpr,
    ALIGN_W: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
    DIL: tl.constexpr = 1,
):
    """Partial weight and bias gradients of one branch over a spatial tile and a chunk of the batch.

    Writes pw[row, tap, c] = sum g[b, OFF+c, h, w] * x[b, OFF+c, h+(dy-KH//2)*DIL, w+(dx-KW//2)*DIL] and
    pb[row, c] = sum g, where row indexes (batch chunk, tile row, tile column).
    """
    C, W, sc, sh, sw = _dense_strides(C_q, H, W_q, ALIGN_C, ALIGN_W, CHANNELS_LAST)
    pid_chunk, h0, w0, cl0 = _tile_coords(tl.program_id(0), n_cb, n_ht, n_wt, BLOCK_H, BLOCK_W, BLOCK_C, CHANNELS_LAST)
    row = (pid_chunk * n_ht + h0 // BLOCK_H) * n_wt + w0 // BLOCK_W
    hh = h0 + tl.arange(0, BLOCK_H)[:, None, None]
    ww = w0 + tl.arange(0, BLOCK_W)[None, :, None]
    cl = cl0 + tl.arange(0, BLOCK_C)
    cmask = cl < N
    cc = OFF + cl[None, None, :]
    gmask = (hh < H) & (ww < W) & cmask[None, None, :]
    b_start = pid_chunk * batch_per_prog
    b_end = tl.minimum(b_start + batch_per_prog, B)

    g_tile = g_ptr + b_start.to(tl.int64) * sb + hh * sh + ww * sw + cc * sc
    x_chunk = x_ptr + b_start.to(tl.int64) * sb
    acc = tl.zeros((BLOCK_H, BLOCK_W, BLOCK_C), dtype=tl.float32)
    g_b = g_tile
    for _ in range(b_start, b_end):
        acc += tl.load(g_b, mask=gmask, other=0.0).to(tl.float32)
        g_b += sb
    tl.store(pb_ptr + row * N + cl, tl.sum(tl.sum(acc, axis=0), axis=0), mask=cmask)

    # Taps outer, batch inner: one accumulator live at a time; the g tile is re-read from cache.
    for dy in tl.static_range(KH):
        ih = hh + (dy - KH // 2) * DIL
        hmask = (ih >= 0) & (ih < H)
        for dx in tl.static_range(KW):
            iw = ww + (dx - KW // 2) * DIL
            xmask = gmask & hmask & (iw >= 0) & (iw < W)
            acc = tl.zeros((BLOCK_H, BLOCK_W, BLOCK_C), dtype=tl.float32)
            g_b = g_tile
            x_b = x_chunk + ih * sh + iw * sw + cc * sc
            for _ in range(b_start, b_end):
                gv = tl.load(g_b, mask=gmask, other=0.0)
                xv = tl.load(x_b, mask=xmask, other=0.0)
                acc += gv.to(tl.float32) * xv.to(tl.float32)
                g_b += sb
                x_b += sb
            part = tl.sum(tl.sum(acc, axis=0), axis=0)
            tl.store(pw_ptr + (row * (KH * KW) + dy * KW + dx) * N + cl, part, mask=cmask)


# Kernels decorated while TRITON_INTERPRET=1 run on CPU tensors through Triton's interpreter.
INTERPRETED = not isinstance(_inception_dwconv_fwd_kernel, triton.runtime.JITFunction)


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _as_dense(x: torch.Tensor) -> torch.Tensor:
    """x itself when dense NCHW or NHWC (the two layouts the kernels index), else an NCHW copy."""
    return x if (x.is_contiguous() or _channels_last(x)) else x.contiguous()


def _same_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t if t.stride() == like.stride() else torch.empty_like(like).copy_(t)


def _align(n: int) -> int:
    """Largest power of two up to 16 that divides n."""
    a = 16
    while n % a:
        a //= 2
    return a


def _tiling(x: torch.Tensor, num_channels: int, max_block_c: int = 64) -> Tuple[int, int, int, int]:
    """(BLOCK_H, BLOCK_W, BLOCK_C, num_warps) for x's layout; tiles of about 2048 elements.

    NHWC: a channel block that wastes the fewest lanes (8 to 64 channels, the larger on ties) times
    8 rows of pixels, so every load is a vector along C. NCHW: one channel times up to 16x64 pixels,
    vectors along W.
    """
    _, _, H, W = x.shape
    if _channels_last(x):
        sizes = [bc for bc in (64, 32, 16, 8) if bc <= max_block_c]
        block_c = max(sizes, key=lambda bc: (num_channels / (triton.cdiv(num_channels, bc) * bc), bc))
        block_c = min(block_c, _pow2(num_channels))
        block_h = min(8, _pow2(H))
        block_w = min(max(2048 // (block_c * block_h), 1), 32, _pow2(W))
        return block_h, block_w, block_c, _warps(block_h * block_w * block_c)
    block_w = min(64, _pow2(W))
    block_h = min(max(1024 // block_w, 1), _pow2(H))
    return block_h, block_w, 1, _warps(block_h * block_w)


def _warps(tile_elements: int) -> int:
    """At least 8 elements per thread: small late-stage tiles get fewer warps instead of idle lanes."""
    return max(1, min(4, tile_elements // 256))


def _shape_args(x: torch.Tensor) -> Tuple[list, dict]:
    """Runtime (C/ALIGN_C, H, W/ALIGN_W, batch stride) and the layout constexprs of a dense x."""
    _, C, H, W = x.shape
    a_c, a_w = _align(C), _align(W)
    return [C // a_c, H, W // a_w, x.stride(0)], dict(CHANNELS_LAST=_channels_last(x), ALIGN_C=a_c, ALIGN_W=a_w)


def _branch_layout(num_channels: int, weights: Sequence[torch.Tensor]):
    """(identity channel count, [(offset, channels, kh, kw)] per branch)."""
    branch_chs = [int(w.shape[0]) for w in weights]
    offset = num_channels - sum(branch_chs)
    layout = []
    for w in weights:
        layout.append((offset, int(w.shape[0]), int(w.shape[2]), int(w.shape[3])))
        offset += int(w.shape[0])
    return num_channels - sum(branch_chs), layout


def dwconv_forward(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[Optional[torch.Tensor]],
    flip: bool = False,
    dilation: int = 1,
) -> torch.Tensor:
    """Launch the fused kernel: identity copy plus every branch's conv (weights flipped if `flip`; a dilated
    'same' conv's input gradient is the same conv with flipped weights, as for an undilated one)."""
    if len(weights) > MAX_BRANCHES:
        raise ValueError(f"the fused kernel takes at most {MAX_BRANCHES} branches, got {len(weights)}")
    x = _as_dense(x)
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    if out.numel() == 0:
        return out
    num_identity, layout = _branch_layout(C, weights)
    bh, bw, bc, warps = _tiling(x, C)
    shape_args, layout_meta = _shape_args(x)
    n_cb, n_ht, n_wt = triton.cdiv(C, bc), triton.cdiv(H, bh), triton.cdiv(W, bw)
    ptrs, meta = [], {}
    for i in range(MAX_BRANCHES):
        if i < len(weights):
            off, n, kh, kw = layout[i]
            w = weights[i].contiguous()
            b = biases[i] if (biases[i] is not None and not flip) else None
            ptrs += [w, b.contiguous() if b is not None else w]
            meta.update({f"OFF{i}": off, f"N{i}": n, f"KH{i}": kh, f"KW{i}": kw, f"BIAS{i}": b is not None})
        else:
            ptrs += [x, x]
            meta.update({f"OFF{i}": 0, f"N{i}": 0, f"KH{i}": 1, f"KW{i}": 1, f"BIAS{i}": False})
    grid = (B * n_cb * n_ht * n_wt,)
    _inception_dwconv_fwd_kernel[grid](
        x,
        out,
        *ptrs,
        *shape_args,
        n_cb,
        n_ht,
        n_wt,
        ID_END=num_identity,
        NUM_BRANCHES=len(weights),
        FLIP=flip,
        DIL=dilation,
        BLOCK_H=bh,
        BLOCK_W=bw,
        BLOCK_C=bc,
        num_warps=warps,
        **layout_meta,
        **meta,
    )
    return out


def dwconv_param_grads(
    grad: torch.Tensor,
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    dilation: int = 1,
) -> List[torch.Tensor]:
    """[grad_w0, grad_b0, grad_w1, grad_b1, ...] in the weights' dtype, summed in fp32."""
    x = _as_dense(x)
    grad = _same_layout(grad, x)
    B, C, H, W = x.shape
    _, layout = _branch_layout(C, weights)
    shape_args, layout_meta = _shape_args(x)
    grads: List[torch.Tensor] = []
    for w, (off, n, kh, kw) in zip(weights, layout):
        if n == 0 or x.numel() == 0:
            grads += [torch.zeros_like(w, memory_format=torch.contiguous_format), w.new_zeros(n)]
            continue
        bh, bw, bc, warps = _tiling(x, n, max_block_c=32)
        n_cb, n_ht, n_wt = triton.cdiv(n, bc), triton.cdiv(H, bh), triton.cdiv(W, bw)
        # Enough programs to fill a large GPU, each summing a chunk of the batch.
        chunks = max(1, min(B, WGRAD_TARGET_PROGRAMS // (n_cb * n_ht * n_wt)))
        per_prog = triton.cdiv(B, chunks)
        chunks = triton.cdiv(B, per_prog)
        rows = chunks * n_ht * n_wt
        pw = torch.empty(rows, kh * kw, n, dtype=torch.float32, device=x.device)
        pb = torch.empty(rows, n, dtype=torch.float32, device=x.device)
        _dwconv_param_grad_kernel[(rows * n_cb,)](
            grad,
            x,
            pw,
            pb,
            B,
            *shape_args,
            n_cb,
            n_ht,
            n_wt,
            per_prog,
            OFF=off,
            N=n,
            KH=kh,
            KW=kw,
            DIL=dilation,
            BLOCK_H=bh,
            BLOCK_W=bw,
            BLOCK_C=bc,
            num_warps=warps,
            **layout_meta,
        )
        grads.append(pw.sum(0).t().contiguous().view(w.shape).to(w.dtype))
        grads.append(pb.sum(0).to(w.dtype))
    return grads
