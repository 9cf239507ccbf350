"""inceptionnext.ops: dispatch, the reference path, and the fused Triton kernels held to the reference.

The kernels are checked on the CPU through Triton's interpreter (TRITON_INTERPRET=1 must be set before
the kernels are defined, so those cases run once in a subprocess: `python tests/test_ops.py` prints
their errors as JSON) and on CUDA when a GPU is present.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import inceptionnext.ops as ops
import inceptionnext.ops.dispatch as dispatch
from inceptionnext.ops import inception_dwconv, inception_dwconv_reference, uses_fast_path

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# max |fast - reference| / max |reference|, reference in fp32 on the same (rounded) inputs
_TOL = {"fp32": 2e-6, "bf16": 1e-2, "fp16": 2e-3}

# (B, C, H, W), branches (channels, kh, kw, has_bias), layout, dtype[, dilation]
INTERPRETER_CASES = {
    "inception_nchw_fp32": ((2, 20, 7, 5), [(3, 3, 3, True), (3, 1, 5, False), (3, 5, 1, True)], "nchw", "fp32"),
    "inception_nhwc_fp32_band_wider_than_image": (
        (1, 24, 6, 9),
        [(3, 3, 3, True), (3, 1, 11, True), (3, 11, 1, True)],
        "nhwc",
        "fp32",
    ),
    "inception_nhwc_bf16": ((2, 20, 7, 5), [(3, 3, 3, True), (3, 1, 5, False), (3, 5, 1, True)], "nhwc", "bf16"),
    "inception_nchw_fp16": ((2, 20, 7, 5), [(3, 3, 3, True), (3, 1, 9, True), (3, 9, 1, True)], "nchw", "fp16"),
    "partial_k3_nhwc_fp32": ((2, 16, 5, 7), [(6, 3, 3, True)], "nhwc", "fp32"),
    "full_k7_nchw_fp32": ((1, 6, 7, 5), [(6, 7, 7, True)], "nchw", "fp32"),
    "full_k5_nhwc_bf16": ((2, 10, 6, 5), [(10, 5, 5, False)], "nhwc", "bf16"),
    "full_k9_nhwc_fp32": ((1, 5, 5, 4), [(5, 9, 9, True)], "nhwc", "fp32"),
    "sliced_input_nchw_fp32": ((2, 9, 7, 6), [(2, 3, 3, True), (3, 1, 5, True)], "sliced", "fp32"),
    "grad_layout_differs_nhwc_fp32": (
        (2, 12, 5, 6),
        [(3, 3, 3, True), (3, 1, 5, True), (3, 5, 1, True)],
        "nhwc_x_nchw_grad",
        "fp32",
    ),
    "single_row_nhwc_fp32": ((2, 8, 1, 3), [(2, 3, 3, True), (2, 1, 5, True), (2, 5, 1, True)], "nhwc", "fp32"),
    "batch_loop_wgrad_nhwc_fp32": ((5, 12, 6, 6), [(4, 3, 3, True), (4, 1, 5, True), (4, 5, 1, True)], "nhwc", "fp32"),
    # dilated stages (output_stride 16 / 8): taps 2 and 4 apart, reaching past the image edge
    "dilated2_inception_nhwc_fp32": (
        (2, 20, 7, 9),
        [(3, 3, 3, True), (3, 1, 5, False), (3, 5, 1, True)],
        "nhwc",
        "fp32",
        2,
    ),
    "dilated4_full_k3_nchw_fp32": ((2, 6, 9, 6), [(6, 3, 3, True)], "nchw", "fp32", 4),
    "dilated2_partial_nhwc_bf16": ((2, 16, 6, 7), [(6, 3, 3, True)], "nhwc", "bf16", 2),
}


def _make_inputs(shape, branches, layout, dtype, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    if layout == "sliced":  # a non-dense view: strides the kernel must follow as given
        x = torch.randn(B, C + 2, H + 3, W, generator=gen)[:, 1 : C + 1, 2 : H + 2, :]
    else:
        x = torch.randn(B, C, H, W, generator=gen)
    weights = [torch.randn(n, 1, kh, kw, generator=gen) / (kh * kw) ** 0.5 for n, kh, kw, _ in branches]
    biases = [torch.randn(n, generator=gen) if has_b else None for n, _, _, has_b in branches]
    grad = torch.randn(B, C, H, W, generator=gen)
    fmt = torch.channels_last if layout.startswith("nhwc") else torch.contiguous_format

    def prep(t):
        if t is None:
            return None
        t = t.to(device=device, dtype=dtype)
        return t.contiguous(memory_format=fmt) if (t.dim() == 4 and layout != "sliced") else t

    grad = grad.to(device=device, dtype=dtype) if layout.endswith("nchw_grad") else prep(grad)
    return prep(x), [prep(w) for w in weights], [prep(b) for b in biases], grad


def _forward_and_grads(x, weights, biases, grad, fast, dilation=1):
    """Output and every gradient (x, each weight, each bias present), computed in x's dtype."""
    leaves = [t.detach().clone().requires_grad_(True) for t in [x, *weights]]
    bias_leaves = [None if b is None else b.detach().clone().requires_grad_(True) for b in biases]
    y = inception_dwconv(leaves[0], leaves[1:], bias_leaves, fast=fast, dilation=dilation)
    y.backward(grad)
    named = {"out": y, "grad_x": leaves[0].grad}
    for i, w in enumerate(leaves[1:]):
        named[f"grad_w{i}"] = w.grad
    for i, b in enumerate(bias_leaves):
        if b is not None:
            named[f"grad_b{i}"] = b.grad
    return named


