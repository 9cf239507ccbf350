"""`inceptionnext verify`: check that checkpoints and model files are whole: each is read (weights-only) and
the checksum it carries (training checkpoints, converted, exported and quantized files) is compared with its
content.

    inceptionnext verify output/run/last.pth output/run/model_best.pth model_int8.xml model.pt model.pt2
    inceptionnext verify --allow-unchecked inceptionnext_tiny.pth   # a file from another tool: readable is enough

Each file is "verified", "unchecked" (readable, but it carries no checksum: exit status 2 unless
--allow-unchecked) or "damaged" (exit status 1).
"""

import argparse
import os
import sys
import warnings
import zipfile
from typing import Mapping, Optional, Tuple

import torch

from ..checksum import CheckpointError, verify_archive, verify_loaded
from ..deploy.runtimes import read_checked_runtime_model
from ..utils.text import escape_control, excerpt
from ..weights import read_weight_file
from .common import USER_ERRORS, summary

DAMAGED, UNCHECKED = 1, 2  # exit statuses


ARCHIVES = {"code/": "a TorchScript module", "archive_format": "a torch.export program"}


def archive_kind(path: str) -> Optional[str]:
    """What a torch zip archive that is not a checkpoint holds (TorchScript, torch.export), or None."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as zf:
        names = [n.split("/", 1)[-1] for n in zf.namelist()]
    return next((what for key, what in ARCHIVES.items() if any(n.startswith(key) for n in names)), None)


def _load_archive(path: str, what: str) -> None:
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


def verify_path(path: str) -> Tuple[bool, str]:
    """Read any file the library loads or writes (weight file, .onnx, OpenVINO .xml + .bin, TorchScript .pt,
    torch.export .pt2) and check its checksum: (True, what) when verified, (False, what) when it carries none; a
    CheckpointError when it cannot be used."""
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


def cli(argv=None, prog: str = "inceptionnext verify") -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog=prog, description=summary(__doc__))
    p.add_argument("files", nargs="+", metavar="FILE", help="checkpoints, weight files, .onnx or OpenVINO .xml files")
    p.add_argument(
        "--allow-unchecked",
        action="store_true",
        help="a readable file without a checksum passes (exit 0) instead of exit status 2",
    )
    a = p.parse_args(argv)
    damaged = unchecked = 0
    for path in a.files:
        try:
            checked, what = verify_path(path)
        except USER_ERRORS as e:
            damaged += 1
            print(f"damaged: {escape_control(e)}", file=sys.stderr, flush=True)
            continue
        if checked:
            print(f"ok: {escape_control(path)}: {escape_control(what)}; checksum verified", flush=True)
        else:
            unchecked += 1
            print(
                f"unchecked: {escape_control(path)}: {escape_control(what)}; readable, but it carries no checksum "
                "to verify (written by another tool or an earlier version)",
                flush=True,
            )
    if damaged:
        return DAMAGED
    return UNCHECKED if unchecked and not a.allow_unchecked else 0
