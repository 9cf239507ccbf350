"""InceptionNeXt as timm models: `import inceptionnext` registers them, then `timm.create_model("inceptionnext_t")`."""
from . import models, weights
from .models import ZOO, ConvNeXt, InceptionDWConv2d, MetaNeXt
from .weights import CheckpointError, load_state_dict_file, save_state_dict

__version__ = '0.1.0'
__all__ = [
    'models', 'weights', 'ZOO', 'ConvNeXt', 'InceptionDWConv2d', 'MetaNeXt', 'CheckpointError',
    'load_state_dict_file', 'save_state_dict',
]
