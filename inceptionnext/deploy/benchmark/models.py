"""Throughput and peak memory of our InceptionNeXt beside timm's models, measured in one run.

Our models (registered by ``import inceptionnext``) run in several variants: fused token-mixer kernel
on/off (``inceptionnext.ops.fast_path(True/False)``; on CPU only the reference exists, so only "ref" runs and the
table says so) and, for inference, folded on/off (``inceptionnext.deploy.reparameterize_model``).
timm's models run as timm builds them. Flags follow timm's benchmark.py where they overlap.

    inceptionnext benchmark --model inceptionnext_t,inception_next_tiny,convnext_tiny,resnet50 \
        --bench both --amp-dtype bfloat16 --channels-last --batch-size 128 --results-file out.json --plot fig1.png
"""

import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import timm
import torch
import torch.nn as nn

from ...models.fold import reparameterize_model
from ...ops import fast_path, fast_path_available
from ...utils.plots import pyplot, save_figure
from ...utils.tables import cell, markdown_table
from .common import BASELINE, is_ours, paper_top1, timm_counterpart

# ImageNet-1k top-1 (%) from the InceptionNeXt paper (Table 1/2; ConvNeXt rows as reported there), keyed by
# every name the model goes by here. The one place these figures live; the plot reads them.


DEFAULT_MODELS = (
    "inceptionnext_a,inception_next_atto,convnext_atto,inceptionnext_t,inception_next_tiny,convnext_tiny,resnet50"
)
AMP_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Variant:
    """How one model is run: fused kernel forced on/off (None: timm's model, nothing to force) and folding."""

    label: str
    fast: Optional[bool] = None
    folded: bool = False
    note: str = ""


@dataclass
class Result:
    model: str
    variant: str
    bench: str
    setting: str
    batch_size: int
    img_size: int
    ours: bool
    img_per_s: Optional[float] = None
    ms_per_step: Optional[float] = None
    ms_per_step_all: List[float] = field(default_factory=list)
    img_per_s_rounds: List[float] = field(default_factory=list)
    peak_mem_mib: Optional[float] = None
    vs_timm: Optional[float] = None
    vs_resnet50: Optional[float] = None
    note: str = ""
    error: str = ""


def variants_for(name: str, bench: str, device: torch.device, wanted: set) -> List[Variant]:
    """Ours: fast/ref x folded/unfolded (folding is inference-only); timm's: one plain variant.

    `wanted` names values on either axis; an axis it leaves out runs all its values. 'fast' where the fused
    kernel cannot run falls back to 'ref', with a note saying so.
    """
    if not is_ours(name):
        return [Variant("timm")]
    fast_ok = fast_path_available(device)
    kernel_axis = wanted & {"fast", "ref"} or {"fast", "ref"}
    kernels = []
    if "fast" in kernel_axis and fast_ok:
        kernels.append((True, "fast", ""))
    if "ref" in kernel_axis or not fast_ok:
        kernels.append((False, "ref", "" if fast_ok else f"fused kernel unavailable on {device.type}; reference path"))
    fold_axis = wanted & {"folded", "unfolded"} or {"folded", "unfolded"}
    folds = [f for f in (False, True) if ("folded" if f else "unfolded") in fold_axis]
    # a folded model has no BatchNorm to train (train and mixer use the unfolded one); the ConvNeXt
    # ablations use LayerNorm, which has nothing to fold
    if bench != "inference" or not name.startswith("inceptionnext"):
        folds = [False]
    return [
        Variant(f"ours {k}{' folded' if f else ''}", fast=fast, folded=f, note=note)
        for fast, k, note in kernels
        for f in folds
    ]


