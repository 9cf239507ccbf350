"""Throughput across deployment paths (runtime x precision): ours, timm's port of the same architecture and
resnet50 through the same runtime, precision and quantizer, built first and then timed interleaved, so a slow
spell of a shared machine lands on every model alike.

Ours runs folded (`deploy.reparameterize_model`); timm's models run as timm builds them (ONNX Runtime and
OpenVINO fold what they can themselves). int8 files come from `quantize.quantize_onnx` calibrated on random
images: right for speed, not for accuracy (`inceptionnext quantize` checks accuracy on real images).

    inceptionnext benchmark --runtime onnxruntime,openvino --precision fp32,int8 \
        --model inceptionnext_t,inception_next_tiny,resnet50 --batch-size 16 --results-file paths.json --plot paths.png
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

from ...models.fold import reparameterize_model
from ...utils.plots import pyplot, save_figure
from ...utils.tables import cell, markdown_table
from ..export import export_model
from ..quantize import BACKENDS, quantize_onnx
from ..runtimes import RUNTIME_PRECISIONS, RuntimeUnavailable, TorchRuntime, available_runtimes, load_runtime
from .common import BASELINE, is_ours, timm_counterpart

__all__ = ["PathResult", "deployment_paths", "run_paths", "paths_table", "plot_paths"]


@dataclass
class PathResult:
    model: str
    runtime: str
    precision: str
    batch_size: int
    img_size: int
    ours: bool
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


def deployment_paths(runtimes: List[str], precisions: List[str]) -> List[tuple]:
    """The (runtime, precision) pairs asked for that the runtime runs, in the order given."""
    return [(r, p) for r in runtimes for p in precisions if p in RUNTIME_PRECISIONS[r]]


def _build(name: str, num_classes: int, img_size: int) -> nn.Module:
    model = timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    if is_ours(name) and name.startswith("inceptionnext"):
        model = reparameterize_model(model, inplace=True)
    return model


class _Files:
    """One fp32 ONNX export per model and one int8 file per (model, quantizer), made on first use."""

    def __init__(self, tmp: str, img_size: int, calibration: int):
        self.tmp, self.img_size, self.calibration = tmp, img_size, calibration
        self.cache: Dict[tuple, str] = {}

    def onnx(self, name: str, model: nn.Module) -> str:
        key = (name, "fp32")
        if key not in self.cache:
            path = os.path.join(self.tmp, f"{name}.onnx")
            export_model(model, path, "onnx", input_size=(3, self.img_size, self.img_size), check=False)
            self.cache[key] = path
        return self.cache[key]

    def int8(self, name: str, model: nn.Module, backend: str) -> str:
        key = (name, backend)
        if key not in self.cache:
            g = torch.Generator().manual_seed(0)
            images = torch.randn(self.calibration, 3, self.img_size, self.img_size, generator=g)
            out = os.path.join(self.tmp, f"{name}_int8_{backend}{BACKENDS[backend]}")
            self.cache[key] = quantize_onnx(self.onnx(name, model), out, images, backend)
        return self.cache[key]


def _runner(name: str, model: nn.Module, runtime: str, precision: str, files: _Files, threads: int):
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
    batch_size: int = 16,
    img_size: int = 224,
    num_classes: int = 1000,
    warmup: int = 1,
    rounds: int = 5,
    threads: Optional[int] = None,
    calibration: int = 8,
    progress: bool = True,
    log: Callable[[str], None] = None,
) -> List[PathResult]:
    """Build every (model, path), then time `rounds` batches of each in turn; median img/s per row."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True) if progress else None)
    threads = threads or torch.get_num_threads()
    have = set(available_runtimes())
    x = torch.randn(batch_size, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
    rows, steps = [], []
    with tempfile.TemporaryDirectory(prefix="inceptionnext-bench-") as tmp:
        files = _Files(tmp, img_size, calibration)
        built = {name: _build(name, num_classes, img_size) for name in models}
        for runtime, precision in paths:
            for name in models:
                row = PathResult(name, runtime, precision, batch_size, img_size, is_ours(name))
                rows.append(row)
                steps.append(None)
                if runtime not in have:
                    row.error = f"{runtime} not installed"
                    continue
                t0 = time.perf_counter()
                try:
                    run, row.note = _runner(name, built[name], runtime, precision, files, threads)
                    for _ in range(max(warmup, 1)):  # compiles and first-run allocations happen here
                        run(x)
                    steps[-1] = run
                except (RuntimeUnavailable, RuntimeError, ValueError) as e:
                    row.error = f"{type(e).__name__}: {e}"[:300]
                log(
                    f"built {name} on {runtime} {precision} in {time.perf_counter() - t0:.0f}s"
                    + (f" ({row.error})" if row.error else "")
                )
        times: List[List[float]] = [[] for _ in rows]
        for r in range(rounds):
            for i, run in enumerate(steps):
                if run is not None:
                    t0 = time.perf_counter()
                    run(x)
                    times[i].append(time.perf_counter() - t0)
            log(f"round {r + 1}/{rounds} done")
    for row, t in zip(rows, times):
        if t:
            med = statistics.median(t)
            row.ms_per_batch, row.img_per_s = 1e3 * med, batch_size / med
            row.img_per_s_rounds = [round(batch_size / s, 2) for s in t]
    _ratios(rows)
    return rows


def _ratios(rows: List[PathResult]) -> None:
    speed = {(r.model, r.path): r.img_per_s for r in rows if r.img_per_s}
    for r in rows:
        if not r.img_per_s:
            continue
        ref = speed.get((timm_counterpart(r.model), r.path)) if r.ours else None
        r.vs_timm = r.img_per_s / ref if ref else None
        base = speed.get((BASELINE, r.path))
        r.vs_resnet50 = r.img_per_s / base if base else None


def paths_table(rows: List[PathResult], env: Dict[str, str]) -> str:
    """Markdown: one row per (path, model), ratios to timm's port and to resnet50 on the same path, and for each
    model its best path."""
    lines = [
        f"Device: {env['device']} | torch {env['torch']} | timm {env['timm']} | "
        f"{' | '.join(f'{k} {v}' for k, v in env.items() if k in ('onnxruntime', 'openvino'))}",
        "",
    ]
    if env.get("command"):
        lines += [f"Command: `{env['command']}`", ""]
    lines += ["img/s: median over the timed rounds, all paths interleaved in one run.", ""]
    lines += markdown_table(
        ["path", "model", "batch", "img/s", "ms/batch", "vs timm", "vs resnet50", "note"],
        [
            (
                r.path,
                r.model,
                r.batch_size,
                cell(r.img_per_s, ".1f"),
                cell(r.ms_per_batch, ".0f"),
                cell(r.vs_timm, ".2f", "x"),
                cell(r.vs_resnet50, ".2f", "x"),
                r.error or r.note,
            )
            for r in rows
        ],
    ).split("\n")
    best = {}
    for r in rows:
        if r.img_per_s and (r.model not in best or r.img_per_s > best[r.model].img_per_s):
            best[r.model] = r
    if best:
        lines += [
            "",
            "Best path per model: " + "; ".join(f"{m}: {r.path} {r.img_per_s:.1f} img/s" for m, r in best.items()),
        ]
        ours = [r for m, r in best.items() if r.ours]
        for r in ours:
            other = best.get(timm_counterpart(r.model))
            if other:
                lines.append(f"{r.model} best / {other.model} best: {r.img_per_s / other.img_per_s:.2f}x")
    return "\n".join(lines)


def plot_paths(rows: List[PathResult], path: str, env: Dict[str, str]) -> None:
    """Grouped bars: img/s on each path, one bar per model."""
    plt = pyplot()

    labels = list(dict.fromkeys(r.path for r in rows))
    models = list(dict.fromkeys(r.model for r in rows))
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels)), 4.5))
    for j, m in enumerate(models):
        vals = [next((r.img_per_s or 0 for r in rows if r.model == m and r.path == p), 0) for p in labels]
        ax.bar([i + (j - (len(models) - 1) / 2) * width for i in range(len(labels))], vals, width, label=m)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, fontsize=8)
    ax.set_ylabel(f"img/s (batch {rows[0].batch_size if rows else ''}, {rows[0].img_size if rows else ''} px)")
    ax.set_title(f"Throughput by deployment path on {env['device']}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def environment_versions() -> Dict[str, str]:
    out = {}
    for name in ("onnxruntime", "openvino"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?").split("-")[0]
        except ImportError:
            out[name] = "not installed"
    return out