def _rel_err(a, b):
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def compare_fast_to_reference(shape, branches, layout, dtype_name, dilation=1, device="cpu"):
    """{tensor name: relative error} of the fused path against the fp32 reference on the same inputs."""
    x, weights, biases, grad = _make_inputs(shape, branches, layout, _DTYPES[dtype_name], device)
    assert uses_fast_path(x, weights, fast=True)
    fast = _forward_and_grads(x, weights, biases, grad, fast=True, dilation=dilation)
    up = lambda t: None if t is None else t.float()  # noqa: E731
    ref = _forward_and_grads(
        up(x), [up(w) for w in weights], [up(b) for b in biases], up(grad), fast=False, dilation=dilation
    )
    errors = {k: _rel_err(fast[k], ref[k]) for k in ref}
    errors["dtype_kept"] = float(fast["out"].dtype == x.dtype and fast["grad_x"].dtype == x.dtype)
    errors["layout_kept"] = float(
        fast["out"].is_contiguous(memory_format=torch.channels_last) == layout.startswith("nhwc")
    )
    return errors


def _compile_and_autocast_checks(device="cpu", backend="aot_eager"):
    """Fused path under torch.compile(fullgraph=True) and under autocast, against the reference."""
    x, weights, biases, grad = _make_inputs(
        (2, 20, 7, 5), INTERPRETER_CASES["inception_nchw_fp32"][1], "nhwc", torch.float32, device
    )
    ref = _forward_and_grads(x, weights, biases, grad, fast=False)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, w, b: inception_dwconv(x, w, b, fast=True), fullgraph=True, backend=backend)
    xc = x.clone().requires_grad_(True)
    y = compiled(xc, weights, biases)
    y.backward(grad)
    out = {"compile_out": _rel_err(y, ref["out"]), "compile_grad_x": _rel_err(xc.grad, ref["grad_x"])}
    low = torch.bfloat16 if device == "cpu" else torch.float16
    with torch.autocast(device, dtype=low):
        y_fast = inception_dwconv(x, weights, biases, fast=True)
        y_ref = inception_dwconv(x, weights, biases, fast=False)
    out["autocast_dtype_ok"] = float(y_fast.dtype == low and y_ref.dtype == low)
    out["autocast_err"] = _rel_err(y_fast, ref["out"])
    return out


# ----------------------------------------------------------------------------------------------
# The reference path and argument checks (CPU)


def _timm_mixer(channels, band, ratio, dilation=1):
    from timm.models.inception_next import InceptionDWConv2d

    torch.manual_seed(0)
    return InceptionDWConv2d(channels, 3, band, ratio, dilation=dilation).eval()


@pytest.mark.parametrize(
    "channels,band,ratio,dilation", [(96, 11, 0.125, 1), (40, 9, 0.25, 1), (40, 9, 0.25, 2), (96, 11, 0.125, 4)]
)
def test_reference_matches_timm_inception_mixer(channels, band, ratio, dilation):
    mixer = _timm_mixer(channels, band, ratio, dilation)
    convs = [mixer.dwconv_hw, mixer.dwconv_w, mixer.dwconv_h]
    x = torch.randn(2, channels, 9, 11)
    out = inception_dwconv(x, [c.weight for c in convs], [c.bias for c in convs], dilation=dilation)
    torch.testing.assert_close(out, mixer(x))


