"""Whether a file the library reads is whole: its stored checksum compared with its content.

Every file type the library reads is covered (training checkpoints, converted `.pth` / `.safetensors`, `.onnx`,
OpenVINO `.xml` + `.bin`), which is why this lives beside the runtimes rather than with the checksum itself: the
checksum module sits below the readers that open these files.
"""

from typing import Mapping, Tuple

from ..checksum import verify_loaded, verify_runtime_model
from ..utils.files import PathLike
from ..weights import read_weight_file
from .runtimes import read_runtime_model

__all__ = ["verify_file"]


def verify_file(path: PathLike) -> Tuple[bool, str]:
    """Read a file weights-only and check the checksum it carries against its content.

    Args:
        path: a training checkpoint, a weight file (`.pth`, `.safetensors`), an `.onnx` file or an OpenVINO `.xml`
            (with its `.bin` beside it).

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
        model = read_runtime_model(path)
        checked = verify_runtime_model(model, str(path))
        what = "an ONNX file" if str(path).lower().endswith(".onnx") else "an OpenVINO IR"
        return checked, what
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
