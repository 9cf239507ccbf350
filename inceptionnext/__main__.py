"""`python -m inceptionnext` is the `inceptionnext` command."""

import sys

from .cli import main

sys.exit(main())