@pytest.mark.parametrize("identity,k", [(8, 3), (0, 7)])
def test_reference_is_partial_or_full_depthwise_conv(identity, k):
    conv = nn.Conv2d(8, 8, k, padding=k // 2, groups=8)
    x = torch.randn(2, identity + 8, 6, 5)
    out = inception_dwconv_reference(x, [conv.weight], [conv.bias])
    torch.testing.assert_close(out[:, :identity], x[:, :identity])
    torch.testing.assert_close(out[:, identity:], conv(x[:, identity:]))


def test_reference_keeps_channels_last():
    x = torch.randn(2, 12, 5, 5).contiguous(memory_format=torch.channels_last)
    out = inception_dwconv(x, [torch.randn(4, 1, 3, 3)], [None])
    assert out.shape == x.shape and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "weights,biases,x_shape,match",
    [
        ([torch.randn(4, 1, 2, 3)], [None], (1, 8, 5, 5), "odd"),
        ([torch.randn(4, 2, 3, 3)], [None], (1, 8, 5, 5), "depthwise"),
        ([torch.randn(4, 1, 3, 3)], [torch.randn(3)], (1, 8, 5, 5), "bias"),
        ([torch.randn(4, 1, 3, 3)], [], (1, 8, 5, 5), "biases"),
        ([torch.randn(9, 1, 3, 3)], [None], (1, 8, 5, 5), "channels"),
        ([torch.randn(4, 1, 3, 3)], [None], (8, 5, 5), r"\(B, C, H, W\)"),
    ],
)
def test_bad_arguments_raise_clear_errors(weights, biases, x_shape, match):
    with pytest.raises(ValueError, match=match):
        inception_dwconv(torch.randn(*x_shape), weights, biases)


