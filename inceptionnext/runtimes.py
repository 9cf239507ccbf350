"""`inceptionnext.runtimes`, the documented path of the runtime interface, which lives in `inceptionnext.deploy`."""

from .deploy.runtimes import *  # noqa: F401,F403
from .deploy.runtimes import __all__  # noqa: F401
