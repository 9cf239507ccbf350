"""`inceptionnext verify`: check that checkpoints and model files are whole: each is read (weights-only) and
the checksum it carries (training checkpoints, converted, exported and quantized files) is compared with its
content.

    inceptionnext verify output/run/last.pth output/run/model_best.pth model_int8.xml model.pt model.pt2
    inceptionnext verify --allow-unchecked inceptionnext_tiny.pth   # a file from another tool: readable is enough

Each file is "verified", "unchecked" (readable, but it carries no checksum: exit status 2 unless
--allow-unchecked) or "damaged" (exit status 1).
"""

import argparse
import sys

from ..deploy.verify import verify_file
from ..utils.text import escape_control
from .common import USER_ERRORS, summary

DAMAGED, UNCHECKED = 1, 2  # exit statuses


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
            checked, what = verify_file(path)
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
