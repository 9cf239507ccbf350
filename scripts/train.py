#!/usr/bin/env python
"""`inceptionnext train` from a checkout, without installing the package (same flags; see --help)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inceptionnext.cli.train import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli(prog="python scripts/train.py"))
