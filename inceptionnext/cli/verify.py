"""`inceptionnext verify`: check that checkpoints are whole: each is read (weights-only) and its stored
checksum, which every training checkpoint carries, is compared with its content.

    inceptionnext verify output/run/last.pth output/run/model_best.pth
"""
import argparse
import sys

from ..checksum import verify_file
from ..utils.text import escape_control
from .common import USER_ERRORS


def cli(argv=None, prog: str = 'inceptionnext verify') -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog=prog, description=__doc__.splitlines()[0].split(': ', 1)[1])
    p.add_argument('files', nargs='+', metavar='FILE', help="checkpoints or weight files to check")
    a = p.parse_args(argv)
    failed = 0
    for path in a.files:
        try:
            print(f"ok: {escape_control(path)}: {escape_control(verify_file(path))}", flush=True)
        except USER_ERRORS as e:
            failed += 1
            print(f"error: {escape_control(e)}", file=sys.stderr, flush=True)
    return 1 if failed else 0
