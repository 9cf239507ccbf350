"""One rule for the `device` option of every command and of training: auto, cpu, cuda or cuda:N."""

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device `name` asks for. `auto` and a bare `cuda` take this process's GPU (`local_rank`, which
    torchrun sets per process) when CUDA is there; asking for CUDA without it is a ValueError saying so."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device {name!r}: not a device (use auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {name} was asked for, but no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device
