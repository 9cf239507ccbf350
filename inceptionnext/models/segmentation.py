"""Semantic segmentation models as data: UperNet and Semantic FPN on every backbone of the zoo.

The paper's ADE20K models (Tables 6 and 7), which the official repository never released. As the authors
describe them: the backbone is the classifier without its head, with one extra norm on each of its four stage
outputs (the family's own norm: BatchNorm for InceptionNeXt, channels-first LayerNorm for ConvNeXt; the engine
turns BatchNorm into SyncBatchNorm under DDP). The heads are mmsegmentation's, as the paper used:

- UperNet: UPerHead (PPM with pool scales 1, 2, 3, 6 on stage 4, FPN over all four stages, 512 channels,
  conv-BN-ReLU), which segmentation_models_pytorch's ``UPerNetDecoder`` builds layer for layer (its own feature
  LayerNorms are replaced by the backbone's norms), plus the auxiliary FCN head on stage 3 (256 channels).
- Semantic FPN: mmsegmentation's FPN neck (1x1 laterals and 3x3 output convs with bias, 256 channels, nearest
  top-down) and FPNHead (128 channels, each level brought to stride 4 by conv-BN-ReLU-upsample steps, summed).
  smp's ``FPNDecoder`` lacks the neck's 3x3 output convs (2.4M parameters, 8% of FPN-T) and uses GroupNorm,
  so these two are small modules here.

The weights of the backbone come through the library's one loader (`weights.load_pretrained_state_dict`, via
timm's pretrained path, in `models.backbone`): ``pretrained=True`` takes the backbone's default source, ``backbone_weights=<file>`` any
file the loader reads (official .pth, hub copy, safetensors, training checkpoints of a classifier).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import LayerNorm2d

from .backbone import create_backbone
from .dense import DenseModel, get_dense_model, is_dense_model, register_dense_model
from .zoo import ZOO, get_entry

# ADE20K's 150 classes (reduce_zero_label drops "other"), the paper's benchmark and these models' default.
ADE20K_NUM_CLASSES = 150
IGNORE_INDEX = 255


@dataclass(frozen=True)
class SegSpec:
    """One segmentation architecture: a head on a zoo backbone, and what the paper reports for it.

    Args:
        name: the model's name, `<head>_<backbone>`.
        head: 'upernet' or 'fpn'.
        backbone: a zoo name.
        paper: params (M), MACs (G) at the paper's input size, ADE20K mIoU; empty where the paper has none.
    """

    name: str
    head: str  # 'upernet' or 'fpn'
    backbone: str  # a zoo name
    paper: Dict[str, float]  # params (M), MACs (G) at paper_size, ADE20K mIoU


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    """mmsegmentation's ConvModule with BN and ReLU (no conv bias under a norm)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ClassifierConv(nn.Module):
    """Dropout then a 1x1 conv to class logits (mmsegmentation's cls_seg)."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(x))


class UPerHead(nn.Module):
    """UPerHead from smp's UPerNetDecoder (PPM 1,2,3,6 + FPN fusion), then the classifier conv.

    Args:
        in_channels: channels of each stage output, stride 4 first.
        num_classes: classes of the logits.
        channels: the decoder's width.
        dropout: dropout before the classifier conv.

    Raises:
        ImportError: segmentation_models_pytorch is not installed (the `segmentation` extra).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 512, dropout: float = 0.1):
        super().__init__()
        try:
            from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
        except ImportError as e:
            raise ImportError(
                "UperNet's decoder comes from segmentation_models_pytorch: pip install 'inceptionnext[segmentation]'"
            ) from e

        # smp counts features from full resolution: two placeholders stand for strides 1 and 2
        self.decoder = UPerNetDecoder([0, 0, *in_channels], encoder_depth=5, decoder_channels=channels)
        # the extra per-stage norms belong to the backbone (the authors' design), not to the head
        self.decoder.feature_norms = nn.ModuleList(nn.Identity() for _ in in_channels)
        self.cls = ClassifierConv(channels, num_classes, dropout)

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        return self.cls(self.decoder([None, None, *features]))


