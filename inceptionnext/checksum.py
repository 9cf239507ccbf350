"""A checksum stored inside a checkpoint, over what it holds, so that a damaged file (flipped bits on disk or in
transfer) is refused when it is read instead of resumed from or loaded.

torch's zip format keeps CRC32s that torch.load does not check, and a flip inside tensor data still unpickles.
The digest here is SHA-256 over the loaded content: every tensor's dtype, shape and bytes, every plain value
with its type, in order. It is independent of the zip layout, so it holds however the file is copied, and a
file written by another tool (no checksum) still loads.
"""
import hashlib
import struct
from typing import Any, Mapping

import torch

from .weights import CheckpointError
from .weights import read_weight_file

KEY = 'checksum'
ALGORITHM = 'sha256-content-v1'


class ChecksumError(CheckpointError):
    """A checkpoint whose content does not match the checksum it was written with."""


def _feed(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(b'T' + str(t.dtype).encode() + str(tuple(obj.shape)).encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b'')
    elif isinstance(obj, Mapping):
        h.update(b'D%d' % len(obj))
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update((b'L' if isinstance(obj, list) else b'U') + b'%d' % len(obj))
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, bool) or obj is None:
        h.update(b'B' + repr(obj).encode())
    elif isinstance(obj, int):
        h.update(b'I' + str(obj).encode() + b';')
    elif isinstance(obj, float):
        h.update(b'F' + struct.pack('<d', obj))
    elif isinstance(obj, (str, bytes)):
        data = obj.encode('utf-8', 'surrogatepass') if isinstance(obj, str) else obj
        h.update((b'S' if isinstance(obj, str) else b'Y') + b'%d:' % len(data) + data)
    else:  # anything else a weights-only load returns (torch.Size, dtypes, ...) by its type and repr
        h.update(b'O' + type(obj).__name__.encode() + b':' + repr(obj).encode())


def content_digest(obj: Mapping[str, Any]) -> str:
    """SHA-256 over everything in `obj` except its own checksum entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in obj.items() if k != KEY})
    return h.hexdigest()


def seal(obj: dict) -> dict:
    """Store the checksum of `obj`'s content in `obj` (in place) and return it."""
    obj[KEY] = {'algorithm': ALGORITHM, 'sha256': content_digest(obj)}
    return obj


def verify(obj: Mapping[str, Any], source: str) -> bool:
    """True when `obj` carries a checksum and its content matches it; False when it carries none (written
    before checksums, or by another tool); a ChecksumError when it does not match."""
    stored = obj.get(KEY) if isinstance(obj, Mapping) else None
    if stored is None:
        return False
    if not isinstance(stored, Mapping) or stored.get('algorithm') != ALGORITHM or not isinstance(
            stored.get('sha256'), str):
        raise ChecksumError(f"{source}: its checksum entry is damaged or of an unknown kind")
    if content_digest(obj) != stored['sha256']:
        raise ChecksumError(f"{source}: its content does not match the checksum it was written with; the file "
                            "is damaged (disk or copy error) and is not used")
    return True


def verify_file(path: str) -> str:
    """Read a weight file and check the checksum it carries; returns what was found, in words (a
    CheckpointError, ChecksumError included, when the file cannot be used)."""
    obj, _ = read_weight_file(path)
    checked = verify(obj, str(path))
    what = 'a file'
    if isinstance(obj, Mapping) and obj.get('format') == 'inceptionnext.train':
        what = f"training checkpoint of {obj.get('arch')}, epoch {obj.get('epoch')}"
    elif isinstance(obj, Mapping):
        what = f"{len(obj)} entries"
    return (f"{what}; checksum verified (sha256 {obj[KEY]['sha256'][:16]}...)" if checked else
            f"{what}; readable, but it carries no checksum (written by another tool or an earlier version)")