def test_autocast_casts_like_conv2d_on_cpu():
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    x = torch.randn(2, 8, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = inception_dwconv(x, [conv.weight], [conv.bias])
        conv_out = conv(x[:, 4:])
    assert out.dtype == conv_out.dtype == torch.bfloat16
    torch.testing.assert_close(out[:, 4:], conv_out)


def test_reference_path_compiles_without_graph_breaks():
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    x = torch.randn(2, 8, 6, 6)
    torch._dynamo.reset()
    fn = torch.compile(lambda x: inception_dwconv(x, [conv.weight], [conv.bias]), fullgraph=True, backend="eager")
    torch.testing.assert_close(fn(x), inception_dwconv(x, [conv.weight], [conv.bias]))


# ----------------------------------------------------------------------------------------------
# Dispatch (CPU)

_W = [torch.randn(4, 1, 3, 3)]


def test_auto_on_cpu_picks_reference(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    assert not uses_fast_path(torch.randn(1, 8, 4, 4), _W)
    assert not dispatch.fast_path_available(torch.randn(1)) or dispatch._TRITON_INTERPRETED


@pytest.mark.skipif(dispatch._TRITON_INTERPRETED, reason="the interpreter makes the fast path run on CPU")
@pytest.mark.parametrize("how", ["arg", "block"])
def test_forcing_fast_on_cpu_raises(how):
    x = torch.randn(1, 8, 4, 4)
    with ops.fast_path(True if how == "block" else False):
        with pytest.raises(RuntimeError, match="fast path forced.*(CUDA|Triton)"):
            inception_dwconv(x, _W, [None], fast=True if how == "arg" else None)


def test_bad_env_value_raises(monkeypatch):
    monkeypatch.setenv(ops.ENV_VAR, "maybe")
    monkeypatch.setattr(dispatch, "_env_default", dispatch._UNREAD)
    with pytest.raises(ValueError, match=ops.ENV_VAR):
        uses_fast_path(torch.randn(1, 8, 4, 4), _W)


def test_the_environment_is_the_default_read_once(monkeypatch):
    monkeypatch.setattr(dispatch, "_env_default", dispatch._UNREAD)
    monkeypatch.setenv(ops.ENV_VAR, "0")
    assert dispatch.default_choice() is False
    monkeypatch.setenv(ops.ENV_VAR, "1")  # later changes to the environment are not read
    assert dispatch.default_choice() is False
    with ops.fast_path(None):  # a block wins over the environment
        assert dispatch.default_choice() is None
    assert dispatch.default_choice() is False


class _FusedSpy:
    """Stands in for the custom op so dispatch can be tested where the kernel cannot run."""

    def __init__(self):
        self.calls = 0

    def inception_dwconv_fused(self, x, weights, biases, flip, dilation):
        self.calls += 1
        return inception_dwconv_reference(x, weights, [b if b.numel() else None for b in biases], dilation)


@pytest.mark.parametrize(
    "block,arg,expect_fast",
    [
        (None, None, True),  # auto: fast where available and the tensor is on CUDA (faked below)
        (False, None, False),  # a fast_path(False) block forces off
        (True, None, True),  # a fast_path(True) block forces on
        (True, False, False),  # the argument wins over the block
        (False, True, True),
        (None, False, False),
    ],
)
def test_dispatch_rules(monkeypatch, block, arg, expect_fast):
    spy = _FusedSpy()
    monkeypatch.setattr(dispatch, "_fused", spy)
    monkeypatch.setattr(dispatch, "fast_path_available", lambda x: True)
    monkeypatch.setattr(dispatch, "_on_cuda", lambda x: True)
    x = torch.randn(1, 8, 4, 4)
    with ops.fast_path(block):
        out = inception_dwconv(x, _W, [None], fast=arg)
    assert spy.calls == int(expect_fast)
    torch.testing.assert_close(out, inception_dwconv_reference(x, _W, [None]))


def test_forced_fast_rejects_unsupported_dtype_and_branch_count(monkeypatch):
    monkeypatch.setattr(dispatch, "fast_path_available", lambda x: True)
    with pytest.raises(RuntimeError, match="float64"):
        uses_fast_path(torch.randn(1, 8, 4, 4, dtype=torch.float64), _W, fast=True)
    many = [torch.randn(1, 1, 3, 3)] * 4
    with pytest.raises(RuntimeError, match="at most 3 branches"):
        uses_fast_path(torch.randn(1, 8, 4, 4), many, fast=True)
    # auto mode falls back to the reference instead of raising
    monkeypatch.setattr(dispatch, "_on_cuda", lambda x: True)
    with ops.fast_path(None):
        assert not uses_fast_path(torch.randn(1, 8, 4, 4), many)


# ----------------------------------------------------------------------------------------------
# The Triton kernels through the interpreter (CPU, one subprocess for all cases)


@pytest.fixture(scope="module")
def interpreter_results():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop(ops.ENV_VAR, None)
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"interpreter worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", sorted(INTERPRETER_CASES))
def test_interpreted_kernel_matches_reference(interpreter_results, case):
    errors = interpreter_results[case]
    assert "error" not in errors, errors.get("error")
    dtype = INTERPRETER_CASES[case][3]
    assert errors.pop("dtype_kept") == 1.0 and errors.pop("layout_kept") == 1.0
    n_branches = len(INTERPRETER_CASES[case][1])
    assert {f"grad_w{i}" for i in range(n_branches)} <= set(errors)
    bad = {k: v for k, v in errors.items() if not v <= _TOL[dtype]}
    assert not bad, f"{case}: relative errors above {_TOL[dtype]}: {bad}"


def test_custom_ops_pass_torch_opcheck(interpreter_results):
    r = interpreter_results["opcheck"]
    assert "error" not in r, r.get("error")
    assert r == {"fwd": 1.0, "fwd_dilated": 1.0, "fwd_transposed": 1.0, "param_grads": 1.0}


def test_interpreted_kernel_compiles_fullgraph_and_autocasts(interpreter_results):
    r = interpreter_results["compile_autocast"]
    assert "error" not in r, r.get("error")
    assert r["compile_out"] <= _TOL["fp32"] and r["compile_grad_x"] <= _TOL["fp32"]
    assert r["autocast_dtype_ok"] == 1.0 and r["autocast_err"] <= _TOL["bf16"]


# ----------------------------------------------------------------------------------------------
# The real (non-interpreted) kernels compiled for an H100 without one: catches what the interpreter
# cannot (compile errors, lost vectorization)


def _compile_for_sm90(kernel, ptr_types, ints, meta, num_warps):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, consts, attrs = {}, {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in ptr_types:
            sig[name] = "*" + ptr_types[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in ints and ints[name] != 1:
            sig[name] = "i32"
            if ints[name] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:  # launch specializes ints equal to 1 as constants too
            sig[name] = "constexpr"
            consts[name] = ints[name] if name in ints else meta[name]
    compiled = triton.compile(
        ASTSource(kernel, sig, consts, attrs), target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps}
    )
    return compiled.asm["ptx"]


def _sm90_ptx(kind, layout, dtype="bf16"):
    """PTX of the kernel for InceptionNeXt-T's first stage (C=96, 56x56, branches 12/12/12)."""
    import triton

    import inceptionnext.ops.triton_dwconv as K

    x = torch.empty(2, 96, 56, 56)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    shape_args, layout_meta = K._shape_args(x)
    if kind == "fwd":
        bh, bw, bc, warps = K._tiling(x, 96)
        ints = dict(
            zip(["C_q", "H", "W_q", "s_b"], shape_args),
            n_cb=triton.cdiv(96, bc),
            n_ht=triton.cdiv(56, bh),
            n_wt=triton.cdiv(56, bw),
        )
        meta = dict(ID_END=60, NUM_BRANCHES=3, FLIP=False, DIL=1, BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc, **layout_meta)
        for i, (kh, kw) in enumerate([(3, 3), (1, 11), (11, 1)]):
            meta.update({f"OFF{i}": 60 + 12 * i, f"N{i}": 12, f"KH{i}": kh, f"KW{i}": kw, f"BIAS{i}": True})
        ptrs = {n: dtype for n in ["x_ptr", "out_ptr", "w0_ptr", "b0_ptr", "w1_ptr", "b1_ptr", "w2_ptr", "b2_ptr"]}
        return _compile_for_sm90(K._inception_dwconv_fwd_kernel, ptrs, ints, meta, warps)
    bh, bw, bc, warps = K._tiling(x, 12, max_block_c=32)
    ints = dict(
        zip(["C_q", "H", "W_q", "sb"], shape_args),
        B=2,
        n_cb=triton.cdiv(12, bc),
        n_ht=triton.cdiv(56, bh),
        n_wt=triton.cdiv(56, bw),
        batch_per_prog=2,
    )
    meta = dict(OFF=72, N=12, KH=1, KW=11, DIL=1, BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc, **layout_meta)
    ptrs = {"g_ptr": dtype, "x_ptr": dtype, "pw_ptr": "fp32", "pb_ptr": "fp32"}
    return _compile_for_sm90(K._dwconv_param_grad_kernel, ptrs, ints, meta, warps)


@pytest.mark.skipif(dispatch._TRITON_INTERPRETED, reason="kernels are interpreted in this process")
@pytest.mark.parametrize("kind,layout", [("fwd", "nhwc"), ("fwd", "nchw"), ("wgrad", "nhwc")])
def test_kernels_compile_for_h100_with_vector_accesses(kind, layout):
    pytest.importorskip("triton")
    import re

    ptx = _sm90_ptx(kind, layout)
    assert ".local" not in ptx, "register spills"
    # bf16: v2.b32 = 4 elements (8 bytes), v4.b32 = 8 elements (16 bytes)
    vector_loads = re.findall(r"ld\.global(?:\.\w+)*\.v[24]\.b32", ptx)
    assert vector_loads, "no vectorized loads along the contiguous dim"
    if kind == "fwd":
        assert re.search(r"st\.global(?:\.\w+)*\.v4\.b32", ptx), "output not stored as 16-byte vectors"


# ----------------------------------------------------------------------------------------------
# The Triton kernels on CUDA

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GPU_SHAPES = {
    "tiny_stage1_like": ((4, 96, 56, 56), [(12, 3, 3, True), (12, 1, 11, True), (12, 11, 1, True)]),
    "atto_odd": ((3, 40, 13, 7), [(10, 3, 3, True), (10, 1, 9, True), (10, 9, 1, True)]),
    "odd_channels": ((2, 37, 9, 10), [(5, 3, 3, True), (4, 1, 11, False), (6, 11, 1, True)]),
    "partial_k3_3_8": ((2, 64, 14, 14), [(24, 3, 3, True)]),
    "full_k7": ((2, 48, 15, 17), [(48, 7, 7, True)]),
    "full_k5_late_stage": ((8, 384, 7, 7), [(384, 5, 5, True)]),
}


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "sliced"])
@pytest.mark.parametrize("dtype", sorted(_DTYPES))
@pytest.mark.parametrize("shape_name", sorted(GPU_SHAPES))
def test_cuda_kernel_matches_reference(shape_name, dtype, layout):
    shape, branches = GPU_SHAPES[shape_name]
    errors = compare_fast_to_reference(shape, branches, layout, dtype, device="cuda")
    assert errors.pop("dtype_kept") == 1.0 and errors.pop("layout_kept") == 1.0
    bad = {k: v for k, v in errors.items() if not v <= _TOL[dtype] * (2 if dtype == "fp32" else 1)}
    assert not bad, f"relative errors above tolerance: {bad}"