def setting_label(args) -> str:
    dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[args.amp_dtype]
    parts = [dtype, "cl" if args.channels_last else "nchw", "compiled" if args.torchcompile else "eager"]
    return " ".join(parts)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def silenced_stderr():
    """The profiler's C++ side prints start/stop lines straight to file descriptor 2; keep them off the report."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cpu_peak_mib(step) -> Optional[float]:
    """Peak of live CPU tensor memory (parameters included, like CUDA's allocator peak) over one extra step,
    from the profiler's memory timeline. Untimed; None when the profiler cannot say."""
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        with (
            silenced_stderr(),
            profile(
                activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
            ) as prof,
        ):
            step()
        _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
        return max(sum(s) for s in sizes) / 2**20 if sizes else None
    except Exception:  # a private API: losing the memory column must not lose the timing
        return None


def build_model(name: str, variant: Variant, args, device: torch.device, train: bool) -> nn.Module:
    model = timm.create_model(name, pretrained=False, num_classes=args.num_classes)
    model.to(device)
    if train:
        model.train()
    else:
        model.eval()
        if variant.folded:
            model = reparameterize_model(model, inplace=True)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.torchcompile:
        model = torch.compile(model, backend=args.torchcompile, mode=args.torchcompile_mode)
    return model


def timed_step(step, device) -> float:
    t0 = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - t0


def peak_memory_mib(step, args, device) -> Optional[float]:
    """Peak memory of one extra, untimed step: CUDA's allocator peak, or on CPU the profiler's timeline."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    return cpu_peak_mib(step) if args.cpu_memory else None


def time_steps(step, args, device) -> (List[float], Optional[float]):
    """timm's recipe: warm-up steps, then timed steps each closed by a device synchronize; then the peak memory."""
    for _ in range(args.num_warm_iter):
        step()
    synchronize(device)
    times = [timed_step(step, device) for _ in range(args.num_bench_iter)]
    return times, peak_memory_mib(step, args, device)


def autocast(args, device):
    if args.amp_dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[args.amp_dtype])


def make_input(args, device, shape=None) -> torch.Tensor:
    shape = shape or (args.batch_size, 3, args.img_size, args.img_size)
    x = torch.randn(shape, device=device)
    return x.contiguous(memory_format=torch.channels_last) if args.channels_last else x


def new_row(name: str, variant: Variant, bench: str, args, error: str = "") -> Result:
    return Result(
        name,
        variant.label,
        bench,
        setting_label(args),
        args.batch_size,
        args.img_size,
        ours=variant.label != "timm",
        note=variant.note,
        error=error,
    )


