"""Model definitions; importing this registers every zoo name with timm."""
from .convnext import ConvNeXt, ConvNeXtBlock
from .layers import ConvMlp, DWConv2d, InceptionDWConv2d, MlpClassifierHead, PartialDWConv2d
from .metanext import MetaNeXt, MetaNeXtBlock, MetaNeXtStage
from .zoo import PAPER_REFERENCE, ZOO, ZooEntry, build, get_entry
from . import segmentation  # noqa: E402  (registers the segmentation models; after the zoo it builds on)

__all__ = [
    'ConvNeXt', 'ConvNeXtBlock', 'ConvMlp', 'DWConv2d', 'InceptionDWConv2d', 'MlpClassifierHead', 'PartialDWConv2d',
    'MetaNeXt', 'MetaNeXtBlock', 'MetaNeXtStage', 'PAPER_REFERENCE', 'ZOO', 'ZooEntry', 'build', 'get_entry',
]
