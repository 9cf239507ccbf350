"""Detectors as data: every zoo backbone with an FPN, inside torchvision's own Faster R-CNN, RetinaNet, FCOS
and Mask R-CNN classes, so torchvision's losses, post-processing, tools and exporters all still apply.

A name such as `retinanet_inceptionnext_a_fpn` is split into a detector kind (`DETECTORS`) and a zoo backbone;
the backbone is built through timm (so its weights come through the library's one loader: release file, hub
copy, local .pth/.safetensors or a training checkpoint), loses its classifier, and feeds torchvision's
FeaturePyramidNetwork with the extra levels the detector expects.
"""

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from timm.layers import freeze_batch_norm_2d
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from .backbone import create_backbone
from .dense import DenseModel, list_dense_models, register_dense_model
from .zoo import ZOO, get_entry

STAGES = 4  # every zoo backbone has four stages, at strides 4, 8, 16 and 32
MASK_THRESHOLD = 0.5  # Mask R-CNN's soft masks become instance masks at this probability, as torchvision's


class DetectionBackbone(nn.Module):
    """A zoo classifier without its head: the outputs of the chosen stages, by stage index.

    `frozen_stages` follows mmdetection: -1 trains everything, 0 freezes the stem, k also the first k stages.
    Frozen parts get no gradient and stay in eval mode (their BatchNorm statistics do not move); `frozen_bn`
    turns every BatchNorm into a FrozenBatchNorm2d (the usual choice at small detection batches).

    Args:
        model: a zoo classifier without its head (`create_backbone`).
        return_stages: the indices (0-3) of the stages whose outputs `forward` returns.
        frozen_stages: -1 trains everything, 0 freezes the stem, k also the first k stages.
        frozen_bn: turn every BatchNorm into a FrozenBatchNorm2d.

    Raises:
        ValueError: `frozen_stages` is outside -1..4.
    """

    def __init__(
        self, model: nn.Module, return_stages: Sequence[int], frozen_stages: int = -1, frozen_bn: bool = False
    ):
        super().__init__()
        if not -1 <= frozen_stages <= STAGES:
            raise ValueError(f"frozen_stages must be between -1 (train all) and {STAGES}, not {frozen_stages}")
        self.model = freeze_batch_norm_2d(model) if frozen_bn else model
        self.return_stages = tuple(return_stages)
        self.channels = [model.feature_info[i]["num_chs"] for i in self.return_stages]
        self.strides = [model.feature_info[i]["reduction"] for i in self.return_stages]
        self.frozen_stages = frozen_stages
        for module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()

    def frozen_modules(self) -> List[nn.Module]:
        """The parts `frozen_stages` freezes.

        Returns:
            The stem (when frozen_stages >= 0) and the first `frozen_stages` stages.
        """
        stem, stages = self.model._stem_and_stages()
        return ([stem] if self.frozen_stages >= 0 else []) + list(stages[: max(self.frozen_stages, 0)])

    def train(self, mode: bool = True):
        """`nn.Module.train`, the frozen parts kept in eval mode.

        Args:
            mode: train (True) or eval (False).

        Returns:
            The module itself.
        """
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.model.forward_intermediates(x, indices=list(self.return_stages), intermediates_only=True)
        return OrderedDict((str(i), f) for i, f in zip(self.return_stages, feats))


class BackboneWithFPN(nn.Module):
    """Stage outputs -> torchvision's FeaturePyramidNetwork; `out_channels` is what torchvision's heads read.

    Args:
        body: the backbone.
        out_channels: channels of every pyramid level.
        extra_blocks: torchvision's extra levels (a max-pooled level, or P6/P7); None for none.
        norm_layer: the FPN's norm; None for none.
    """

    def __init__(
        self,
        body: DetectionBackbone,
        out_channels: int,
        extra_blocks: Optional[ExtraFPNBlock],
        norm_layer: Optional[Callable[..., nn.Module]] = None,
    ):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=extra_blocks, norm_layer=norm_layer)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.fpn(self.body(x))


@dataclass(frozen=True)
class DetectorSpec:
    """How one torchvision detector family is fed: which stages, which extra pyramid levels, which anchors.

    Args:
        kind: the name's prefix, e.g. `retinanet`.
        model_cls: the torchvision detector class.
        return_stages: the backbone stages fed to the FPN.
        extra_blocks: builds the extra pyramid levels from the FPN's channel count.
        anchors: builds the anchor generator from one base anchor size per pyramid level.
        default_anchor_sizes: those sizes, as torchvision's own models use them.
        masks: the detector predicts instance masks (Mask R-CNN).
    """

    kind: str
    model_cls: type
    return_stages: Tuple[int, ...]
    extra_blocks: Callable[[int], ExtraFPNBlock]
    anchors: Callable[[Sequence[int]], AnchorGenerator]  # from one base anchor size per pyramid level
    default_anchor_sizes: Tuple[int, ...]
    masks: bool = False

    @property
    def two_stage(self) -> bool:
        """An R-CNN (an RPN, then RoI heads): its anchors, box head and score threshold have their own kwargs."""
        return issubclass(self.model_cls, FasterRCNN)  # Mask R-CNN is a Faster R-CNN


