"""Throughput across deployment paths (runtime x precision x batch size): ours (exact, and with each deploy lever
asked for), timm's port of the same architecture, ConvNeXt-T and resnet50 through the same runtime, precision and
quantizer, built first and then timed interleaved, so a slow spell of a shared machine lands on every row alike.

Ours runs folded (`deploy.reparameterize_model`); timm's models run as timm builds them (ONNX Runtime and
OpenVINO fold what they can themselves). int8 files come from `quantize.quantize_onnx` calibrated on random
images: right for speed, not for accuracy (`inceptionnext quantize` checks accuracy on real images).

    inceptionnext benchmark --runtime onnxruntime,openvino --precision fp32,int8 --levers fast-act \
        --model inceptionnext_t,inception_next_tiny,convnext_tiny,resnet50 --batch-size 1,16 --results-file paths.json
"""

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import timm
import torch
import torch.nn as nn

from ...utils.cpu import cpu_flags
from ...utils.plots import pyplot, save_figure
from ...utils.tables import cell, markdown_table
from ..export import export_model
from ..levers import apply_levers, lever_label
from ..quantize import BACKENDS, quantize_onnx
from ..runtimes import RUNTIME_PRECISIONS, RuntimeUnavailable, TorchRuntime, available_runtimes, load_runtime
from .common import BASELINE, is_ours, timm_counterpart

__all__ = [
    "PathResult",
    "PathFiles",
    "RUNTIME_MODELS",
    "deployment_paths",
    "model_variants",
    "build_variant",
    "run_paths",
    "paths_table",
    "plot_paths",
]

SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
RUNTIME_MODELS = "inceptionnext_t,inception_next_tiny,convnext_tiny,resnet50"  # --runtime's default models


@dataclass
class PathResult:
    model: str
    runtime: str
    precision: str
    batch_size: int
    img_size: int
    ours: bool
    levers: str = "exact"  # the deploy levers this row's model runs ('exact': none)
    img_per_s: Optional[float] = None
    ms_per_batch: Optional[float] = None
    img_per_s_rounds: List[float] = field(default_factory=list)
    vs_timm: Optional[float] = None
    vs_resnet50: Optional[float] = None
    note: str = ""
    error: str = ""

    @property
    def path(self) -> str:
        return f"{self.runtime} {self.precision}"

    @property
    def label(self) -> str:
        """The model with its levers, e.g. 'inceptionnext_t+fast-act'."""
        return self.model if self.levers == "exact" else f"{self.model}+{self.levers}"


def deployment_paths(runtimes: List[str], precisions: List[str]) -> List[tuple]:
    """The (runtime, precision) pairs asked for that the runtime runs, in the order given."""
    return [(r, p) for r in runtimes for p in precisions if p in RUNTIME_PRECISIONS[r]]


def _foldable(name: str) -> bool:
    return is_ours(name) and name.startswith("inceptionnext")


def model_variants(models: List[str], levers: List[str]) -> List[tuple]:
    """(model, levers label) pairs: every model exact, and each of ours that folds once per lever asked for."""
    out = []
    for name in models:
        out.append((name, "exact"))
        out += [(name, lever_label([lever])) for lever in levers if _foldable(name)]
    return out


def build_variant(name: str, levers: str, num_classes: int) -> nn.Module:
    """The model as the benchmark runs it: ours folded (with its levers), timm's as timm builds it."""
    model = timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    if _foldable(name):
        return apply_levers(model, None if levers == "exact" else levers.split("+"))
    return model


class PathFiles:
    """One fp32 ONNX export per model variant and one int8 file per (variant, quantizer), made on first use."""

    def __init__(self, tmp: str, img_size: int, calibration: int):
        self.tmp, self.img_size, self.calibration = tmp, img_size, calibration
        self.cache: Dict[tuple, str] = {}

    def onnx(self, name: str, model: nn.Module) -> str:
        key = (name, "fp32")
        if key not in self.cache:
            path = os.path.join(self.tmp, f"{name.replace('+', '_')}.onnx")
            export_model(model, path, "onnx", input_size=(3, self.img_size, self.img_size), check=False)
            self.cache[key] = path
        return self.cache[key]

    def int8(self, name: str, model: nn.Module, backend: str) -> str:
        key = (name, backend)
        if key not in self.cache:
            g = torch.Generator().manual_seed(0)
            images = torch.randn(self.calibration, 3, self.img_size, self.img_size, generator=g)
            out = os.path.join(self.tmp, f"{name.replace('+', '_')}_int8_{backend}{BACKENDS[backend]}")
            self.cache[key] = quantize_onnx(self.onnx(name, model), out, images, backend)
        return self.cache[key]


