"""Where an OpenVINO model's time goes: its own per-layer counters (PERF_COUNT, `get_profiling_info`) summed by
category, ours beside resnet50, so the gap between them can be read off.

Each executed node's time is its median over the profiled inferences (a shared machine's preemptions stay out);
a node fused into another (GELU or the residual add into a 1x1 conv) is inside that conv's time and is counted
in the 'fused' line, not as time of its own.

    inceptionnext benchmark --runtime openvino --precision int8 --profile --batch-size 1,16 \\
        --model inceptionnext_t,resnet50 --levers fast-act --device cpu --threads 2
"""

import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from ...utils.tables import markdown_table
from ..runtimes import compile_openvino, openvino_core, read_runtime_model
from .paths import PathFiles, build_variant, model_variants

__all__ = ["CATEGORIES", "LayerTime", "Breakdown", "categorize", "profile_openvino", "run_profile", "breakdown_table"]

CATEGORIES = (
    "activation",
    "depthwise conv",
    "split/concat",
    "conv 1x1 s1",
    "conv 1x1 s2",
    "conv 1x1 s3",
    "conv 1x1 s4",
    "conv kxk (stem, downsample, 3x3)",
    "residual add",
    "reorder",
    "quantize/dequantize",
    "other (pool, head)",
)
_ACTIVATIONS = ("Gelu", "HSwish", "Relu", "Swish", "Tanh", "Sigmoid", "Erf", "Elu", "Clamp")


@dataclass
class LayerTime:
    node: str
    type: str  # OpenVINO layer type (Convolution, Concatenation, ...)
    exec_type: str  # the kernel it ran (e.g. brgconv_avx512_1x1_I8, ref_I8)
    ms: float  # median ms per batch
    category: str
    fused: str  # the original layers fused into it


@dataclass
class Breakdown:
    label: str
    batch_size: int
    precision: str
    ms_by_category: Dict[str, float] = field(default_factory=dict)
    layers_ms: float = 0.0  # sum over executed layers
    wall_ms: float = 0.0  # median wall clock of infer()
    nodes: int = 0
    fused_act: int = 0  # convs with an activation fused in
    fused_add: int = 0  # convs with the residual add fused in
    layers: List[LayerTime] = field(default_factory=list)


def _rt(op, key: str) -> str:
    info = op.get_rt_info()
    return info[key].astype(str) if key in info else ""


