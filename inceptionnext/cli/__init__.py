"""The `inceptionnext` command: one entry point for listing, inspecting, predicting, converting, exporting,
training, validating and benchmarking. Each subcommand lives in its own module and has its own --help."""

import difflib
import importlib
import sys
from typing import Optional, Sequence

from ..utils.threads import command_threads
from ..version import __version__

__all__ = ["main"]

# subcommand -> (module, one-line summary); modules are imported only when their command runs
COMMANDS = {
    "list": ("inceptionnext.cli.list_models", "model names, params, MACs, pretrained tags, paper top-1"),
    "info": ("inceptionnext.cli.info", "one model: stages, feature channels and strides, preprocessing, weights"),
    "predict": ("inceptionnext.cli.predict", "top-5 ImageNet classes (or the model's own) for image files"),
    "segment": ("inceptionnext.cli.segment", "colour-overlay and class-mask PNGs per image (segmentation models)"),
    "detect": ("inceptionnext.cli.detect", "boxes and masks of a trained detector, drawn on a PNG per image"),
    "convert": (
        "inceptionnext.cli.convert",
        "any weight file to safetensors/.pth that rebuilds the model, optionally folded",
    ),
    "export": ("inceptionnext.cli.export", "ONNX, TorchScript or torch.export file, checked against PyTorch"),
    "quantize": (
        "inceptionnext.cli.quantize",
        "post-training int8 file (OpenVINO or ONNX Runtime), checked against the float model",
    ),
    "train": ("inceptionnext.cli.train", "train or fine-tune from a YAML config (torchrun for multi-GPU)"),
    "validate": ("inceptionnext.cli.validate", "top-1/top-5 of weights on an image folder (mIoU: segmentation)"),
    "verify": ("inceptionnext.cli.verify", "check that checkpoints are whole (their stored checksum)"),
    "benchmark": ("inceptionnext.cli.benchmark", "throughput beside timm's models, in one run"),
}


# commands that run a model here: for their run, the cores it may use as threads and a note when the machine is
# busy (train and validate set theirs themselves, less their data-loader workers)
RUNS_MODELS = ("predict", "segment", "detect", "export", "quantize", "benchmark")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: inceptionnext <command> [options]   (inceptionnext <command> --help for its options)",
        "",
        "InceptionNeXt models for timm, from the shell.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The `inceptionnext` command: run one subcommand (`inceptionnext --help` lists them).

    The commands that run models do so with the thread count `inceptionnext.utils.threads` picks, restored after.

    Args:
        argv: the arguments after `inceptionnext`, e.g. `["predict", "cat.jpg"]`; None reads `sys.argv`.

    Returns:
        The exit status: 0 on success, 2 for no or an unknown command, else the command's own.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"inceptionnext {__version__}")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; commands: {', '.join(COMMANDS)}"
        print(f"inceptionnext: unknown command {command!r}{hint}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    if command not in RUNS_MODELS or {"-h", "--help"} & set(argv):
        return module.cli(argv[1:], prog=f"inceptionnext {command}")
    with command_threads():
        return module.cli(argv[1:], prog=f"inceptionnext {command}")


if __name__ == "__main__":
    sys.exit(main())
