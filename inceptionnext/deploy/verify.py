"""Whether a file the library reads is whole: its stored checksum compared with its content.

Every file type the library reads or writes is covered (training checkpoints, converted `.pth` / `.safetensors`,
`.onnx`, OpenVINO `.xml` + `.bin`, TorchScript `.pt`, `torch.export` `.pt2`), which is why this lives beside the
runtimes rather than with the checksum itself: the checksum module sits below the readers that open these files.
"""

import os
import warnings
import zipfile
from typing import Mapping, Optional, Tuple

import torch

from ..checksum import CheckpointError, verify_archive, verify_loaded
from ..utils.files import PathLike
from ..utils.text import excerpt
from ..weights import read_weight_file
from .runtimes import read_checked_runtime_model

__all__ = ["verify_file"]

ARCHIVES = {"code/": "a TorchScript module", "archive_format": "a torch.export program"}


def archive_kind(path: PathLike) -> Optional[str]:
    """What a torch zip archive that is not a checkpoint holds (TorchScript, torch.export), or None."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as zf:
        names = [n.split("/", 1)[-1] for n in zf.namelist()]
    return next((what for key, what in ARCHIVES.items() if any(n.startswith(key) for n in names)), None)


def _load_archive(path: PathLike, what: str) -> None:
    """Read the archive as the library's own loaders do (a damaged one raises)."""
    try:
        if what == ARCHIVES["code/"]:
            torch.jit.load(path, map_location="cpu")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.export.load(path)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as {what} ({type(e).__name__}: {excerpt(e, 150)})") from None


def verify_file(path: PathLike) -> Tuple[bool, str]:
    """Read a file weights-only and check the checksum it carries against its content.

    Args:
        path: a training checkpoint, a weight file (`.pth`, `.safetensors`), an `.onnx` file, an OpenVINO `.xml`
            (with its `.bin` beside it), a TorchScript `.pt` or a `torch.export` `.pt2` archive.

    Returns:
        `(True, what)` when the file carries a checksum that matches its content, `(False, what)` when it is
        readable but carries none (written by another tool or an earlier version); `what` describes the file,
        e.g. `"training checkpoint of inceptionnext_a, epoch 12"`.

    Raises:
        CheckpointError: a weight file that is missing, cannot be read, or whose content does not match its
            checksum (`ChecksumError`, a subclass); the message names the file.
        RuntimeFileError: an `.onnx` or `.xml` file that cannot be read, or whose content does not match its
            checksum (a `ValueError`).
        FileNotFoundError: an `.onnx` or `.xml` path that does not exist.
        RuntimeUnavailable: an `.onnx` or `.xml` file when ONNX or OpenVINO is not installed (an `ImportError`
            with the pip command).
    """
    if str(path).lower().endswith((".onnx", ".xml")):
        _, checked = read_checked_runtime_model(path)
        what = "an ONNX file" if str(path).lower().endswith(".onnx") else "an OpenVINO IR"
        return checked, what
    kind = archive_kind(path) if os.path.isfile(path) else None
    if kind:
        checked = verify_archive(path, str(path))
        _load_archive(path, kind)
        return checked, kind
    obj, metadata = read_weight_file(path)
    checked = verify_loaded(obj, metadata, str(path))
    what = "a file"
    if isinstance(obj, Mapping) and obj.get("format") == "inceptionnext.train":
        what = f"training checkpoint of {obj.get('arch')}, epoch {obj.get('epoch')}"
    elif isinstance(obj, Mapping) and obj.get("format") == "inceptionnext.model" or metadata.get("format"):
        what = "converted model file"
    elif isinstance(obj, Mapping):
        what = f"{len(obj)} entries"
    return checked, what
