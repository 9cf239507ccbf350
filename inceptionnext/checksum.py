"""A checksum stored inside a checkpoint, over what it holds, so that a damaged file (flipped bits on disk or in
transfer) is refused when it is read instead of resumed from or loaded.

torch's zip format keeps CRC32s that torch.load does not check, and a flip inside tensor data still unpickles.
The digest here is SHA-256 over the loaded content: every tensor's dtype, shape and bytes, every plain value
with its type, in order. It is independent of the zip layout, so it holds however the file is copied, and a
file written by another tool (no checksum) still loads.
"""

import hashlib
import json
import os
import re
import struct
import zipfile
from typing import Any, Mapping, Optional

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
    """SHA-256 over everything in `obj` except its own checksum entry.

    Args:
        obj: a checkpoint dict.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in obj.items() if k != KEY})
    return h.hexdigest()


def seal(obj: dict) -> dict:
    """Store the checksum of `obj`'s content in `obj` (in place) and return it.

    Args:
        obj: the checkpoint dict to be saved.

    Returns:
        `obj`, with its `checksum` entry.
    """
    obj[KEY] = {"algorithm": ALGORITHM, "sha256": content_digest(obj)}
    return obj


def verify(obj: Mapping[str, Any], source: str) -> bool:
    """True when `obj` carries a checksum and its content matches it; False when it carries none (written
    before checksums, or by another tool); a ChecksumError when it does not match.

    Args:
        obj: a loaded checkpoint dict.
        source: where it came from, for the message.

    Returns:
        Whether a checksum was checked.

    Raises:
        ChecksumError: the checksum entry is damaged, or the content does not match it.
    """
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
# metadata), ONNX files (a metadata property), OpenVINO IRs (an rt_info entry in the .xml, over the whole .xml
# and .bin) and TorchScript / torch.export archives (an entry of their zip, over every other entry)

METADATA_KEY = "inceptionnext.checksum"


def safetensors_digest(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """SHA-256 over a safetensors file's tensors (by name) and its metadata, the checksum entry left out.

    Args:
        tensors: the file's tensors by name.
        metadata: the file's metadata.

    Returns:
        The hex digest.
    """
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
    """`metadata` with the checksum of the file it will be written into.

    Args:
        tensors: the tensors to be written.
        metadata: the metadata to be written with them.

    Returns:
        A copy of `metadata` with the checksum entry added.
    """
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
    matches, False when it carries none, a ChecksumError when it does not match.

    Args:
        obj: what the file held.
        metadata: the safetensors metadata (empty for torch files).
        source: where it came from, for the message.

    Returns:
        Whether a checksum was checked.

    Raises:
        ChecksumError: the checksum entry is damaged, or the content does not match it.
    """
    if metadata and METADATA_KEY in metadata:
        if not isinstance(obj, Mapping) or safetensors_digest(obj, metadata) != _stored_digest(
            metadata[METADATA_KEY], source
        ):
            raise _mismatch(source)
        return True
    return verify(obj, source) if isinstance(obj, Mapping) else False


def onnx_digest(model: Any) -> str:
    """SHA-256 over an ONNX ModelProto as serialized, its checksum property left out.

    Args:
        model: an `onnx.ModelProto`.

    Returns:
        The hex digest.
    """
    copy = type(model)()
    copy.CopyFrom(model)
    keep = [p for p in copy.metadata_props if p.key != METADATA_KEY]
    del copy.metadata_props[:]
    copy.metadata_props.extend(keep)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def seal_onnx(path: str) -> None:
    """Add the checksum property to the ONNX file at `path` (rewritten in place: callers write a temp file).

    Args:
        path: the ONNX file.
    """
    import onnx

    model = onnx.load(path)
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps({"algorithm": ALGORITHM, "sha256": onnx_digest(model)}))
    onnx.save(model, path)


def openvino_digest(model: Any) -> str:
    """SHA-256 over an OpenVINO model's ops in order: their type, output types and shapes, and every
    constant's bytes (the record of files written before the whole-file checksum; see `verify_openvino_files`).

    Args:
        model: an `openvino.Model`.

    Returns:
        The hex digest.
    """
    import numpy as np

    h = hashlib.sha256()
    for op in model.get_ordered_ops():
        h.update(op.get_type_name().encode() + b"|")
        for i in range(op.get_output_size()):
            h.update(f"{op.get_output_element_type(i)}{op.get_output_partial_shape(i)}|".encode())
        if op.get_type_name() == "Constant":
            h.update(np.ascontiguousarray(op.get_data()).view(np.uint8).tobytes())
    return h.hexdigest()


# An OpenVINO IR's checksum covers everything the runtime reads: the whole .xml text (op attributes included)
# and the whole .bin. Its record sits in the .xml (an rt_info entry) and is held apart from what it covers: the
# digest is taken with the record's value set to zeros, so sealing fills it in and checking zeroes it again.
IR_PREFIX = "inceptionnext-ir-sha256:"
IR_PLACEHOLDER = IR_PREFIX + "0" * 64
_IR_RECORD = re.compile(re.escape(IR_PREFIX.encode()) + rb"([0-9a-f]{64})")


