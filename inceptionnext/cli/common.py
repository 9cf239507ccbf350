"""What the model-facing subcommands share: naming a model and its weights, picking a device, and turning
the library's input errors into one line on stderr and exit status 1 (bugs still show their traceback)."""
import argparse
import functools
import sys
from typing import Callable

import timm
import torch
import torch.nn as nn

from ..inference import ImageError
from ..safe_text import escape_control
from ..model_file import check_model_name, load_model
from ..train.checkpoint import CheckpointError as TrainCheckpointError
from ..weights import CheckpointError

# input errors, each with a message naming what was wrong (OSError: files that cannot be read or written)
USER_ERRORS = (CheckpointError, TrainCheckpointError, ImageError, OSError, ValueError)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model name and where its weights come from (timm's --checkpoint spelling works too)."""
    p.add_argument('model', help="model name, e.g. inceptionnext_t (see `inceptionnext list`)")
    p.add_argument('--weights', '--checkpoint', dest='weights', default=None, metavar='FILE',
                   help="weight file in any format the library reads (official .pth, timm/hub state dict, "
                        ".safetensors, a training checkpoint, a converted file); default: the model's pretrained "
                        "weights (downloaded once)")
    p.add_argument('--use-ema', action='store_true', help="the EMA weights of a training checkpoint")


def floats(text: str):
    """'0.5,0.5,0.5' (or space-separated inside quotes) as a tuple of floats, for --mean/--std."""
    return tuple(float(v) for v in text.replace(',', ' ').split())


def model_from_args(args: argparse.Namespace, **kwargs) -> nn.Module:
    """The eval-mode model the arguments name, with its weights."""
    if args.weights:
        return load_model(args.weights, args.model, use_ema=args.use_ema, **kwargs)
    if args.use_ema:
        raise ValueError("--use-ema needs --weights (a training checkpoint)")
    check_model_name(args.model)
    return timm.create_model(args.model, pretrained=True, **kwargs).eval()


def resolve_device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r}: not a device (use auto, cpu, cuda or cuda:N)") from e
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here")
    return device


def reports_errors(*extra: type) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Wrap a subcommand: the library's input errors (and `extra` ones) become `error: <message>`, exit 1."""
    def decorate(run: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(run)
        def wrapped(*args, **kwargs) -> int:
            try:
                return run(*args, **kwargs)
            except USER_ERRORS + extra as e:  # messages may quote a file's content: escaped
                print(f"error: {escape_control(e, keep_newlines=True)}", file=sys.stderr, flush=True)
                return 1
        return wrapped
    return decorate
