"""`inceptionnext benchmark`: ours beside timm's models in one run (`--runtime`: every deployment path)."""

import argparse
import json
import sys
from dataclasses import asdict
from typing import List, Optional

import timm
import torch

from ..deploy.benchmark.common import environment
from ..deploy.benchmark.models import AMP_DTYPES, DEFAULT_MODELS, Result, plot, results_table, run
from ..deploy.benchmark.paths import (
    RUNTIME_MODELS,
    deployment_paths,
    environment_versions,
    paths_table,
    plot_paths,
    run_paths,
)
from ..deploy.benchmark.profile import breakdown_table, run_profile
from ..deploy.levers import LEVERS, parse_levers
from ..deploy.runtimes import PRECISIONS, RUNTIMES
from ..ops.bench import benchmark_token_mixer, format_rows
from .common import summary


def parse_args(argv=None, prog: Optional[str] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=prog,
        description=summary(__doc__),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model",
        "-m",
        default=None,
        help=f"comma-separated timm model names (default: {DEFAULT_MODELS}; with --runtime: {RUNTIME_MODELS})",
    )
    p.add_argument(
        "--bench",
        default="inference",
        choices=["inference", "train", "both", "mixer", "all"],
        help="what to time; 'mixer' times each MetaNeXt model's first token mixer alone, 'all' everything",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where to time")
    p.add_argument(
        "--batch-size",
        "-b",
        default=None,
        help="images per step, or a comma list timed in turn (default: 128; with --runtime: 1,16)",
    )
    p.add_argument("--img-size", type=int, default=224, help="input side in pixels")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs")
    p.add_argument(
        "--amp-dtype",
        default="float32",
        choices=list(AMP_DTYPES),
        help="float32 runs without autocast; bfloat16/float16 under torch.autocast",
    )
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for model and input")
    p.add_argument("--torchcompile", nargs="?", const="inductor", default=None, help="torch.compile backend")
    p.add_argument("--torchcompile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    p.add_argument("--num-warm-iter", type=int, default=10, help="untimed steps first")
    p.add_argument("--num-bench-iter", type=int, default=40, help="timed steps")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the whole model list this many times, interleaved (steadier on a shared machine)",
    )
    p.add_argument(
        "--interleave",
        action="store_true",
        help="build every model first, then time one step of each in turn (fair on a noisy machine)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU runs")
    p.add_argument(
        "--variants", default="all", help="our variants to run: 'all' or a comma list of fast,ref,folded,unfolded"
    )
    p.add_argument("--results-file", default=None, help="write the rows and environment as JSON here")
    p.add_argument("--plot", default=None, help="draw throughput vs the paper's top-1 as a PNG here")
    p.add_argument("--plot-bench", default=None, help="which bench the plot shows; None: the first measured")
    p.add_argument(
        "--no-cpu-memory",
        dest="cpu_memory",
        action="store_false",
        help="skip the profiled extra step that measures peak memory on CPU",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--runtime",
        default=None,
        help="deployment paths instead of the eager/train benchmark: comma list of torch, torch.compile, "
        "onnxruntime, openvino (inference only; ours folded; int8 quantized on random images)",
    )
    p.add_argument("--precision", default="fp32", help="with --runtime: comma list of fp32, bf16, int8")
    p.add_argument(
        "--levers",
        default=None,
        help=f"with --runtime: comma list of deploy levers ({', '.join(LEVERS)}); each adds rows for ours "
        "with that lever beside the exact model",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="with --runtime openvino: print the per-layer time breakdown (OpenVINO PERF_COUNT) by "
        "category for each model, precision and batch size, instead of timing the paths",
    )
    p.add_argument("--profile-iters", type=int, default=10, help="with --profile: inferences profiled per model")
    args = p.parse_args(argv)
    runtime_mode = bool(args.runtime)
    args.model = args.model or (RUNTIME_MODELS if runtime_mode else DEFAULT_MODELS)
    args.models = [m.strip() for m in args.model.split(",") if m.strip()]
    if not args.models:
        p.error("--model is empty")
    unknown = [m for m in args.models if not timm.is_model(m)]
    if unknown:
        p.error(
            f"unknown model name(s) {unknown}; ours need `import inceptionnext` (done here), "
            f"the rest come from timm.list_models()"
        )
    try:
        args.batch_sizes = [
            int(b) for b in (args.batch_size or ("1,16" if runtime_mode else "128")).split(",") if b.strip()
        ]
    except ValueError:
        p.error(f"--batch-size takes whole numbers separated by commas, not {args.batch_size!r}")
    if (
        not args.batch_sizes
        or min(args.batch_sizes) < 1
        or args.img_size < 8
        or args.num_bench_iter < 1
        or args.num_warm_iter < 0
        or args.repeats < 1
        or args.profile_iters < 1
    ):
        p.error(
            "--batch-size, --num-bench-iter, --profile-iters and --repeats must be >= 1, --img-size >= 8, "
            "--num-warm-iter >= 0"
        )
    args.batch_size = args.batch_sizes[0]
    try:
        args.lever_list = list(parse_levers(args.levers or ""))
    except ValueError as e:
        p.error(f"--levers: {e}")
    if (args.lever_list or args.profile) and not runtime_mode:
        p.error("--levers and --profile go with --runtime (the deployment paths)")
    if args.profile and "openvino" not in args.runtime.split(","):
        p.error("--profile reads OpenVINO's per-layer counters: pass --runtime openvino")
    args.runtimes = [r.strip() for r in (args.runtime or "").split(",") if r.strip()]
    args.precisions = [q.strip() for q in args.precision.split(",") if q.strip()]
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


def mixer_micro_benchmark(args) -> List[dict]:
    """On CUDA with --bench mixer/all, also the ops engineer's token-mixer micro-benchmark (fused vs timm vs
    one tensor copy) at the first stage's shape of InceptionNeXt-T; empty elsewhere."""
    if args.bench not in ("mixer", "all") or not args.device.startswith("cuda"):
        return []
    dtype = AMP_DTYPES[args.amp_dtype]
    try:  # it times with triton's do_bench: no triton, no micro-benchmark
        return benchmark_token_mixer(
            batch=args.batch_size,
            channels=96,
            size=args.img_size // 4,
            dtype=dtype,
            channels_last=args.channels_last,
            device=args.device,
        )
    except ImportError:
        return []


def main(argv=None, prog: Optional[str] = None) -> List[Result]:
    """Run the benchmark; with `prog` (the command's name), the table shows the command that made it."""
    args = parse_args(argv, prog)
    args.prog, args.argv = prog, list(sys.argv[1:] if argv is None else argv)
    if args.runtimes:
        return main_paths(args)
    rows = []
    for b in args.batch_sizes:
        args.batch_size = b
        rows += run(args)
    env = environment(args, torch.device(args.device))
    print(results_table(rows, env))
    micro = mixer_micro_benchmark(args)
    if micro:
        print()
        print(format_rows(micro, "Token mixer alone (inceptionnext.ops.bench, triton do_bench, median ms)"))
    if args.results_file:
        with open(args.results_file, "w") as f:
            json.dump(
                {
                    "environment": env,
                    "args": {k: v for k, v in vars(args).items() if k != "variant_set"},
                    "results": [asdict(r) for r in rows],
                    "mixer_micro": micro,
                },
                f,
                indent=2,
                default=str,
            )
    if args.plot:
        plot_bench = args.plot_bench or (rows[0].bench if rows else "inference")
        plot(rows, args.plot, plot_bench, env)
    return rows


def main_paths(args):
    """`--runtime`: every model on every (runtime, precision) path, interleaved (see runtime_benchmark)."""
    if args.device != "cpu":
        raise SystemExit("--runtime measures CPU deployment paths; pass --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        return main_profile(args)
    paths = deployment_paths(args.runtimes, args.precisions)
    if not paths:
        raise SystemExit(f"no runtime among {args.runtimes} runs precision {args.precisions}")
    rows = run_paths(
        args.models,
        paths,
        args.batch_sizes,
        args.img_size,
        args.num_classes,
        args.num_warm_iter,
        args.num_bench_iter * args.repeats,
        args.threads,
        progress=not args.no_progress,
        levers=args.lever_list,
    )
    env = dict(environment(args, torch.device("cpu")), **environment_versions())
    print(paths_table(rows, env))
    if args.results_file:
        with open(args.results_file, "w") as f:
            json.dump(
                {
                    "environment": env,
                    "args": {k: v for k, v in vars(args).items() if k != "variant_set"},
                    "results": [dict(asdict(r), path=r.path) for r in rows],
                },
                f,
                indent=2,
                default=str,
            )
    if args.plot:
        plot_paths(rows, args.plot, env)
    return rows


def main_profile(args):
    """`--runtime openvino --profile`: the per-layer breakdown of each model (see deploy.benchmark.profile)."""
    precisions = [q for q in args.precisions if q in ("fp32", "bf16", "int8")]
    log = (lambda msg: None) if args.no_progress else None
    breakdowns = run_profile(
        args.models,
        precisions,
        args.batch_sizes,
        args.img_size,
        args.num_classes,
        args.profile_iters,
        args.threads or torch.get_num_threads(),
        args.lever_list,
        log=log,
    )
    env = dict(environment(args, torch.device("cpu")), **environment_versions())
    print(f"Device: {env['device']} | CPU flags: {env['cpu_flags']} | openvino {env['openvino']}\n")
    if env.get("command"):
        print(f"Command: `{env['command']}`\n")
    print(breakdown_table(breakdowns))
    if args.results_file:
        with open(args.results_file, "w") as f:
            json.dump({"environment": env, "profile": [asdict(b) for b in breakdowns]}, f, indent=2, default=str)
    return breakdowns


def cli(argv=None, prog: str = "inceptionnext benchmark") -> int:
    main(argv, prog)
    return 0