def _rcnn_anchors(sizes: Sequence[int]) -> AnchorGenerator:
    return AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))


def _retina_anchors(sizes: Sequence[int]) -> AnchorGenerator:  # three octave scales per level, as RetinaNet
    return AnchorGenerator(
        tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes)
    )


def _fcos_anchors(sizes: Sequence[int]) -> AnchorGenerator:  # one point per location; the size is the stride
    return AnchorGenerator(tuple((s,) for s in sizes), ((1.0,),) * len(sizes))


# torchvision's own choices for its ResNet-50 detectors: R-CNNs use all four stages plus a max-pooled level,
# the one-stage detectors stages 2-4 plus P6/P7 computed from P5.
DETECTORS: Dict[str, DetectorSpec] = {
    spec.kind: spec
    for spec in (
        DetectorSpec(
            "fasterrcnn", FasterRCNN, (0, 1, 2, 3), lambda c: LastLevelMaxPool(), _rcnn_anchors, (32, 64, 128, 256, 512)
        ),
        DetectorSpec(
            "maskrcnn",
            MaskRCNN,
            (0, 1, 2, 3),
            lambda c: LastLevelMaxPool(),
            _rcnn_anchors,
            (32, 64, 128, 256, 512),
            masks=True,
        ),
        DetectorSpec(
            "retinanet", RetinaNet, (1, 2, 3), lambda c: LastLevelP6P7(c, c), _retina_anchors, (32, 64, 128, 256, 512)
        ),
        DetectorSpec("fcos", FCOS, (1, 2, 3), lambda c: LastLevelP6P7(c, c), _fcos_anchors, (8, 16, 32, 64, 128)),
    )
}


def detector_name(kind: str, backbone: str) -> str:
    return f"{kind}_{backbone}_fpn"


# every detector kind on every zoo backbone (short names; the official long names are accepted too)
DETECTION_MODELS: Dict[str, Tuple[str, str]] = {
    detector_name(kind, entry.name): (kind, entry.name) for kind in DETECTORS for entry in ZOO
}


def parse_name(name: str) -> Tuple[DetectorSpec, str]:
    """(detector spec, zoo backbone name) for a detector name such as `maskrcnn_inceptionnext_t_fpn`.

    Args:
        name: `<kind>_<backbone>_fpn`; the backbone may be a short or an official name.

    Returns:
        The kind's `DetectorSpec` and the backbone's short name.

    Raises:
        KeyError: the name does not have that form, or names an unknown kind or backbone.
    """
    kind, _, rest = name.partition("_")
    if kind in DETECTORS and rest.endswith("_fpn"):
        backbone = rest[: -len("_fpn")]
        try:
            return DETECTORS[kind], get_entry(backbone).name
        except KeyError:
            pass
    raise KeyError(
        f"{name!r} is not a detection model; names are <{'|'.join(DETECTORS)}>_<backbone>_fpn, "
        f"e.g. {next(iter(DETECTION_MODELS))} (see inceptionnext.models.detection.list_detectors())"
    )


def list_detectors(pattern: str = "*") -> List[str]:
    """The detection models' names.

    Args:
        pattern: a shell-style pattern, e.g. `"retinanet_*"`.

    Returns:
        The matching names, sorted.
    """
    return list_dense_models("detection", pattern)


def detection_backbone(
    backbone: str,
    return_stages: Sequence[int],
    weights: Optional[str] = None,
    pretrained: bool = False,
    frozen_stages: int = -1,
    frozen_bn: bool = False,
    drop_path_rate: float = 0.0,
) -> DetectionBackbone:
    """A zoo backbone with its weights from `weights` (any file the library reads) or its pretrained source.

    Args:
        backbone: a zoo name.
        return_stages: the stages whose outputs it returns.
        weights: a local weight file; implies loading.
        pretrained: load the ImageNet weights from the pretrained source.
        frozen_stages: -1 trains everything, 0 freezes the stem, k also the first k stages.
        frozen_bn: turn every BatchNorm into a FrozenBatchNorm2d.
        drop_path_rate: the backbone's stochastic depth.

    Returns:
        The backbone.

    Raises:
        FileNotFoundError: `weights` names no file.
        CheckpointError: the weights cannot be read or do not fit.
        ValueError: `frozen_stages` is outside -1..4.
    """
    model = create_backbone(backbone, pretrained=pretrained, weights=weights, drop_path_rate=drop_path_rate)
    return DetectionBackbone(model, return_stages, frozen_stages=frozen_stages, frozen_bn=frozen_bn)