class FCNHead(nn.Module):
    """The auxiliary head: one 3x3 conv-BN-ReLU on stage 3, then the classifier conv (loss weight 0.4).

    Args:
        in_channels: channels of the stage output it reads.
        num_classes: classes of the logits.
        channels: the conv's width.
        dropout: dropout before the classifier conv.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, dropout: float = 0.1):
        super().__init__()
        self.conv = _conv_bn_relu(in_channels, channels, 3)
        self.cls = ClassifierConv(channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.conv(x))


class FPNNeck(nn.Module):
    """mmsegmentation's FPN neck: 1x1 laterals, nearest top-down sum, 3x3 output convs (all with bias).

    Args:
        in_channels: channels of each stage output, stride 4 first.
        channels: channels of every pyramid level.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest"
            )
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals)]


class FPNHead(nn.Module):
    """mmsegmentation's FPNHead: per level, max(1, log2(stride / 4)) conv-BN-ReLU steps, each but the stride-4
    level's followed by a 2x bilinear upsampling; the levels are summed at stride 4.

    Args:
        num_levels: pyramid levels, stride 4 first.
        num_classes: classes of the logits.
        in_channels: channels of every level.
        channels: the head's width.
        dropout: dropout before the classifier conv.
    """

    def __init__(
        self, num_levels: int, num_classes: int, in_channels: int = 256, channels: int = 128, dropout: float = 0.1
    ):
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for level in range(num_levels):
            steps = []
            for k in range(max(1, level)):
                steps.append(_conv_bn_relu(in_channels if k == 0 else channels, channels, 3))
                if level > 0:
                    steps.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*steps))
        self.cls = ClassifierConv(channels, num_classes, dropout)

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](features[0])
        for head, f in zip(self.scale_heads[1:], features[1:]):
            out = out + F.interpolate(head(f), size=out.shape[2:], mode="bilinear", align_corners=False)
        return self.cls(out)