@cuda
@pytest.mark.gpu
def test_cuda_auto_dispatch_picks_fast_path(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    assert uses_fast_path(torch.randn(1, 8, 4, 4, device="cuda"), _W)


@cuda
@pytest.mark.gpu
def test_cuda_kernel_compiles_fullgraph_and_autocasts():
    r = _compile_and_autocast_checks(device="cuda", backend="inductor")
    assert r["compile_out"] <= 1e-5 and r["compile_grad_x"] <= 1e-5
    assert r["autocast_dtype_ok"] == 1.0 and r["autocast_err"] <= _TOL["fp16"] * 2


@cuda
@pytest.mark.gpu
def test_cuda_gradcheck_fp64_reference_agrees_with_fast_fp32():
    """The fp32 fused gradients match double-precision autograd of the reference on a small case."""
    x, weights, biases, grad = _make_inputs(
        (2, 20, 7, 5), INTERPRETER_CASES["inception_nchw_fp32"][1], "nchw", torch.float64, "cuda"
    )
    ref = _forward_and_grads(x, weights, biases, grad, fast=False)
    down = lambda t: None if t is None else t.float()  # noqa: E731
    fast = _forward_and_grads(down(x), [down(w) for w in weights], [down(b) for b in biases], down(grad), True)
    for k in ref:
        assert _rel_err(fast[k], ref[k]) <= 1e-5, k


@cuda
@pytest.mark.gpu
def test_benchmark_runs_on_a_small_shape():
    from inceptionnext.ops.bench import benchmark_token_mixer, format_rows

    rows = benchmark_token_mixer(batch=2, channels=32, size=14)
    assert [r["name"] for r in rows] == ["tensor copy", "timm InceptionDWConv2d", "inceptionnext fused"]
    assert all(r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 for r in rows)
    assert "fwd+bwd" in format_rows(rows)


def _interpreter_worker():
    """Run every interpreter case (this process has TRITON_INTERPRET=1) and print errors as one JSON line."""
    import inceptionnext.ops.triton_dwconv as kernels

    assert kernels.INTERPRETED, "TRITON_INTERPRET=1 was not in effect when the kernels were defined"
    results = {}
    for name, (shape, branches, layout, dtype, *dilation) in INTERPRETER_CASES.items():
        # a tiny program budget makes each grad-weight program loop over several images
        kernels.WGRAD_TARGET_PROGRAMS = 2 if name.startswith("batch_loop") else 1024
        try:
            results[name] = compare_fast_to_reference(shape, branches, layout, dtype, *dilation)
        except Exception as e:  # reported by the test that owns the case
            results[name] = {"error": f"{type(e).__name__}: {e}"}
    try:  # PyTorch's own checks of a custom op: schema, fake tensors, autograd registration, AOT dispatch
        x, w, b, g = _make_inputs((2, 12, 5, 6), [(3, 3, 3, True), (3, 1, 5, False)], "nhwc", torch.float32)
        x_t = x.transpose(2, 3)  # dense but neither NCHW nor NHWC: the kernels take an NCHW copy
        checks = {}
        for name, args in [
            ("fwd", (x.requires_grad_(), [t.requires_grad_() for t in w], [b[0], x.new_empty(0)], False, 1)),
            (
                "fwd_dilated",
                (
                    x.detach().requires_grad_(),
                    [t.detach().requires_grad_() for t in w],
                    [b[0], x.new_empty(0)],
                    False,
                    2,
                ),
            ),
            ("fwd_transposed", (x_t.detach(), w, [b[0], x.new_empty(0)], False, 1)),
            ("param_grads", (g, x.detach(), [t.detach() for t in w], 1)),
        ]:
            op = (
                torch.ops.inceptionnext.inception_dwconv_param_grads
                if name == "param_grads"
                else torch.ops.inceptionnext.inception_dwconv
            ).default
            checks[name] = float(all(v == "SUCCESS" for v in torch.library.opcheck(op, args).values()))
        results["opcheck"] = checks
    except Exception as e:
        results["opcheck"] = {"error": f"{type(e).__name__}: {e}"}
    try:
        results["compile_autocast"] = _compile_and_autocast_checks()
    except Exception as e:
        results["compile_autocast"] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(results))


if __name__ == "__main__":
    _interpreter_worker()
