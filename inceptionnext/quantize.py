"""`inceptionnext.quantize`, the documented path of the int8 quantizer, which lives in `inceptionnext.deploy`."""

from .deploy.quantize import *  # noqa: F401,F403
from .deploy.quantize import __all__  # noqa: F401
