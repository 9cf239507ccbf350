"""Pictures of detections: boxes, class names and scores (and instance masks) drawn with torchvision.utils."""

from __future__ import annotations

import functools
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ...models.detection import MASK_THRESHOLD
from ...utils.plots import grid_figure
from ...utils.text import excerpt

PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
]


@functools.lru_cache(maxsize=None)
def label_font() -> Optional[str]:
    """A TrueType font for legible labels: matplotlib's DejaVu Sans (torchvision's default bitmap font is tiny)."""
    try:
        import matplotlib
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
    return path if os.path.isfile(path) else None


def label_text(label: int, class_names: Optional[Sequence[str]]) -> str:
    """Labels are 1..K (0 is background); class_names[label - 1] names them."""
    if class_names and 1 <= label <= len(class_names):
        return str(class_names[label - 1])
    return str(label)


def draw_detections(
    image: torch.Tensor,
    detections: Dict[str, torch.Tensor],
    class_names: Optional[Sequence[str]] = None,
    score_thresh: float = 0.5,
    width: int = 2,
    upscale: Optional[int] = None,
    scores: bool = True,
) -> torch.Tensor:
    """uint8 (3, H, W) image with the detections scoring at least score_thresh drawn on it.

    Small images are drawn `upscale` times larger (default: enough for a short side of 192 px), pixel for pixel,
    so that the labels stay legible.
    """
    upscale = upscale or max(1, 192 // min(image.shape[-2:]))
    if upscale > 1:
        image = torch.nn.functional.interpolate(image[None].float(), scale_factor=upscale, mode="nearest")[0].to(
            torch.uint8
        )
        detections = dict(detections, boxes=detections["boxes"] * upscale)
        if "masks" in detections:
            masks = detections["masks"]
            detections["masks"] = torch.nn.functional.interpolate(
                masks.float().reshape(-1, 1, *masks.shape[-2:]), scale_factor=upscale, mode="nearest"
            )
    if "scores" not in detections:  # ground truth: every box, named without a score
        detections = dict(detections, scores=torch.ones(len(detections["boxes"])))
        scores = False
    keep = detections["scores"] >= score_thresh
    boxes, labels = detections["boxes"][keep], detections["labels"][keep]
    colours = [PALETTE[int(lbl) % len(PALETTE)] for lbl in labels]
    if "masks" in detections and keep.any():
        masks = detections["masks"][keep]
        masks = (masks[:, 0] if masks.dim() == 4 else masks) > MASK_THRESHOLD
        image = draw_segmentation_masks(image, masks, alpha=0.45, colors=colours)
    # names come from files: drawn escaped (a control character would also fail the text layout)
    texts = [
        excerpt(label_text(int(lbl), class_names), 40) + (f" {float(s):.2f}" if scores else "")
        for lbl, s in zip(labels, detections["scores"][keep])
    ]
    if len(boxes) == 0:
        return image
    font = label_font()
    return draw_bounding_boxes(
        image,
        boxes,
        labels=texts,
        colors=colours,
        width=width,
        font=font,
        font_size=max(10, min(image.shape[-2:]) // 12) if font else None,
        fill_labels=True,
        label_colors="black",
        label_background_colors=colours,
    )


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8) if image.is_floating_point() else image


def truth_and_detections_figure(
    images: List[torch.Tensor],
    targets: List[Dict[str, torch.Tensor]],
    detections: List[Dict[str, torch.Tensor]],
    class_names: Optional[Sequence[str]] = None,
    score_thresh: float = 0.5,
    title: str = "",
):
    """A matplotlib figure: each image's ground truth beside the detections scoring at least score_thresh, one
    scale for the grid, the classes' box colours in a legend."""
    upscale = max(1, 192 // max(max(im.shape[-2:]) for im in images))  # one enlargement for every panel
    rows, present = [], set()
    for image, target, det in zip(images, targets, detections):
        image = to_uint8(image.cpu())
        det = {k: v.detach().cpu() for k, v in det.items()}
        truth = {k: v.detach().cpu() for k, v in target.items() if k in ("boxes", "labels", "masks")}
        present |= {int(v) for v in truth["labels"]} | {
            int(v) for v, s in zip(det["labels"], det["scores"]) if s >= score_thresh
        }
        rows.append(
            [
                draw_detections(image, truth, class_names, 0.0, upscale=upscale).permute(1, 2, 0).numpy(),
                draw_detections(image, det, class_names, score_thresh, upscale=upscale).permute(1, 2, 0).numpy(),
            ]
        )
    legend = [(label_text(c, class_names), PALETTE[c % len(PALETTE)]) for c in sorted(present)]
    return grid_figure(
        [[np.ascontiguousarray(a) for a in r] for r in rows],
        ["ground truth", f"detections (score >= {score_thresh:g})"],
        legend,
        row_labels=[f"val {i}" for i in range(len(rows))],
        title=title,
        legend_title="classes",
    )
