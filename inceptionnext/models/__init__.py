"""Model definitions: importing this registers every zoo backbone and classifier with timm, and the segmentation
and detection models with the dense-model registry (`models.dense`)."""

from . import detection, segmentation  # registers the dense models
from .backbone import create_backbone
from .convnext import ConvNeXt, ConvNeXtBlock
from .dense import create_any_model, create_dense_model, list_dense_models
from .layers import ConvMlp, DWConv2d, InceptionDWConv2d, MlpClassifierHead, PartialDWConv2d
from .metanext import MetaNeXt, MetaNeXtBlock, MetaNeXtStage
from .zoo import PAPER_REFERENCE, ZOO, ZooEntry, create_zoo_model, get_entry

__all__ = [
    "detection",
    "segmentation",
    "ConvNeXt",
    "ConvNeXtBlock",
    "ConvMlp",
    "DWConv2d",
    "InceptionDWConv2d",
    "MlpClassifierHead",
    "PartialDWConv2d",
    "create_any_model",
    "create_backbone",
    "create_dense_model",
    "list_dense_models",
    "MetaNeXt",
    "MetaNeXtBlock",
    "MetaNeXtStage",
    "PAPER_REFERENCE",
    "ZOO",
    "ZooEntry",
    "create_zoo_model",
    "get_entry",
]
