"""InceptionNeXt as timm models: `import inceptionnext` registers them, then `timm.create_model("inceptionnext_t")`.

Importing the package also registers the training tasks (classification, segmentation, detection) with the engine."""

from . import models, tasks, weights
from .deploy import verify_file
from .models import ZOO, ConvNeXt, InceptionDWConv2d, MetaNeXt
from .version import __version__
from .weights import CheckpointError, load_state_dict_file, save_state_dict

__all__ = [
    "__version__",
    "models",
    "tasks",
    "weights",
    "ZOO",
    "ConvNeXt",
    "InceptionDWConv2d",
    "MetaNeXt",
    "CheckpointError",
    "load_state_dict_file",
    "save_state_dict",
    "verify_file",
]