class SemanticFPNHead(nn.Module):
    """The FPN neck and FPNHead as one decode head.

    Args:
        in_channels: channels of each stage output, stride 4 first.
        num_classes: classes of the logits.
        channels: the neck's width.
        head_channels: the head's width.
        dropout: dropout before the classifier conv.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        head_channels: int = 128,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.neck = FPNNeck(in_channels, channels)
        self.head = FPNHead(len(in_channels), num_classes, channels, head_channels, dropout)

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        return self.head(self.neck(features))

    @property
    def cls(self) -> ClassifierConv:
        """The classifier, where `UPerHead` keeps its own (`EncoderDecoder.get_classifier` reads it)."""
        return self.head.cls


class EncoderDecoder(nn.Module):
    """Backbone (classifier without head) -> one norm per stage output -> decode head (+ auxiliary head).

    Returns class logits at the input's resolution (bilinear); in training mode with an auxiliary head, the
    pair (decode logits, auxiliary logits), both at the input's resolution.

    Args:
        backbone: a zoo classifier without its head (`create_backbone`).
        stage_norms: one norm per stage output.
        decode_head: takes the normed stage outputs, gives logits at stride 4.
        aux_head: takes stage `aux_index`'s output in training; None for none.
        num_classes: classes of the logits.
        aux_index: the stage the auxiliary head reads.
    """

    def __init__(
        self,
        backbone: nn.Module,
        stage_norms: nn.ModuleList,
        decode_head: nn.Module,
        aux_head: Optional[nn.Module],
        num_classes: int,
        aux_index: int = 2,
    ):
        super().__init__()
        self.backbone = backbone
        self.stage_norms = stage_norms
        self.decode_head = decode_head
        self.aux_head = aux_head
        self.aux_index = aux_index
        self.num_classes = num_classes
        self.in_chans = backbone.in_chans

    def extract_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The normed stage outputs the heads read.

        Args:
            x: images, (B, C, H, W).

        Returns:
            One feature map per stage, stride 4 first.
        """
        feats = self.backbone.forward_intermediates(x, indices=len(self.stage_norms), intermediates_only=True)
        return [norm(f) for norm, f in zip(self.stage_norms, feats)]

    def forward(self, x: torch.Tensor):
        size = x.shape[2:]
        feats = self.extract_features(x)
        out = F.interpolate(self.decode_head(feats), size=size, mode="bilinear", align_corners=False)
        if self.training and self.aux_head is not None:
            aux = F.interpolate(self.aux_head(feats[self.aux_index]), size=size, mode="bilinear", align_corners=False)
            return out, aux
        return out

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """The backbone's layer groups (for layer-wise lr decay); norms and heads fall in the top group.

        Args:
            coarse: one group per stage instead of one per block.

        Returns:
            timm's group matcher, its patterns under `backbone.`.
        """

        def prefix(pattern):
            return pattern.replace("^", r"^backbone\.", 1)

        groups = {}
        for key, value in self.backbone.group_matcher(coarse).items():
            if isinstance(value, str):
                groups[key] = prefix(value)
            else:
                groups[key] = [(prefix(p), order) for p, order in value]
        return groups

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        """Recompute the backbone's activations in the backward pass instead of keeping them (less memory).

        Args:
            enable: on or off.
        """
        self.backbone.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The decode head's classifier conv.

        Returns:
            The 1x1 conv to class logits.
        """
        return self.decode_head.cls.conv_seg


def _stage_norm(family: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if family == "inceptionnext" else LayerNorm2d(channels, eps=1e-6)


def create_segmenter_from_parts(
    head: str,
    backbone: str,
    num_classes: int = ADE20K_NUM_CLASSES,
    pretrained: bool = False,
    backbone_weights: Optional[str] = None,
    aux_head: Optional[bool] = None,
    drop_path_rate: float = 0.0,
    in_chans: int = 3,
    cache_dir: Optional[str] = None,
    head_channels: Optional[int] = None,
    **backbone_kwargs,
) -> EncoderDecoder:
    """A segmentation model by parts: head 'upernet' or 'fpn' on zoo backbone `backbone`.

    Narrower heads (`head_channels`) suit small inputs and CPU demos.

    Args:
        head: 'upernet' or 'fpn'.
        backbone: a zoo name.
        num_classes: classes of the logits (ADE20K's 150 by default).
        pretrained: load the backbone's ImageNet weights.
        backbone_weights: a local weight file for the backbone instead.
        aux_head: the auxiliary FCN head on stage 3 (None: on for UperNet, as mmsegmentation's configs have it).
        drop_path_rate: the backbone's stochastic depth.
        in_chans: input channels.
        cache_dir: the cache for the backbone's downloads.
        head_channels: the decode head's width (UperNet 512, FPN neck 256; the FPN head and the auxiliary head
            take half of it); None keeps the paper's.
        **backbone_kwargs: more `timm.create_model` options for the backbone.

    Returns:
        The model.

    Raises:
        KeyError: `backbone` is not a zoo name.
        ValueError: `head` is neither 'upernet' nor 'fpn'.
        FileNotFoundError: `backbone_weights` names no file.
        CheckpointError: the backbone's weights cannot be read or do not fit.
    """
    entry = get_entry(backbone)
    body = create_backbone(
        backbone,
        pretrained=pretrained,
        weights=backbone_weights,
        cache_dir=cache_dir,
        drop_path_rate=drop_path_rate,
        in_chans=in_chans,
        **backbone_kwargs,
    )
    dims = [info["num_chs"] for info in body.feature_info]
    norms = nn.ModuleList(_stage_norm(entry.family, c) for c in dims)
    if head == "upernet":
        width = head_channels or 512
        decode = UPerHead(dims, num_classes, width)
        aux = FCNHead(dims[2], num_classes, width // 2) if aux_head in (None, True) else None
    elif head == "fpn":
        width = head_channels or 256
        decode = SemanticFPNHead(dims, num_classes, width, width // 2)
        aux = FCNHead(dims[2], num_classes, width) if aux_head else None
    else:
        raise ValueError(f"unknown segmentation head {head!r}; known: upernet, fpn")
    return EncoderDecoder(body, norms, decode, aux, num_classes)


# ---------------------------------------------------------------------------------------------------------------
# the table: every head on every zoo backbone (one name per architecture), with the paper's figures where it has them

HEADS = ("upernet", "fpn")
# Tables 6 (UperNet, MACs at 512x2048, mIoU multi-scale + flip) and 7 (Semantic FPN, MACs at 512x512)
PAPER = {
    ("upernet", "inceptionnext_t"): dict(params=56, macs=933, miou=47.9),
    ("upernet", "inceptionnext_s"): dict(params=78, macs=1020, miou=50.0),
    ("upernet", "inceptionnext_b"): dict(params=115, macs=1159, miou=50.6),
    ("fpn", "inceptionnext_t"): dict(params=28, macs=44, miou=43.1),
    ("fpn", "inceptionnext_s"): dict(params=50, macs=65, miou=45.6),
    ("fpn", "inceptionnext_b"): dict(params=85, macs=100, miou=46.4),
}
PAPER_SIZE = {"upernet": (512, 2048), "fpn": (512, 512)}
SEG_ZOO: Tuple[SegSpec, ...] = tuple(
    SegSpec(f"{head}_{entry.name}", head, entry.name, PAPER.get((head, entry.name), {}))
    for head in HEADS
    for entry in ZOO
    if entry.name != "inceptionnext_b_384"
)


def get_seg_spec(name: str) -> SegSpec:
    """The architecture a segmentation model's name stands for.

    Args:
        name: e.g. `upernet_inceptionnext_t` (a tag after '.' is ignored).

    Returns:
        Its `SegSpec`.

    Raises:
        KeyError: no segmentation model has that name; the message lists them.
    """
    base = name.split(".")[0]
    for spec in SEG_ZOO:
        if spec.name == base:
            return spec
    raise KeyError(f"{name!r} is not a segmentation model; known: {', '.join(s.name for s in SEG_ZOO)}")


def is_segmentation_model(name: Optional[str]) -> bool:
    """Whether `name` is a registered segmentation model.

    Args:
        name: a model name, or None.

    Returns:
        True for a segmentation model's name.
    """
    return is_dense_model(name, "segmentation")


def _seg_cfg(spec: SegSpec) -> Dict[str, Any]:
    first_conv = (
        "backbone.stem.0" if get_entry(spec.backbone).family == "inceptionnext" else "backbone.downsample_layers.0.0"
    )
    return dict(
        url="",
        num_classes=ADE20K_NUM_CLASSES,
        input_size=(3, 512, 512),
        pool_size=None,
        crop_pct=1.0,
        interpolation="bilinear",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        first_conv=first_conv,
        classifier="decode_head.head.cls.conv_seg" if spec.head == "fpn" else "decode_head.cls.conv_seg",
        license="apache-2.0",
        paper_name="InceptionNeXt: When Inception Meets ConvNeXt",
        paper_ids="arXiv:2303.16900",
    )


def create_segmenter(
    name: str,
    pretrained: bool = False,
    pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
    device=None,
    dtype=None,
    **kwargs,
) -> EncoderDecoder:
    """Build the registered segmentation model `name` (kwargs as `create_segmenter_from_parts`; num_classes defaults to
    ADE20K's 150); `pretrained` loads the backbone's ImageNet weights. Its `pretrained_cfg` carries the
    preprocessing, updated by `pretrained_cfg_overlay` (a saved model's own record).

    Args:
        name: a registered segmentation model, e.g. `upernet_inceptionnext_t`.
        pretrained: load the backbone's ImageNet weights.
        pretrained_cfg_overlay: entries that replace those of the model's pretrained config.
        device: build the model on this device.
        dtype: cast the model to this dtype.
        **kwargs: `create_segmenter_from_parts`'s options.

    Returns:
        The model, its `pretrained_cfg` set.

    Raises:
        KeyError: `name` is not a segmentation model.
    """
    spec = get_seg_spec(name)
    cfg = dict(get_dense_model(spec.name).default_cfg, **(pretrained_cfg_overlay or {}))  # registered below
    kwargs.setdefault("num_classes", cfg["num_classes"])
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = create_segmenter_from_parts(spec.head, spec.backbone, pretrained=pretrained, **kwargs)
    if dtype is not None:
        model = model.to(dtype=dtype)
    model.pretrained_cfg = model.default_cfg = dict(cfg, num_classes=model.num_classes)
    return model


for _spec in SEG_ZOO:
    register_dense_model(
        DenseModel(
            _spec.name,
            "segmentation",
            _spec.head,
            _spec.backbone,
            partial(create_segmenter, _spec.name),
            dict(_seg_cfg(_spec), architecture=_spec.name),
        )
    )


def paper_size(name: str) -> Tuple[int, int]:
    return PAPER_SIZE[get_seg_spec(name).head]


__all__ = [
    "ADE20K_NUM_CLASSES",
    "IGNORE_INDEX",
    "EncoderDecoder",
    "FCNHead",
    "FPNHead",
    "FPNNeck",
    "SEG_ZOO",
    "SegSpec",
    "SemanticFPNHead",
    "UPerHead",
    "create_segmenter_from_parts",
    "create_segmenter",
    "get_seg_spec",
    "is_segmentation_model",
]
