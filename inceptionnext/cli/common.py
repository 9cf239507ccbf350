"""What the model-facing subcommands share: naming a model and its weights, picking a device, and turning
the library's input errors into one line on stderr and exit status 1 (bugs still show their traceback)."""

import argparse
import functools
import sys
from pathlib import Path
from typing import Callable

import torch.nn as nn

from ..data.images import ImageError
from ..deploy.levers import LEVERS
from ..deploy.runtimes import PRECISIONS, RUNTIMES, is_runtime_file, load_runtime, wrap_torch
from ..model_file import EMA_CHOICE_HELP, check_model_name, load_model
from ..models.dense import create_any_model, is_model
from ..utils.text import error_message, escape_control
from ..weights import CheckpointError

# input errors, each with a message naming what was wrong (OSError: files that cannot be read or written)
USER_ERRORS = (CheckpointError, ImageError, OSError, ValueError, ImportError)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model name and where its weights come from (timm's --checkpoint spelling works too)."""
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="model name, e.g. inceptionnext_t (see `inceptionnext list`), or an .onnx / OpenVINO .xml "
        "file (predict); optional with --weights FILE when the file records it (training "
        "checkpoints, converted files)",
    )
    p.add_argument(
        "--weights",
        "--checkpoint",
        dest="weights",
        default=None,
        metavar="FILE",
        help="weight file in any format the library reads (official .pth, timm/hub state dict, "
        ".safetensors, a training checkpoint, a converted file); default: the model's pretrained "
        "weights (downloaded once)",
    )
    add_ema_args(p)


def add_ema_args(p: argparse.ArgumentParser) -> None:
    """--use-ema / --no-ema: which weights of a checkpoint holding model and EMA weights (default: the scored ones)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--use-ema",
        "--ema",
        dest="use_ema",
        action="store_const",
        const=True,
        default=None,
        help=f"the EMA weights of a checkpoint that has them; {EMA_CHOICE_HELP}",
    )
    g.add_argument(
        "--no-ema",
        dest="use_ema",
        action="store_const",
        const=False,
        help="the model (non-EMA) weights of a checkpoint that has both",
    )


def say_weights(model: nn.Module) -> None:
    """One line on stderr naming the weights a tool loaded (stdout stays for its results)."""
    note = getattr(model, "weights_note", None)
    if note:
        print(f"weights: {escape_control(note)}", file=sys.stderr, flush=True)


def summary(doc: str) -> str:
    """A command's description for --help: its docstring's first paragraph, after the `name`: prefix."""
    first = " ".join(line.strip() for line in doc.split("\n\n")[0].splitlines())
    return first.split(": ", 1)[1] if ": " in first else first


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """How the model runs: PyTorch eager or compiled, ONNX Runtime or OpenVINO, and in which precision."""
    p.add_argument(
        "--runtime",
        default=None,
        choices=RUNTIMES,
        help="torch (default for weights), torch.compile (Inductor, freezing), onnxruntime (default for "
        ".onnx) or openvino (default for .xml; also runs .onnx)",
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="fp32 (default), bf16 (autocast / OpenVINO hint), int8 (a file from `inceptionnext quantize`)",
    )


def runnable_from_args(args: argparse.Namespace, **kwargs) -> nn.Module:
    """The model the arguments name, as the runtime and precision they ask for: an .onnx or OpenVINO .xml file
    given as the model runs on its runtime; a model name (with --weights) runs in PyTorch."""
    if args.model and is_runtime_file(args.model):
        if args.weights:
            raise ValueError(f"{args.model} is a complete model file; drop --weights")
        return load_runtime(args.model, args.runtime, args.precision)
    if args.runtime in ("onnxruntime", "openvino"):
        raise ValueError(
            f"--runtime {args.runtime} runs an .onnx/.xml file (from `inceptionnext export` or "
            "`quantize`); give that file as the model"
        )
    return wrap_torch(model_from_args(args, **kwargs), args.runtime or "torch", args.precision or "fp32")


def split_model_and_images(args: argparse.Namespace, command: str) -> None:
    """`COMMAND --weights FILE img ...`: a first positional that is an existing file and no model name is an image
    (the weight file names the model); no images at all is an error naming the command's form."""
    if args.model and args.weights and not is_model(args.model) and Path(args.model).exists():
        args.model, args.images = None, [args.model] + args.images
    if not args.images:
        raise ValueError(f"no images given: inceptionnext {command} [MODEL] IMAGE [IMAGE ...]")


def floats(text: str):
    """'0.5,0.5,0.5' (or space-separated inside quotes) as a tuple of floats, for --mean/--std."""
    return tuple(float(v) for v in text.replace(",", " ").split())


def model_from_args(args: argparse.Namespace, **kwargs) -> nn.Module:
    """The eval-mode model the arguments name, with its weights; says on stderr which weights it loaded."""
    if not args.model and not args.weights:
        raise ValueError("name the model (e.g. inceptionnext_t) or give --weights FILE that records it")
    if args.weights:
        model = load_model(args.weights, args.model, use_ema=args.use_ema, **kwargs)
    else:
        if args.use_ema is not None:
            raise ValueError(f"{'--use-ema' if args.use_ema else '--no-ema'} needs --weights (a training checkpoint)")
        check_model_name(args.model)
        model = create_any_model(args.model, pretrained=True, **kwargs).eval()
        model.weights_note = f"the pretrained weights of {args.model}"
    say_weights(model)
    return model


def reports_errors(*extra: type) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Wrap a subcommand: the library's input errors (and `extra` ones) become `error: <message>`, exit 1."""

    def decorate(run: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(run)
        def wrapped(*args, **kwargs) -> int:
            try:
                return run(*args, **kwargs)
            except USER_ERRORS + extra as e:  # messages may quote a file's content: escaped
                print(f"error: {escape_control(error_message(e), keep_newlines=True)}", file=sys.stderr, flush=True)
                return 1

        return wrapped

    return decorate


def add_lever_args(p: argparse.ArgumentParser, when: str = "") -> None:
    """--lever NAME (repeatable or a comma list): deploy-time speed levers that change numerics, recorded in the
    file written; none by default (the exact model). `when` says what the option needs, e.g. "with --deploy: "."""
    p.add_argument(
        "--lever",
        "--levers",
        dest="levers",
        action="append",
        default=[],
        metavar="NAME",
        help=f"{when}a deploy-time speed lever that changes numerics, recorded in the file (repeat or comma list; "
        "default: none, the exact model): " + "; ".join(f"{k}: {v.description}" for k, v in LEVERS.items()),
    )
