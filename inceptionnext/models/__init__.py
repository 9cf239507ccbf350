"""Model definitions: importing this registers every zoo backbone and classifier with timm, and the segmentation
and detection models with the dense-model registry (`models.dense`)."""

from . import detection, segmentation  # noqa: E402  (register the dense models; after the zoo they build on)
from .convnext import ConvNeXt, ConvNeXtBlock
from .dense import create_dense_model, list_dense_models
from .layers import ConvMlp, DWConv2d, InceptionDWConv2d, MlpClassifierHead, PartialDWConv2d
from .metanext import MetaNeXt, MetaNeXtBlock, MetaNeXtStage
from .zoo import PAPER_REFERENCE, ZOO, ZooEntry, build, get_entry

__all__ = [
    "ConvNeXt",
    "ConvNeXtBlock",
    "ConvMlp",
    "DWConv2d",
    "InceptionDWConv2d",
    "MlpClassifierHead",
    "PartialDWConv2d",
    "create_dense_model",
    "list_dense_models",
    "MetaNeXt",
    "MetaNeXtBlock",
    "MetaNeXtStage",
    "PAPER_REFERENCE",
    "ZOO",
    "ZooEntry",
    "build",
    "get_entry",
]