def make_step(name: str, variant: Variant, bench: str, args, device):
    """One inference or training step of a freshly built model, run with the variant's kernel choice."""
    with fast_path(variant.fast):
        train = bench == "train"
        model = build_model(name, variant, args, device, train)
    x = make_input(args, device)
    if train:
        target = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()

        def run():
            with autocast(args, device):
                loss = loss_fn(model(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:

        def run():
            with torch.inference_mode(), autocast(args, device):
                model(x)

    def step():
        with fast_path(variant.fast):  # the ops read the switch at call time
            run()

    return step


def bench_model(name: str, variant: Variant, bench: str, args, device) -> Result:
    """Time one (model, variant, bench) on its own and return its row."""
    row = new_row(name, variant, bench, args)
    if bench == "mixer":
        with fast_path(variant.fast):
            return bench_mixer(name, variant, args, device, row)
    times, peak = time_steps(make_step(name, variant, bench, args, device), args, device)
    return _fill(row, times, peak)


def bench_interleaved(jobs, args, device) -> List[Result]:
    """All models built first, then each timed step goes round the models in turn, so a slow spell of a shared
    machine lands on every model alike (model and mixer benches; one row per job)."""
    rows, steps = [], []
    for name, variant, bench in jobs:
        try:
            if bench == "mixer":
                rows.append(bench_model(name, variant, bench, args, device))
                steps.append(None)
                continue
            step = make_step(name, variant, bench, args, device)
            for _ in range(args.num_warm_iter):
                step()
            rows.append(new_row(name, variant, bench, args))
            steps.append(step)
        except Exception as e:
            rows.append(new_row(name, variant, bench, args, error=f"{type(e).__name__}: {e}"[:300]))
            steps.append(None)
    times = [[] for _ in jobs]
    for _ in range(args.num_bench_iter):
        for i, step in enumerate(steps):
            if step is not None:
                times[i].append(timed_step(step, device))
    for row, step, t in zip(rows, steps, times):
        if step is not None:
            _fill(row, t, peak_memory_mib(step, args, device))
    return rows


def _fill(row: Result, times: List[float], peak: Optional[float]) -> Result:
    med = statistics.median(times)
    row.ms_per_step = med * 1e3
    row.ms_per_step_all = [t * 1e3 for t in times]
    row.img_per_s = row.batch_size / med
    row.peak_mem_mib = peak
    return row


def first_token_mixer(model: nn.Module) -> Optional[nn.Module]:
    for stage in getattr(model, "stages", []):
        for block in getattr(stage, "blocks", []):
            if hasattr(block, "token_mixer"):
                return block.token_mixer
    return None


def bench_mixer(name, variant, args, device, row: Result) -> Result:
    """The first stage's token mixer alone on its real input shape: forward (ms/step) and forward+backward
    (reported in the note). Models without a MetaNeXt token mixer get a row saying so."""
    model = timm.create_model(name, pretrained=False, num_classes=args.num_classes)
    mixer = first_token_mixer(model)
    if mixer is None:
        row.error = "no MetaNeXt token mixer"
        return row
    chs = model.stages[0].blocks[0].mlp.fc1.in_channels
    reduction = model.feature_info[0]["reduction"] if getattr(model, "feature_info", None) else 4
    mixer = mixer.to(device)
    if args.channels_last:
        mixer = mixer.to(memory_format=torch.channels_last)
    if args.torchcompile:
        mixer = torch.compile(mixer, backend=args.torchcompile, mode=args.torchcompile_mode)
    side = args.img_size // reduction
    x = make_input(args, device, (args.batch_size, chs, side, side))

    def fwd():
        with torch.no_grad(), autocast(args, device):
            mixer(x)

    times, peak = time_steps(fwd, args, device)
    _fill(row, times, peak)
    xg = x.detach().requires_grad_(True)

    def fwd_bwd():
        with autocast(args, device):
            out = mixer(xg)
        out.float().sum().backward()

    times_bwd, _ = time_steps(fwd_bwd, args, device)
    fb = statistics.median(times_bwd) * 1e3
    row.note = "; ".join(filter(None, [row.note, f"input {tuple(x.shape)}, fwd+bwd {fb:.3f} ms"]))
    return row


def add_ratios(rows: List[Result]) -> None:
    """vs timm: our row / timm's counterpart (same bench and setting); vs resnet50 likewise."""

    def speed(model, bench, setting):
        for r in rows:
            if r.model == model and r.bench == bench and r.setting == setting and r.variant == "timm" and r.img_per_s:
                return r.img_per_s
        return None

    for r in rows:
        if not r.img_per_s:
            continue
        if r.ours:
            ref = speed(timm_counterpart(r.model), r.bench, r.setting)
            r.vs_timm = r.img_per_s / ref if ref else None
        base = speed(BASELINE, r.bench, r.setting)
        if base and r.bench != "mixer":
            r.vs_resnet50 = r.img_per_s / base


def results_table(rows: List[Result], env: Dict[str, str]) -> str:
    """Markdown: the device and command, then one row per (model, variant, bench) with its ratios."""
    lines = [
        f"Device: {env['device']} | torch {env['torch']} | timm {env['timm']} | triton {env['triton']}"
        + (f" | CUDA {env['cuda']}" if "cuda" in env else ""),
        "",
    ]
    if env.get("command"):
        lines += [f"Command: `{env['command']}`", ""]
    lines += [
        "img/s and ms/step: median over timed steps. Peak mem: "
        + (
            "CUDA allocator peak over the timed steps."
            if "cuda" in env
            else "peak live tensor memory (parameters included) of one profiled step."
        ),
        "",
    ]
    header = [
        "model",
        "variant",
        "bench",
        "setting",
        "batch",
        "img/s",
        "ms/step",
        "peak mem (MiB)",
        "vs timm",
        "vs resnet50",
        "note",
    ]
    body = [
        (
            r.model,
            r.variant,
            r.bench,
            r.setting,
            r.batch_size,
            cell(r.img_per_s, ".1f"),
            cell(r.ms_per_step, ".2f"),
            cell(r.peak_mem_mib, ".0f"),
            cell(r.vs_timm, ".2f", "x"),
            cell(r.vs_resnet50, ".2f", "x"),
            r.error or r.note,
        )
        for r in rows
    ]
    return "\n".join(lines + [markdown_table(header, body)])


def plot(rows: List[Result], path: str, bench: str, env: Dict[str, str]) -> None:
    """The paper's Figure 1 redrawn with our measurements: img/s (x) against the paper's top-1 (y)."""
    plt = pyplot()

    measured = [r for r in rows if r.bench == bench and r.img_per_s and paper_top1(r.model) is not None]
    # one point per (model, ours/timm): ours at its fastest variant
    best: Dict[tuple, Result] = {}
    for r in measured:
        key = (r.model, r.ours)
        if key not in best or r.img_per_s > best[key].img_per_s:
            best[key] = r
    pts = sorted(best.values(), key=lambda r: (paper_top1(r.model), r.img_per_s))
    fig, ax = plt.subplots(figsize=(7, 5))
    seen_top1: Dict[float, int] = {}
    for r in pts:
        top1 = paper_top1(r.model)
        marker, color = ("*", "tab:red") if r.ours else ("o", "tab:blue")
        ax.scatter(
            r.img_per_s, top1, marker=marker, s=120 if r.ours else 50, color=color, label="ours" if r.ours else "timm"
        )
        nth = seen_top1[top1] = seen_top1.get(top1, -1) + 1  # stagger labels of points at the same top-1
        ax.annotate(
            f"{r.model} ({r.variant})",
            (r.img_per_s, top1),
            fontsize=7,
            xytext=(4, 3 - 10 * nth),
            textcoords="offset points",
        )
    speeds = [r.img_per_s for r in pts]
    if speeds and max(speeds) > 4 * min(speeds):  # atto beside tiny/base: spread the slow end
        ax.set_xscale("log")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), loc="best", fontsize=8)
    ax.set_xlabel(
        f"{bench} throughput (img/s), {pts[0].setting if pts else ''}, batch {rows[0].batch_size if rows else ''}"
    )
    ax.set_ylabel("ImageNet-1k top-1 (%, paper)")
    ax.set_title(f"Throughput on {env['device']}\n(torch {env['torch']}, timm {env['timm']})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def run(args) -> List[Result]:
    from tqdm import tqdm

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    benches = {"both": ["inference", "train"], "all": ["inference", "train", "mixer"]}.get(args.bench, [args.bench])
    jobs = [(m, v, b) for b in benches for m in args.models for v in variants_for(m, b, device, args.variant_set)]
    # --repeats runs the whole list several times so a slow spell on a shared machine hits every model
    # alike; the steps of all rounds are pooled into one median per row
    rounds: List[List[Result]] = [[] for _ in jobs]
    if args.interleave:
        for _ in tqdm(range(args.repeats), desc="benchmark rounds", disable=args.no_progress, file=sys.stderr):
            for i, row in enumerate(bench_interleaved(jobs, args, device)):
                rounds[i].append(row)
    else:
        schedule = [i for _ in range(args.repeats) for i in range(len(jobs))]
        for i in tqdm(schedule, desc="benchmark", disable=args.no_progress, file=sys.stderr):
            name, variant, bench = jobs[i]
            try:
                rounds[i].append(bench_model(name, variant, bench, args, device))
            except Exception as e:  # one failing model (OOM, unsupported op) should not lose the others' rows
                rounds[i].append(new_row(name, variant, bench, args, error=f"{type(e).__name__}: {e}"[:300]))
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    rows = [_merge_rounds(r) for r in rounds]
    add_ratios(rows)
    return rows


def _merge_rounds(results: List[Result]) -> Result:
    """One row from a job's rounds: all timed steps pooled, per-round img/s kept to show the spread."""
    row = results[0]
    failed = [r for r in results if r.error]
    if failed:
        row.error = failed[0].error
        return row
    if len(results) > 1:
        row.img_per_s_rounds = [r.img_per_s for r in results]
        peaks = [r.peak_mem_mib for r in results if r.peak_mem_mib is not None]
        _fill(row, [t / 1e3 for r in results for t in r.ms_per_step_all], max(peaks) if peaks else None)
    else:
        row.img_per_s_rounds = [row.img_per_s]
    return row
