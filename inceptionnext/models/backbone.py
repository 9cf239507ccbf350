"""One way to build a timm model with weights from a file or its pretrained source, and one backbone adapter
(the classifier without its head) for every dense model: segmentation and detection build theirs here."""

import os
from typing import Optional

import timm
import torch.nn as nn


def create_timm_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    weights: Optional[str] = None,
    keep_classifier: bool = False,
    **kwargs,
) -> nn.Module:
    """timm.create_model by name. A local weight file (any format the library reads) goes through timm's
    pretrained path, which our loader serves: the classifier is dropped and a fresh head made when the class
    count differs from the weights' config (1000); `keep_classifier` declares the file's head to have
    `num_classes` outputs, so it is loaded too. A missing file is a FileNotFoundError naming it."""
    overlay = None
    if weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weight file not found: {weights}")
        overlay = dict(file=os.path.abspath(weights))
        if keep_classifier:
            overlay["num_classes"] = num_classes
        pretrained = True
    return timm.create_model(
        name, pretrained=pretrained, num_classes=num_classes, pretrained_cfg_overlay=overlay, **kwargs
    )


def create_backbone(name: str, pretrained: bool = False, weights: Optional[str] = None, **kwargs) -> nn.Module:
    """The zoo classifier `name` without its head (final norm and classifier pruned), for a dense model.

    Built with no classes, so a classifier's head of any class count in the weights is left out on loading.

    Args:
        name: a zoo classifier, e.g. `inceptionnext_t`.
        pretrained: load its ImageNet weights.
        weights: a local weight file instead (any format the library reads); implies loading.
        **kwargs: `timm.create_model` options (`drop_path_rate`, `output_stride`, ...).

    Returns:
        The backbone: stem and stages, no final norm, no head.

    Raises:
        FileNotFoundError: `weights` names no file.
        CheckpointError: the weights cannot be read or do not fit.
    """
    model = create_timm_model(name, 0, pretrained=pretrained, weights=weights, **kwargs)
    model.prune_intermediate_layers(len(model.feature_info), prune_norm=True, prune_head=True)
    return model
