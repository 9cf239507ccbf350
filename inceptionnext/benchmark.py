"""Throughput and peak memory of our InceptionNeXt beside timm's models, measured in one run.

Our models (registered by ``import inceptionnext``) run in several variants: fused token-mixer kernel
on/off (``INCEPTIONNEXT_FAST_PATH=1/0``; on CPU only the reference exists, so only "ref" runs and the
table says so) and, for inference, folded on/off (``inceptionnext.deploy.reparameterize_model``).
timm's models run as timm builds them. Flags follow timm's benchmark.py where they overlap.

    inceptionnext benchmark --model inceptionnext_t,inception_next_tiny,convnext_tiny,resnet50 \
        --bench both --amp-dtype bfloat16 --channels-last --batch-size 128 --results-file out.json --plot fig1.png
"""
import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn as nn

import timm

from . import __version__
from .deploy import reparameterize_model
from .models.zoo import get_entry, paper_figures

FAST_ENV = "INCEPTIONNEXT_FAST_PATH"

# ImageNet-1k top-1 (%) from the InceptionNeXt paper (Table 1/2; ConvNeXt rows as reported there), keyed by
# every name the model goes by here. The one place these figures live; the plot reads them.


def paper_top1(name: str) -> Optional[float]:
    """The paper's ImageNet top-1 for a model name (ours, its official alias, timm's own, or a reference)."""
    figures = paper_figures(name)
    return figures["top1"] if figures else None


def timm_counterpart(name: str) -> str:
    """timm's implementation of the same architecture as our model `name` (the "vs timm" ratio), or ''."""
    try:
        return get_entry(name).timm_name or ""
    except KeyError:
        return ""


BASELINE = "resnet50"
DEFAULT_MODELS = "inceptionnext_a,inception_next_atto,convnext_atto,inceptionnext_t,inception_next_tiny,convnext_tiny,resnet50"
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


def parse_args(argv=None, prog: Optional[str] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False, prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", "-m", default=DEFAULT_MODELS, help="comma-separated timm model names")
    p.add_argument("--bench", default="inference", choices=["inference", "train", "both", "mixer", "all"],
                   help="what to time; 'mixer' times each MetaNeXt model's first token mixer alone, 'all' everything")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where to time")
    p.add_argument("--batch-size", "-b", type=int, default=128, help="images per step")
    p.add_argument("--img-size", type=int, default=224, help="input side in pixels")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs")
    p.add_argument("--amp-dtype", default="float32", choices=list(AMP_DTYPES),
                   help="float32 runs without autocast; bfloat16/float16 under torch.autocast")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for model and input")
    p.add_argument("--torchcompile", nargs="?", const="inductor", default=None, help="torch.compile backend")
    p.add_argument("--torchcompile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    p.add_argument("--num-warm-iter", type=int, default=10, help="untimed steps first")
    p.add_argument("--num-bench-iter", type=int, default=40, help="timed steps")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the whole model list this many times, interleaved (steadier on a shared machine)")
    p.add_argument("--interleave", action="store_true",
                   help="build every model first, then time one step of each in turn (fair on a noisy machine)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU runs")
    p.add_argument("--variants", default="all",
                   help="our variants to run: 'all' or a comma list of fast,ref,folded,unfolded")
    p.add_argument("--results-file", default=None, help="write the rows and environment as JSON here")
    p.add_argument("--plot", default=None, help="draw throughput vs the paper's top-1 as a PNG here")
    p.add_argument("--plot-bench", default=None, help="which bench the plot shows; None: the first measured")
    p.add_argument("--no-cpu-memory", dest="cpu_memory", action="store_false",
                   help="skip the profiled extra step that measures peak memory on CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--runtime", default=None,
                   help="deployment paths instead of the eager/train benchmark: comma list of torch, torch.compile, "
                        "onnxruntime, openvino (inference only; ours folded; int8 quantized on random images)")
    p.add_argument("--precision", default="fp32", help="with --runtime: comma list of fp32, bf16, int8")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.model.split(",") if m.strip()]
    if not args.models:
        p.error("--model is empty")
    unknown = [m for m in args.models if not timm.is_model(m)]
    if unknown:
        p.error(f"unknown model name(s) {unknown}; ours need `import inceptionnext` (done here), "
                f"the rest come from timm.list_models()")
    if args.batch_size < 1 or args.img_size < 8 or args.num_bench_iter < 1 or args.num_warm_iter < 0 \
            or args.repeats < 1:
        p.error("--batch-size, --num-bench-iter and --repeats must be >= 1, --img-size >= 8, --num-warm-iter >= 0")
    args.runtimes = [r.strip() for r in (args.runtime or "").split(",") if r.strip()]
    args.precisions = [q.strip() for q in args.precision.split(",") if q.strip()]
    from .runtimes import PRECISIONS, RUNTIMES
    if set(args.runtimes) - set(RUNTIMES) or set(args.precisions) - set(PRECISIONS) or not args.precisions:
        p.error(f"--runtime takes {', '.join(RUNTIMES)}; --precision takes {', '.join(PRECISIONS)}")
    wanted = {v.strip() for v in args.variants.split(",") if v.strip()}
    allowed = {"all", "fast", "ref", "folded", "unfolded"}
    if not wanted or wanted - allowed:
        p.error(f"--variants takes 'all' or a comma list of fast,ref,folded,unfolded; got {args.variants!r}")
    args.variant_set = {"fast", "ref", "folded", "unfolded"} if "all" in wanted else wanted
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda asked for but CUDA is not available")
    if args.amp_dtype == "float16" and args.device == "cpu":
        p.error("--amp-dtype float16 is not supported on CPU; use bfloat16 or float32")
    return args


def is_ours(name: str) -> bool:
    return timm.models.model_entrypoint(name).__module__.split(".")[0] == "inceptionnext"


def fast_path_available(device: torch.device) -> bool:
    try:
        from inceptionnext.ops import fast_path_available as available
    except ImportError:
        return False
    return bool(available(torch.empty(1, device=device)))


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
    return [Variant(f"ours {k}{' folded' if f else ''}", fast=fast, folded=f, note=note)
            for fast, k, note in kernels for f in folds]


@contextlib.contextmanager
def fast_path_env(fast: Optional[bool]):
    """Force our token mixer's path for the duration (timm's models ignore it)."""
    old = os.environ.get(FAST_ENV)
    if fast is not None:
        os.environ[FAST_ENV] = "1" if fast else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(FAST_ENV, None)
        else:
            os.environ[FAST_ENV] = old


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

        with silenced_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                                        record_shapes=True, with_stack=True) as prof:
            step()
        _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
        return max(sum(s) for s in sizes) / 2 ** 20 if sizes else None
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
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
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
    return Result(name, variant.label, bench, setting_label(args), args.batch_size, args.img_size,
                  ours=variant.label != "timm", note=variant.note, error=error)