def _runner(name: str, model: nn.Module, runtime: str, precision: str, files: PathFiles, threads: int):
    """A callable that runs one batch on the path, and a note for the table."""
    if runtime in ("torch", "torch.compile"):
        # ours is folded already; timm's models run as timm builds them (no folding of timm's port)
        wrapped = TorchRuntime(model, precision, compiled=runtime == "torch.compile", fold=False)
        return wrapped, ""
    if precision == "int8":
        backend = "openvino" if runtime == "openvino" else "onnxruntime"
        return load_runtime(files.int8(name, model, backend), threads=threads), "random calibration (speed only)"
    return load_runtime(files.onnx(name, model), runtime=runtime, precision=precision, threads=threads), ""


def run_paths(
    models: List[str],
    paths: List[tuple],
    batch_sizes=(16,),
    img_size: int = 224,
    num_classes: int = 1000,
    warmup: int = 1,
    rounds: int = 5,
    threads: Optional[int] = None,
    calibration: int = 8,
    progress: bool = True,
    log: Callable[[str], None] = None,
    levers: List[str] = (),
) -> List[PathResult]:
    """Build every (model variant, path), then time `rounds` batches of each (at every batch size) in turn; median
    img/s per row. `levers` adds rows for ours with each lever."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True) if progress else None)
    threads = threads or torch.get_num_threads()
    batch_sizes = [batch_sizes] if isinstance(batch_sizes, int) else list(batch_sizes)
    have = set(available_runtimes())
    gen = torch.Generator().manual_seed(1)
    inputs = {b: torch.randn(b, 3, img_size, img_size, generator=gen) for b in batch_sizes}
    variants = model_variants(models, list(levers))
    rows, steps = [], []
    with tempfile.TemporaryDirectory(prefix="inceptionnext-bench-") as tmp:
        files = PathFiles(tmp, img_size, calibration)
        built = {v: build_variant(v[0], v[1], num_classes) for v in variants}
        for runtime, precision in paths:
            for name, lever in variants:
                label = name if lever == "exact" else f"{name}+{lever}"
                run, note, error = None, "", ""
                if runtime not in have:
                    error = f"{runtime} not installed"
                else:
                    t0 = time.perf_counter()
                    try:
                        run, note = _runner(label, built[(name, lever)], runtime, precision, files, threads)
                        for b in batch_sizes:
                            for _ in range(max(warmup, 1)):  # compiles and first-run allocations happen here
                                run(inputs[b])
                    except (RuntimeUnavailable, RuntimeError, ValueError) as e:
                        run, error = None, f"{type(e).__name__}: {e}"[:300]
                    log(
                        f"built {label} on {runtime} {precision} in {time.perf_counter() - t0:.0f}s"
                        + (f" ({error})" if error else "")
                    )
                for b in batch_sizes:
                    rows.append(
                        PathResult(name, runtime, precision, b, img_size, is_ours(name), lever, note=note, error=error)
                    )
                    steps.append(run)
        times: List[List[float]] = [[] for _ in rows]
        for r in range(rounds):
            for i, (row, run) in enumerate(zip(rows, steps)):
                if run is not None:
                    t0 = time.perf_counter()
                    run(inputs[row.batch_size])
                    times[i].append(time.perf_counter() - t0)
            log(f"round {r + 1}/{rounds} done")
    for row, t in zip(rows, times):
        if t:
            med = statistics.median(t)
            row.ms_per_batch, row.img_per_s = 1e3 * med, row.batch_size / med
            row.img_per_s_rounds = [round(row.batch_size / s, 2) for s in t]
    rows.sort(key=lambda r: (r.batch_size, r.path))  # stable: models keep their order within a path
    _ratios(rows)
    return rows


def _ratios(rows: List[PathResult]) -> None:
    """Each row against timm's port (ours only) and resnet50, both exact, on the same path and batch size."""
    speed = {(r.model, r.path, r.batch_size): r.img_per_s for r in rows if r.img_per_s and r.levers == "exact"}
    for r in rows:
        if not r.img_per_s:
            continue
        ref = speed.get((timm_counterpart(r.model), r.path, r.batch_size)) if r.ours else None
        r.vs_timm = r.img_per_s / ref if ref else None
        base = speed.get((BASELINE, r.path, r.batch_size))
        r.vs_resnet50 = r.img_per_s / base if base else None


