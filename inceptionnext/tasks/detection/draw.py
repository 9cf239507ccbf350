"""Pictures of detections: boxes, class names and scores (and instance masks) drawn with torchvision.utils."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ...models.detection import MASK_THRESHOLD
from ...utils.plots import enlargement, font, grid_figure, with_legend
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
    image = draw_bounding_boxes(image, boxes, colors=colours, width=width)
    return place_labels(image, boxes, texts, colours, detections["scores"][keep])


def _shared(a, b) -> float:
    """The area two (x0, y0, x1, y1) rectangles share."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _cost(tab, labels, boxes, rank: int):
    """How bad a label's place is: the labels it would hide, then how much of the other boxes it would cover, then
    its rank among the places tried."""
    return sum(_shared(tab, t) > 0 for t in labels), sum(_shared(tab, b) for b in boxes), rank


def place_labels(image: torch.Tensor, boxes: torch.Tensor, texts, colours, scores: torch.Tensor) -> torch.Tensor:
    """Each box's label on a tab of its colour just outside the box (above, below, right or left of it, in that
    order of preference), where it hides no label already placed and covers the least of the other boxes (inside
    the box's top only when there is no room outside). Higher scores are placed first."""
    from PIL import Image, ImageDraw

    height, width = image.shape[-2:]
    face = font(max(12, min(22, min(height, width) // 24)))
    picture = Image.fromarray(image.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(picture)
    taken, rects = [], [tuple(float(v) for v in b) for b in boxes]
    for i in sorted(range(len(texts)), key=lambda i: -float(scores[i])):
        x0, y0, x1, y1 = rects[i]
        left, top, right, bottom = face.getbbox(texts[i])
        tw, th = right - left + 6, bottom - top + 4
        x = min(max(0.0, x0), max(0.0, width - tw))
        y = min(max(0.0, y0), max(0.0, height - th))
        tries = [(x, y0 - th - 1), (x, y1 + 1), (x1 + 1, y), (x0 - tw - 1, y)]  # above, below, right, left
        fits = [(tx, ty) for tx, ty in tries if tx >= 0 and ty >= 0 and tx + tw <= width and ty + th <= height]
        places = fits or [(x, y)]  # no room outside: the box's top
        others = [r for j, r in enumerate(rects) if j != i]
        tx, ty = min(places, key=lambda p: _cost((p[0], p[1], p[0] + tw, p[1] + th), taken, others, places.index(p)))
        taken.append((tx, ty, tx + tw, ty + th))
        draw.rectangle(taken[-1], fill=tuple(colours[i]))
        draw.text((tx + 3 - left, ty + 2 - top), texts[i], fill="black", font=face)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)


def detection_picture(
    image: torch.Tensor,
    detections: Dict[str, torch.Tensor],
    class_names: Optional[Sequence[str]] = None,
    score_thresh: float = 0.5,
) -> np.ndarray:
    """What `inceptionnext detect` writes for an image: the detections drawn on it (a small image enlarged by whole
    pixels, towards 512 px), labels outside the boxes, and a legend of the classes found with their counts."""
    upscale = enlargement(*image.shape[-2:])
    drawn = draw_detections(image, detections, class_names, score_thresh, upscale=upscale)
    found = [int(v) for v, s in zip(detections["labels"], detections["scores"]) if s >= score_thresh]
    legend = [
        (f"{excerpt(label_text(c, class_names), 40)} ({found.count(c)})", PALETTE[c % len(PALETTE)])
        for c in sorted(set(found), key=lambda c: (-found.count(c), c))
    ]
    title = f"{len(found)} detection{'s' if len(found) != 1 else ''} scoring >= {score_thresh:g}" + (
        ":" if found else ""
    )
    return with_legend(drawn.permute(1, 2, 0).numpy(), legend, title)


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
