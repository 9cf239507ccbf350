"""InceptionNeXt as timm models: `import inceptionnext` registers them, then `timm.create_model("inceptionnext_t")`.

Importing the package also registers the training tasks (classification, segmentation, detection) with the engine.

What is public is what an ``__all__`` lists: this package's (the names below and the modules it names) and each
public subpackage's. Every other module is internal and may change without notice.
"""

from . import checksum, cli, data, deploy, model_file, models, ops, quantize, runtimes, tasks, train, utils, weights
from .deploy import verify_file
from .models import ZOO, ConvNeXt, InceptionDWConv2d, MetaNeXt
from .version import __version__
from .weights import CheckpointError, load_state_dict_file, save_state_dict

__all__ = [
    "__version__",
    "checksum",
    "cli",
    "data",
    "deploy",
    "model_file",
    "models",
    "ops",
    "quantize",
    "runtimes",
    "tasks",
    "train",
    "utils",
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
