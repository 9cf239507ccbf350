"""`inceptionnext verify`: check that checkpoints and model files are whole: each is read (weights-only) and
the checksum it carries (training checkpoints, converted, exported and quantized files) is compared with its
content.

    inceptionnext verify output/run/last.pth output/run/model_best.pth model_int8.xml
    inceptionnext verify --allow-unchecked inceptionnext_tiny.pth   # a file from another tool: readable is enough

Each file is "verified", "unchecked" (readable, but it carries no checksum: exit status 2 unless
--allow-unchecked) or "damaged" (exit status 1).
"""

import argparse
import sys
from typing import Mapping, Tuple

from ..checksum import verify_loaded, verify_runtime_model
from ..deploy.runtimes import read_runtime_model
from ..utils.text import escape_control
from ..weights import read_weight_file
from .common import USER_ERRORS, summary

DAMAGED, UNCHECKED = 1, 2  # exit statuses


def verify_path(path: str) -> Tuple[bool, str]:
    """Read any file the library loads (weight file, .onnx, OpenVINO .xml + .bin) and check its checksum:
    (True, what) when verified, (False, what) when it carries none; a CheckpointError when it cannot be used."""
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


def cli(argv=None, prog: str = "inceptionnext verify") -> int:
    p = argparse.ArgumentParser(prog=prog, description=summary(__doc__))
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