def best_paths(rows: List[PathResult]) -> Dict[tuple, PathResult]:
    """The fastest row per (batch size, model with its levers)."""
    best: Dict[tuple, PathResult] = {}
    for r in rows:
        key = (r.batch_size, r.label)
        if r.img_per_s and (key not in best or r.img_per_s > best[key].img_per_s):
            best[key] = r
    return best


def paths_table(rows: List[PathResult], env: Dict[str, str]) -> str:
    """Markdown: one row per (path, model), ratios to timm's port and to resnet50 on the same path, and for each
    model its best path."""
    lines = [
        f"Device: {env['device']} | torch {env['torch']} | timm {env['timm']} | "
        f"{' | '.join(f'{k} {v}' for k, v in env.items() if k in ('onnxruntime', 'openvino'))}",
        f"CPU flags: {env.get('cpu_flags', 'unknown')}",
        "",
    ]
    if env.get("command"):
        lines += [f"Command: `{env['command']}`", ""]
    lines += ["img/s: median over the timed rounds, all paths interleaved in one run.", ""]
    lines += markdown_table(
        ["path", "model", "levers", "batch", "img/s", "ms/batch", "vs timm", "vs resnet50", "note"],
        [
            (
                r.path,
                r.model,
                r.levers,
                r.batch_size,
                cell(r.img_per_s, ".1f"),
                cell(r.ms_per_batch, ".1f"),
                cell(r.vs_timm, ".2f", "x"),
                cell(r.vs_resnet50, ".2f", "x"),
                r.error or r.note,
            )
            for r in rows
        ],
    ).split("\n")
    best = best_paths(rows)
    if best:
        lines += ["", "Best path per model and batch size (ours with each lever set; ratios of best paths):", ""]
        table = []
        for (batch, label), r in best.items():
            other = best.get((batch, timm_counterpart(r.model))) if r.ours else None
            base = best.get((batch, BASELINE))
            table.append(
                (
                    batch,
                    label,
                    r.path,
                    cell(r.img_per_s, ".1f"),
                    cell(other and r.img_per_s / other.img_per_s, ".2f", "x"),
                    cell(base and r.img_per_s / base.img_per_s, ".2f", "x"),
                )
            )
        lines += markdown_table(
            ["batch", "model", "best path", "img/s", "vs timm best", "vs resnet50 best"], table
        ).split("\n")
    return "\n".join(lines)


def plot_paths(rows: List[PathResult], path: str, env: Dict[str, str]) -> None:
    """Grouped bars: img/s on each path, one bar per model."""
    plt = pyplot()

    labels = list(dict.fromkeys(f"{r.path} b{r.batch_size}" for r in rows))
    models = list(dict.fromkeys(r.label for r in rows))
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels)), 4.5))
    for j, m in enumerate(models):
        vals = [
            next((r.img_per_s or 0 for r in rows if r.label == m and f"{r.path} b{r.batch_size}" == p), 0)
            for p in labels
        ]
        ax.bar([i + (j - (len(models) - 1) / 2) * width for i in range(len(labels))], vals, width, label=m)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, fontsize=8)
    ax.set_ylabel(f"img/s ({rows[0].img_size if rows else ''} px)")
    ax.set_title(f"Throughput by deployment path on {env['device']}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def environment_versions() -> Dict[str, str]:
    """The runtime versions and the CPU's flags that decide int8 and bf16 speed."""
    flags = cpu_flags() or frozenset()
    out = {"cpu_flags": " ".join(f for f in SPEED_FLAGS if f in flags) or "unknown"}
    for name in ("onnxruntime", "openvino"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?").split("-")[0]
        except ImportError:
            out[name] = "not installed"
    return out
