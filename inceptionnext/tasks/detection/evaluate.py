"""COCO mAP (boxes, and masks for Mask R-CNN) from torchmetrics, which runs the COCO evaluator itself
(faster-coco-eval when installed, else pycocotools) and gathers predictions across DDP ranks."""

from __future__ import annotations

import importlib.util
from typing import Any, Dict, Sequence

import torch

from ...models.detection import MASK_THRESHOLD


def coco_backend() -> str:
    return "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"


class DetectionMAP:
    """Accumulate (predictions, targets) batches; `compute()` gives map, map_50, map_75, map_small/medium/large,
    mar_100, and the same with a `segm_` prefix when masks are evaluated."""

    def __init__(self, masks: bool = False, backend: str = "auto", sync: bool = True):
        try:  # an optional package: training and evaluating detectors need it, `inceptionnext detect` does not
            from torchmetrics.detection import MeanAveragePrecision
        except ImportError as e:  # pragma: no cover
            raise ImportError(
                "COCO mAP comes from torchmetrics with pycocotools: pip install 'inceptionnext[detection]'"
            ) from e
        self.masks = masks
        iou_type = ("bbox", "segm") if masks else ("bbox",)
        self.metric = MeanAveragePrecision(
            box_format="xyxy",
            iou_type=iou_type,
            backend=coco_backend() if backend == "auto" else backend,
            sync_on_compute=sync,
        )

    def update(self, predictions: Sequence[Dict[str, torch.Tensor]], targets: Sequence[Dict[str, Any]]) -> None:
        preds, gts = [], []
        for p, t in zip(predictions, targets):
            pred = dict(
                boxes=p["boxes"].detach().float().cpu(),
                scores=p["scores"].detach().float().cpu(),
                labels=p["labels"].detach().cpu(),
            )
            gt = dict(boxes=torch.as_tensor(t["boxes"]).float().cpu(), labels=torch.as_tensor(t["labels"]).cpu())
            if "iscrowd" in t:
                gt["iscrowd"] = torch.as_tensor(t["iscrowd"]).cpu()
            if self.masks:
                masks = p["masks"].detach().cpu()
                pred["masks"] = (masks[:, 0] if masks.dim() == 4 else masks) > MASK_THRESHOLD
                gt["masks"] = torch.as_tensor(t["masks"]).bool().cpu()
            preds.append(pred)
            gts.append(gt)
        self.metric.update(preds, gts)

    def compute(self) -> Dict[str, float]:
        raw = self.metric.compute()  # with masks, pycocotools names bbox results bare, faster-coco-eval 'bbox_*'
        return {
            k[len("bbox_") :] if k.startswith("bbox_") else k: float(v)
            for k, v in raw.items()
            if torch.is_tensor(v) and v.numel() == 1 and k != "classes" and "per_class" not in k
        }

    def reset(self) -> None:
        self.metric.reset()