def openvino_file_digest(xml: bytes, weights: bytes) -> str:
    """SHA-256 over an IR's .xml bytes (its record zeroed) and its .bin bytes.

    Args:
        xml: the .xml file's bytes.
        weights: the .bin file's bytes.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    h.update(b"%d:" % len(xml))
    h.update(_IR_RECORD.sub(IR_PLACEHOLDER.encode(), xml))
    h.update(weights)
    return h.hexdigest()


def seal_openvino(model: Any) -> None:
    """Give `model` the empty checksum record (before ov.save_model); `seal_openvino_files` fills it in.

    Args:
        model: the `openvino.Model` about to be saved.
    """
    model.set_rt_info(IR_PLACEHOLDER, METADATA_KEY.split("."))


def seal_openvino_files(xml_path: str) -> None:
    """Fill in the checksum record of the IR written at `xml_path` (and the .bin beside it) over both files as
    written (the .xml is rewritten in place: callers write temp files).

    Args:
        xml_path: the .xml file; its .bin is the file of the same name beside it.

    Raises:
        ValueError: the .xml has no empty record (the model was not given one with `seal_openvino`).
    """
    xml = open(xml_path, "rb").read()
    with open(os.path.splitext(xml_path)[0] + ".bin", "rb") as f:
        weights = f.read()
    if len(_IR_RECORD.findall(xml)) != 1:
        raise ValueError(f"{xml_path}: has no empty checksum record to fill in (seal_openvino before saving)")
    record = (IR_PREFIX + openvino_file_digest(xml, weights)).encode()
    with open(xml_path, "wb") as f:
        f.write(_IR_RECORD.sub(record, xml))
        f.flush()
        os.fsync(f.fileno())


def verify_openvino_files(xml: bytes, weights: bytes, source: str) -> Optional[bool]:
    """The whole-file check of an IR from the bytes that will be read: True when its record matches, None when
    the .xml carries no whole-file record (an earlier file: its op record, if any, is `verify_runtime_model`'s),
    a ChecksumError when it does not match.

    Args:
        xml: the .xml file's bytes.
        weights: the .bin file's bytes.
        source: where they came from, for the message.

    Returns:
        True, or None when there is no whole-file record.

    Raises:
        ChecksumError: the record is damaged (more than one) or does not match.
    """
    found = _IR_RECORD.findall(xml)
    if not found:
        return None
    if len(found) > 1:
        raise ChecksumError(f"{source}: its checksum entry is damaged or of an unknown kind")
    if openvino_file_digest(xml, weights) != found[0].decode():
        raise _mismatch(source)
    return True


def verify_runtime_model(model: Any, source: str) -> bool:
    """The rule of `verify_loaded` for a loaded ONNX ModelProto or OpenVINO model.

    Args:
        model: an `onnx.ModelProto` or an `openvino.Model`.
        source: where it came from, for the message.

    Returns:
        Whether a checksum was checked.

    Raises:
        ChecksumError: the record is damaged or does not match.
    """
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


# TorchScript (.pt) and torch.export (.pt2) files are zip archives: the record is one more entry, over the names
# and bytes of all the others

ARCHIVE_ENTRY = "extra/inceptionnext.checksum"


def _archive_digest(zf: zipfile.ZipFile, skip: str) -> str:
    h = hashlib.sha256()
    for name in sorted(n for n in zf.namelist() if n != skip):
        data = zf.read(name)  # zipfile checks each entry's CRC32 too
        h.update(b"%d:" % len(name.encode()) + name.encode() + b"%d:" % len(data))
        h.update(data)
    return h.hexdigest()


def _archive_entry(zf: zipfile.ZipFile) -> str:
    names = zf.namelist()
    prefix = names[0].split("/")[0] if names else "archive"
    return f"{prefix}/{ARCHIVE_ENTRY}"


def seal_archive(path: str) -> None:
    """Add the checksum entry to the TorchScript or torch.export archive at `path` (appended in place: callers
    write temp files).

    Args:
        path: the archive.
    """
    with zipfile.ZipFile(path) as zf:
        entry = _archive_entry(zf)
        digest = _archive_digest(zf, entry)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(entry, json.dumps({"algorithm": ALGORITHM, "sha256": digest}))


def verify_archive(path: str, source: str) -> bool:
    """The rule of `verify_loaded` for a TorchScript or torch.export archive: True when its checksum entry
    matches, False when it has none, a ChecksumError when it does not match (or an entry is damaged).

    Args:
        path: the archive.
        source: what to call it in the message.

    Returns:
        Whether a checksum was checked.

    Raises:
        ChecksumError: the entry is damaged or does not match, or the file is not a whole zip archive.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            entry = _archive_entry(zf)
            if entry not in zf.namelist():
                for name in zf.namelist():
                    zf.read(name)  # CRC32s at least
                return False
            stored = _stored_digest(zf.read(entry).decode("utf-8", "replace"), source)
            if _archive_digest(zf, entry) != stored:
                raise _mismatch(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        raise ChecksumError(f"{source}: not a whole zip archive ({e})") from None
    return True