def _stage(size: int, img_size: int) -> str:
    stages = {img_size // 4: "s1", img_size // 8: "s2", img_size // 16: "s3", img_size // 32: "s4"}
    return stages.get(size, "")


def categorize(layer_type: str, out_shape, weight_shape, fused: str, img_size: int) -> str:
    """The breakdown category of one executed node."""
    low = fused.lower()
    if layer_type in ("Convolution", "GroupConvolution"):
        if layer_type == "GroupConvolution" or (weight_shape and len(weight_shape) == 5 and weight_shape[2] == 1):
            return "depthwise conv"
        if weight_shape and weight_shape[-1] == 1 and weight_shape[-2] == 1:
            stage = _stage(out_shape[-1], img_size) if out_shape else ""
            return f"conv 1x1 {stage}" if stage else "conv kxk (stem, downsample, 3x3)"
        return "conv kxk (stem, downsample, 3x3)"
    if layer_type in _ACTIVATIONS:
        return "activation"
    if layer_type in ("Split", "VariadicSplit", "Concat", "Concatenation", "StridedSlice", "Slice", "Gather", "Crop"):
        return "split/concat"
    if layer_type == "Reorder":
        return "reorder"
    if layer_type in ("FakeQuantize", "PowerStatic", "Subtract", "Multiply", "Convert"):
        return "quantize/dequantize"
    if layer_type in ("Add", "Eltwise", "Subgraph"):
        if any(a.lower() in low for a in ("gelu", "erf", "hswish", "hardswish", "tanh")):
            return "activation"
        if "add" in low:
            return "residual add"
        if "fakequantize" in low or "subtract" in low:
            return "quantize/dequantize"
    return "other (pool, head)"


def _shape(partial) -> Optional[list]:
    return [d.get_length() if d.is_static else -1 for d in partial] if partial.rank.is_static else None


def profile_openvino(
    path: str,
    batch_size: int,
    img_size: int,
    precision: str = "fp32",
    iters: int = 10,
    threads: int = 1,
    label: str = "",
) -> Breakdown:
    """Compile `path` (.xml or .onnx) with PERF_COUNT at a static batch and profile `iters` inferences."""
    model = read_runtime_model(path) if str(path).endswith(".xml") else openvino_core().read_model(str(path))
    model.reshape([batch_size, 3, img_size, img_size])
    compiled = compile_openvino(
        model,
        {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "PERF_COUNT": True,
        },
    )
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((batch_size, 3, img_size, img_size)).astype(np.float32)
    for _ in range(2):
        request.infer({0: x})
    samples, walls = defaultdict(list), []
    for _ in range(iters):
        t0 = time.perf_counter()
        request.infer({0: x})
        walls.append(time.perf_counter() - t0)
        for info in request.get_profiling_info():
            if str(info.status).endswith(".EXECUTED"):
                samples[info.node_name].append(info.real_time.total_seconds() * 1e3)
    ops = {op.get_friendly_name(): op for op in compiled.get_runtime_model().get_ordered_ops()}
    out = Breakdown(label or str(path), batch_size, precision, {c: 0.0 for c in CATEGORIES})
    for name, times in samples.items():
        op = ops.get(name)
        layer_type = _rt(op, "layerType") if op is not None else "?"
        fused = _rt(op, "originalLayersNames") if op is not None else ""
        out_shape = _shape(op.get_output_partial_shape(0)) if op is not None else None
        weight_shape = None
        if op is not None and layer_type in ("Convolution", "GroupConvolution") and op.get_input_size() > 1:
            weight_shape = _shape(op.input_value(1).get_partial_shape())
        category = categorize(layer_type, out_shape, weight_shape, fused, img_size)
        layer = LayerTime(
            name,
            layer_type,
            _rt(op, "primitiveType") if op is not None else "",
            statistics.median(times),
            category,
            fused,
        )
        out.layers.append(layer)
        out.ms_by_category[category] += layer.ms
        if layer_type == "Convolution":  # fused names: the conv, its fq outputs, then any eltwise post-ops
            post_ops = [n for n in fused.split(",")[1:] if "fq_" not in n]
            adds = [n for n in post_ops if "add" in n.lower()]
            out.fused_add += bool(adds)
            out.fused_act += len(post_ops) > len(adds)
    out.layers_ms = sum(layer.ms for layer in out.layers)
    out.wall_ms = 1e3 * statistics.median(walls)
    out.nodes = len(out.layers)
    return out


def run_profile(
    models: List[str],
    precisions: List[str],
    batch_sizes: List[int],
    img_size: int = 224,
    num_classes: int = 1000,
    iters: int = 10,
    threads: int = 1,
    levers: List[str] = (),
    calibration: int = 8,
    log: Callable[[str], None] = None,
) -> List[Breakdown]:
    """The breakdown of every model variant on OpenVINO at each precision and batch size (int8 files quantized on
    random images, as the benchmark makes them)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = []
    with tempfile.TemporaryDirectory(prefix="inceptionnext-profile-") as tmp:
        files = PathFiles(tmp, img_size, calibration)
        for name, lever in model_variants(models, list(levers)):
            label = name if lever == "exact" else f"{name}+{lever}"
            model = build_variant(name, lever, num_classes)
            for precision in precisions:
                path = files.int8(label, model, "openvino") if precision == "int8" else files.onnx(label, model)
                for b in batch_sizes:
                    out.append(profile_openvino(path, b, img_size, precision, iters, threads, label))
                    log(f"profiled {label} openvino {precision} batch {b}")
    return out


def breakdown_table(breakdowns: List[Breakdown]) -> str:
    """Markdown, one table per (precision, batch size): ms and % of the summed layers per category, per model."""
    groups: Dict[tuple, List[Breakdown]] = defaultdict(list)
    for b in breakdowns:
        groups[(b.precision, b.batch_size)].append(b)
    parts = []
    for (precision, batch), group in groups.items():
        header = ["category"] + [f"{b.label} {u}" for b in group for u in ("ms", "%")]
        used = [c for c in CATEGORIES if any(b.ms_by_category.get(c, 0.0) > 0.0005 for b in group)]
        rows = [
            [c]
            + [
                v
                for b in group
                for v in (f"{b.ms_by_category[c]:.2f}", f"{100 * b.ms_by_category[c] / b.layers_ms:.1f}")
            ]
            for c in used
        ]
        rows.append(["sum of layers"] + [v for b in group for v in (f"{b.layers_ms:.2f}", "100")])
        rows.append(
            ["wall clock of infer()"]
            + [v for b in group for v in (f"{b.wall_ms:.2f}", f"{100 * b.wall_ms / b.layers_ms:.0f}")]
        )
        title = f"OpenVINO {precision}, batch {batch}: ms per batch by layer category (PERF_COUNT, median per node)"
        parts.append(markdown_table(header, rows, title="**" + title + "**\n"))
        parts.append(
            "\n".join(
                f"- {b.label}: {b.nodes} executed nodes; convs with a fused activation {b.fused_act}, "
                f"with the residual add fused {b.fused_add}"
                for b in group
            )
        )
    return "\n\n".join(parts)
