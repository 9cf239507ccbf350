"""`python -m inceptionnext.cli` is the `inceptionnext` command."""
import sys

from . import main

sys.exit(main())
