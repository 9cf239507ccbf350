"""What both benchmarks share: the baseline, which timm model is ours' counterpart, the machine description and the table cells."""

import platform
from typing import Dict, Optional

import timm
import torch

from ...models.zoo import get_entry, paper_figures
from ...version import __version__


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


def is_ours(name: str) -> bool:
    return timm.models.model_entrypoint(name).__module__.split(".")[0] == "inceptionnext"


def environment(args, device) -> Dict[str, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name() + f", {torch.get_num_threads()} threads"
    env = {
        "device": name,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "inceptionnext": __version__,
    }
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