def create_detector(
    name: str,
    num_classes: int,
    *,
    backbone_weights: Optional[str] = None,
    pretrained_backbone: bool = False,
    frozen_stages: int = -1,
    frozen_bn: bool = False,
    fpn_channels: int = 256,
    anchor_sizes: Optional[Sequence[int]] = None,
    drop_path_rate: float = 0.0,
    box_head_dim: Optional[int] = None,
    **detector_kwargs: Any,
) -> nn.Module:
    """torchvision's detector of the named kind on the named zoo backbone.

    num_classes counts the object classes. Labels are 1..num_classes for every kind and 0 is background, as in
    torchvision's COCO models, so every detector gets num_classes + 1 outputs (a one-stage detector's class 0
    output is only ever a negative). `anchor_sizes` gives one base size per pyramid level (5 levels); everything else
    (min_size, max_size, score_thresh, box_batch_size_per_image, ...) goes to the torchvision class unchanged.
    `box_head_dim` narrows an R-CNN's two-layer box head (torchvision's is 1024 wide, which on small images costs
    many times the backbone).

    Args:
        name: `<kind>_<backbone>_fpn`, e.g. `retinanet_inceptionnext_a_fpn` (`list_detectors`).
        num_classes: object classes, background not counted.
        backbone_weights: a local weight file for the backbone.
        pretrained_backbone: load the backbone's ImageNet weights.
        frozen_stages: -1 trains the whole backbone, 0 freezes its stem, k also its first k stages.
        frozen_bn: turn every BatchNorm of the backbone into a FrozenBatchNorm2d.
        fpn_channels: channels of every pyramid level.
        anchor_sizes: one base anchor size per pyramid level (5); None for torchvision's defaults.
        drop_path_rate: the backbone's stochastic depth.
        box_head_dim: width of an R-CNN's box head; None for torchvision's 1024.
        **detector_kwargs: passed to the torchvision class unchanged.

    Returns:
        The detector, with `detector_name` and `num_object_classes` set.

    Raises:
        KeyError: `name` is not a detection model.
        ValueError: `num_classes` is below 1, `anchor_sizes` does not have 5 sizes, `box_head_dim` is given for
            a one-stage detector, or `frozen_stages` is outside -1..4.
        FileNotFoundError: `backbone_weights` names no file.
        CheckpointError: the backbone's weights cannot be read or do not fit.
    """
    spec, backbone = parse_name(name)
    if num_classes < 1:
        raise ValueError(f"{name}: num_classes must be at least 1, not {num_classes}")
    body = detection_backbone(
        backbone, spec.return_stages, backbone_weights, pretrained_backbone, frozen_stages, frozen_bn, drop_path_rate
    )
    net = BackboneWithFPN(body, fpn_channels, spec.extra_blocks(fpn_channels))
    sizes = tuple(anchor_sizes or spec.default_anchor_sizes)
    if len(sizes) != 5:
        raise ValueError(f"{name}: anchor_sizes needs one size per pyramid level (5), got {len(sizes)}")
    cfg = body.model.pretrained_cfg or {}
    detector_kwargs.setdefault("image_mean", list(cfg.get("mean", (0.485, 0.456, 0.406))))
    detector_kwargs.setdefault("image_std", list(cfg.get("std", (0.229, 0.224, 0.225))))
    anchors = spec.anchors(sizes)
    key = "rpn_anchor_generator" if spec.two_stage else "anchor_generator"
    detector_kwargs.setdefault(key, anchors)
    if box_head_dim is not None:
        if not spec.two_stage:
            raise ValueError(f"{name}: box_head_dim is for the R-CNN detectors (a {spec.kind} has no box head)")
        roi = 7  # torchvision's MultiScaleRoIAlign output size for the box head
        detector_kwargs["box_head"] = TwoMLPHead(fpn_channels * roi * roi, box_head_dim)
        detector_kwargs["box_predictor"] = FastRCNNPredictor(box_head_dim, num_classes + 1)
        if spec.kind == "maskrcnn":  # torchvision's default mask head ends in 256 channels
            detector_kwargs.setdefault("mask_predictor", MaskRCNNPredictor(256, 256, num_classes + 1))
        num_classes_arg = None  # torchvision refuses num_classes beside a box predictor
    else:
        num_classes_arg = num_classes + 1
    model = spec.model_cls(net, num_classes=num_classes_arg, **detector_kwargs)
    model.detector_name = name
    model.num_object_classes = num_classes
    return model


def _register(name: str) -> None:
    def builder(num_classes: int = 91, **kwargs) -> nn.Module:
        return create_detector(name, num_classes, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__module__ = __name__
    kind, backbone = DETECTION_MODELS[name]
    builder.__doc__ = (
        f"torchvision {DETECTORS[kind].model_cls.__name__} on {backbone} with an FPN; "
        "see create_detector for the options.\n\n"
        "Args:\n"
        "    num_classes: object classes, background not counted.\n"
        "    **kwargs: create_detector's options.\n\n"
        "Returns:\n"
        "    The detector."
    )
    globals()[name] = builder


for _name in DETECTION_MODELS:
    _register(_name)
    register_dense_model(DenseModel(_name, "detection", *DETECTION_MODELS[_name], globals()[_name]))


__all__ = [
    "DETECTORS",
    "DETECTION_MODELS",
    "DetectionBackbone",
    "BackboneWithFPN",
    "DetectorSpec",
    "create_detector",
    "detection_backbone",
    "list_detectors",
    "parse_name",
] + list(DETECTION_MODELS)
