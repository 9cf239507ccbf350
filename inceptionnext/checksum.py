"""A checksum stored inside a checkpoint, over what it holds, so that a damaged file (flipped bits on disk or in
transfer) is refused when it is read instead of resumed from or loaded.

torch's zip format keeps CRC32s that torch.load does not check, and a flip inside tensor data still unpickles.
The digest here is SHA-256 over the loaded content: every tensor's dtype, shape and bytes, every plain value
with its type, in order. It is independent of the zip layout, so it holds however the file is copied, and a
file written by another tool (no checksum) still loads.
"""

import hashlib
import json
import struct
from typing import Any, Mapping

import torch

KEY = "checksum"
ALGORITHM = "sha256-content-v1"


class CheckpointError(ValueError):
    """A weight file that cannot be read as a checkpoint, or whose contents do not fit the model (the library's
    one error for weight files; `inceptionnext.weights` raises it too)."""


class ChecksumError(CheckpointError):
    """A checkpoint whose content does not match the checksum it was written with."""


def _feed(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(b"T" + str(t.dtype).encode() + str(tuple(obj.shape)).encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    elif isinstance(obj, Mapping):
        h.update(b"D%d" % len(obj))
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update((b"L" if isinstance(obj, list) else b"U") + b"%d" % len(obj))
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, bool) or obj is None:
        h.update(b"B" + repr(obj).encode())
    elif isinstance(obj, int):
        h.update(b"I" + str(obj).encode() + b";")
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    elif isinstance(obj, (str, bytes)):
        data = obj.encode("utf-8", "surrogatepass") if isinstance(obj, str) else obj
        h.update((b"S" if isinstance(obj, str) else b"Y") + b"%d:" % len(data) + data)
    else:  # anything else a weights-only load returns (torch.Size, dtypes, ...) by its type and repr
        h.update(b"O" + type(obj).__name__.encode() + b":" + repr(obj).encode())


def content_digest(obj: Mapping[str, Any]) -> str:
    """SHA-256 over everything in `obj` except its own checksum entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in obj.items() if k != KEY})
    return h.hexdigest()


def seal(obj: dict) -> dict:
    """Store the checksum of `obj`'s content in `obj` (in place) and return it."""
    obj[KEY] = {"algorithm": ALGORITHM, "sha256": content_digest(obj)}
    return obj


def verify(obj: Mapping[str, Any], source: str) -> bool:
    """True when `obj` carries a checksum and its content matches it; False when it carries none (written
    before checksums, or by another tool); a ChecksumError when it does not match."""
    stored = obj.get(KEY) if isinstance(obj, Mapping) else None
    if stored is None:
        return False
    if (
        not isinstance(stored, Mapping)
        or stored.get("algorithm") != ALGORITHM
        or not isinstance(stored.get("sha256"), str)
    ):
        raise ChecksumError(f"{source}: its checksum entry is damaged or of an unknown kind")
    if content_digest(obj) != stored["sha256"]:
        raise ChecksumError(
            f"{source}: its content does not match the checksum it was written with; the file "
            "is damaged (disk or copy error) and is not used"
        )
    return True


# ---------------------------------------------------------------------------------------------------------------
# the same guarantee for the other files the library writes: safetensors model files (the checksum in their
# metadata), ONNX files (a metadata property) and OpenVINO IRs (an rt_info entry in the .xml, over the .bin's
# constants and the graph's ops)

METADATA_KEY = "inceptionnext.checksum"


def safetensors_digest(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """SHA-256 over a safetensors file's tensors (by name) and its metadata, the checksum entry left out."""
    h = hashlib.sha256()
    _feed(
        h,
        {
            "tensors": {k: tensors[k] for k in sorted(tensors)},
            "metadata": {k: str(metadata[k]) for k in sorted(metadata) if k != METADATA_KEY},
        },
    )
    return h.hexdigest()


def seal_metadata(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict:
    """`metadata` with the checksum of the file it will be written into."""
    digest = safetensors_digest(tensors, metadata)
    return dict(metadata, **{METADATA_KEY: json.dumps({"algorithm": ALGORITHM, "sha256": digest})})


def _stored_digest(text: Any, source: str) -> str:
    try:
        stored = json.loads(text)
    except (TypeError, ValueError):
        stored = None
    if (
        not isinstance(stored, Mapping)
        or stored.get("algorithm") != ALGORITHM
        or not isinstance(stored.get("sha256"), str)
    ):
        raise ChecksumError(f"{source}: its checksum entry is damaged or of an unknown kind")
    return stored["sha256"]


def _mismatch(source: str) -> ChecksumError:
    return ChecksumError(
        f"{source}: its content does not match the checksum it was written with; the file is "
        "damaged (disk or copy error) and is not used"
    )


def verify_loaded(obj: Any, metadata: Mapping[str, str], source: str) -> bool:
    """The one rule every loader applies to what a weight file held: True when it carries a checksum that
    matches, False when it carries none, a ChecksumError when it does not match."""
    if metadata and METADATA_KEY in metadata:
        if not isinstance(obj, Mapping) or safetensors_digest(obj, metadata) != _stored_digest(
            metadata[METADATA_KEY], source
        ):
            raise _mismatch(source)
        return True
    return verify(obj, source) if isinstance(obj, Mapping) else False


def onnx_digest(model: Any) -> str:
    """SHA-256 over an ONNX ModelProto as serialized, its checksum property left out."""
    copy = type(model)()
    copy.CopyFrom(model)
    keep = [p for p in copy.metadata_props if p.key != METADATA_KEY]
    del copy.metadata_props[:]
    copy.metadata_props.extend(keep)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def seal_onnx(path: str) -> None:
    """Add the checksum property to the ONNX file at `path` (rewritten in place: callers write a temp file)."""
    import onnx

    model = onnx.load(path)
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps({"algorithm": ALGORITHM, "sha256": onnx_digest(model)}))
    onnx.save(model, path)


def openvino_digest(model: Any) -> str:
    """SHA-256 over an OpenVINO model's ops in order: their type, output types and shapes, and every
    constant's bytes (the weights the .bin holds)."""
    import numpy as np

    h = hashlib.sha256()
    for op in model.get_ordered_ops():
        h.update(op.get_type_name().encode() + b"|")
        for i in range(op.get_output_size()):
            h.update(f"{op.get_output_element_type(i)}{op.get_output_partial_shape(i)}|".encode())
        if op.get_type_name() == "Constant":
            h.update(np.ascontiguousarray(op.get_data()).view(np.uint8).tobytes())
    return h.hexdigest()


def seal_openvino(model: Any) -> None:
    """Record `model`'s checksum in its rt_info (before ov.save_model)."""
    model.set_rt_info(json.dumps({"algorithm": ALGORITHM, "sha256": openvino_digest(model)}), METADATA_KEY.split("."))


def verify_runtime_model(model: Any, source: str) -> bool:
    """The rule of `verify_loaded` for a loaded ONNX ModelProto or OpenVINO model."""
    if hasattr(model, "metadata_props"):
        stored = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
        digest = lambda: onnx_digest(model)
    else:
        key = METADATA_KEY.split(".")
        stored = model.get_rt_info(key).astype(str) if model.has_rt_info(key) else None
        digest = lambda: openvino_digest(model)
    if stored is None:
        return False
    if digest() != _stored_digest(stored, source):
        raise _mismatch(source)
    return True