def make_step(name: str, variant: Variant, bench: str, args, device):
    """One inference or training step of a freshly built model, run with the variant's kernel choice."""
    with fast_path_env(variant.fast):
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
        with fast_path_env(variant.fast):  # the ops read the switch at call time
            run()
    return step


def bench_model(name: str, variant: Variant, bench: str, args, device) -> Result:
    """Time one (model, variant, bench) on its own and return its row."""
    row = new_row(name, variant, bench, args)
    if bench == "mixer":
        with fast_path_env(variant.fast):
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


def environment(args, device) -> Dict[str, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name() + f", {torch.get_num_threads()} threads"
    env = {"device": name, "python": platform.python_version(), "torch": torch.__version__,
           "timm": timm.__version__, "inceptionnext": __version__}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = "not installed"
    if device.type == "cuda":
        env["cuda"] = str(torch.version.cuda)
    env["command"] = " ".join([args.prog] + args.argv) if args.prog else ""
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def fmt_or_blank(v, spec):
    """A table cell: the value in `spec`, or blank when there is none."""
    return "" if v is None else format(v, spec)


def markdown_table(rows: List[Result], env: Dict[str, str]) -> str:
    lines = [f"Device: {env['device']} | torch {env['torch']} | timm {env['timm']} | triton {env['triton']}"
             + (f" | CUDA {env['cuda']}" if "cuda" in env else ""), ""]
    if env.get("command"):
        lines += [f"Command: `{env['command']}`", ""]
    lines += ["img/s and ms/step: median over timed steps. Peak mem: " + (
        "CUDA allocator peak over the timed steps." if "cuda" in env else
        "peak live tensor memory (parameters included) of one profiled step."), ""]
    lines += ["| model | variant | bench | setting | batch | img/s | ms/step | peak mem (MiB) | vs timm | vs resnet50 | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        note = r.error or r.note
        lines.append(f"| {r.model} | {r.variant} | {r.bench} | {r.setting} | {r.batch_size} "
                     f"| {fmt_or_blank(r.img_per_s, '.1f')} | {fmt_or_blank(r.ms_per_step, '.2f')} "
                     f"| {fmt_or_blank(r.peak_mem_mib, '.0f')} | {fmt_or_blank(r.vs_timm, '.2f')}x "
                     f"| {fmt_or_blank(r.vs_resnet50, '.2f')}x | {note} |".replace(" x |", " |"))
    return "\n".join(lines)


def plot(rows: List[Result], path: str, bench: str, env: Dict[str, str]) -> None:
    """The paper's Figure 1 redrawn with our measurements: img/s (x) against the paper's top-1 (y)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        ax.scatter(r.img_per_s, top1, marker=marker, s=120 if r.ours else 50, color=color,
                   label="ours" if r.ours else "timm")
        nth = seen_top1[top1] = seen_top1.get(top1, -1) + 1  # stagger labels of points at the same top-1
        ax.annotate(f"{r.model} ({r.variant})", (r.img_per_s, top1), fontsize=7,
                    xytext=(4, 3 - 10 * nth), textcoords="offset points")
    speeds = [r.img_per_s for r in pts]
    if speeds and max(speeds) > 4 * min(speeds):  # atto beside tiny/base: spread the slow end
        ax.set_xscale("log")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), loc="best", fontsize=8)
    ax.set_xlabel(f"{bench} throughput (img/s), {pts[0].setting if pts else ''}, batch {rows[0].batch_size if rows else ''}")
    ax.set_ylabel("ImageNet-1k top-1 (%, paper)")
    ax.set_title(f"Throughput on {env['device']}\n(torch {env['torch']}, timm {env['timm']})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


def mixer_micro_benchmark(args) -> List[dict]:
    """On CUDA with --bench mixer/all, also the ops engineer's token-mixer micro-benchmark (fused vs timm vs
    one tensor copy) at the first stage's shape of InceptionNeXt-T; empty elsewhere."""
    if args.bench not in ("mixer", "all") or not args.device.startswith("cuda"):
        return []
    try:
        from inceptionnext.ops.bench import benchmark_token_mixer
    except ImportError:
        return []
    dtype = AMP_DTYPES[args.amp_dtype]
    return benchmark_token_mixer(batch=args.batch_size, channels=96, size=args.img_size // 4, dtype=dtype,
                                 channels_last=args.channels_last, device=args.device)


def main(argv=None, prog: Optional[str] = None) -> List[Result]:
    """Run the benchmark; with `prog` (the command's name), the table shows the command that made it."""
    args = parse_args(argv, prog)
    args.prog, args.argv = prog, list(sys.argv[1:] if argv is None else argv)
    if args.runtimes:
        return main_paths(args)
    rows = run(args)
    env = environment(args, torch.device(args.device))
    print(markdown_table(rows, env))
    micro = mixer_micro_benchmark(args)
    if micro:
        from inceptionnext.ops.bench import format_rows
        print()
        print(format_rows(micro, "Token mixer alone (inceptionnext.ops.bench, triton do_bench, median ms)"))
    if args.results_file:
        with open(args.results_file, "w") as f:
            json.dump({"environment": env, "args": {k: v for k, v in vars(args).items() if k != "variant_set"},
                       "results": [asdict(r) for r in rows], "mixer_micro": micro}, f, indent=2, default=str)
    if args.plot:
        plot_bench = args.plot_bench or (rows[0].bench if rows else "inference")
        plot(rows, args.plot, plot_bench, env)
    return rows


def main_paths(args):
    """`--runtime`: every model on every (runtime, precision) path, interleaved (see runtime_benchmark)."""
    from .runtime_benchmark import deployment_paths, environment_versions, paths_table, plot_paths, run_paths
    if args.device != "cpu":
        raise SystemExit("--runtime measures CPU deployment paths; pass --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = deployment_paths(args.runtimes, args.precisions)
    if not paths:
        raise SystemExit(f"no runtime among {args.runtimes} runs precision {args.precisions}")
    rows = run_paths(args.models, paths, args.batch_size, args.img_size, args.num_classes, args.num_warm_iter,
                     args.num_bench_iter * args.repeats, args.threads, progress=not args.no_progress)
    env = dict(environment(args, torch.device("cpu")), **environment_versions())
    print(paths_table(rows, env))
    if args.results_file:
        with open(args.results_file, "w") as f:
            json.dump({"environment": env, "args": {k: v for k, v in vars(args).items() if k != "variant_set"},
                       "results": [dict(asdict(r), path=r.path) for r in rows]}, f, indent=2, default=str)
    if args.plot:
        plot_paths(rows, args.plot, env)
    return rows


def cli(argv=None, prog: str = "inceptionnext benchmark") -> int:
    main(argv, prog)
    return 0


if __name__ == "__main__":
    sys.exit(cli(prog="python -m inceptionnext.benchmark"))
