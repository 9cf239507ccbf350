"""Run a trained detector on image files: rebuild it from its checkpoint's record, detect, draw, describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ...data.images import MAX_DENSE_PIXELS, check_image, load_image, output_names, refuse_existing
from ...models.detection import create_detector
from ...utils.files import write_atomically
from ...weights import CheckpointError, read_weight_file, unwrap_state_dict
from .draw import detection_picture, label_text


def load_detector(path: str, use_ema: bool = False) -> Tuple[nn.Module, List[str]]:
    """The eval-mode detector a detection training checkpoint describes, and its class names."""
    obj, _ = read_weight_file(path)
    record = obj.get("detector") if isinstance(obj, dict) else None
    if not record:
        raise CheckpointError(
            f"{path}: not a detection checkpoint (it has no 'detector' record); train one with "
            "`inceptionnext train` and task: detection"
        )
    key = "state_dict_ema" if use_ema else "state_dict"
    if obj.get(key) is None:
        raise CheckpointError(f"{path}: holds no {'EMA ' if use_ema else ''}weights")
    kwargs = dict(record.get("kwargs") or {})
    if isinstance(kwargs.get("min_size"), list):
        kwargs["min_size"] = tuple(kwargs["min_size"])
    model = create_detector(
        record["name"],
        int(record["num_classes"]),
        fpn_channels=int(record["fpn_channels"]),
        anchor_sizes=record.get("anchor_sizes"),
        **kwargs,
    )
    model.load_state_dict(unwrap_state_dict(obj[key], path))
    names = list(obj.get("class_names") or [str(i + 1) for i in range(int(record["num_classes"]))])
    return model.eval(), names


def describe(det: Dict[str, torch.Tensor], class_names: Sequence[str], score_thresh: float) -> List[Dict[str, Any]]:
    out = []
    for i in torch.nonzero(det["scores"] >= score_thresh).flatten().tolist():
        item = dict(
            label=int(det["labels"][i]),
            name=label_text(int(det["labels"][i]), class_names),
            score=round(float(det["scores"][i]), 4),
            box=[round(float(v), 1) for v in det["boxes"][i]],
        )
        if "masks" in det:
            item["mask_pixels"] = int((det["masks"][i] > 0.5).sum())
        out.append(item)
    return out


@torch.no_grad()
def detect_files(
    model: nn.Module,
    paths: Sequence,
    class_names: Sequence[str],
    device: torch.device,
    score_thresh: float = 0.5,
    out_dir: Optional[str] = None,
    overwrite: bool = False,
) -> List[Dict[str, Any]]:
    """Detections for each image file; with out_dir, a <name>_detections.png per image showing them, a folder's
    images keeping their place below it (`inference.output_names`). Existing pictures are not written over
    unless `overwrite`."""
    files = output_names(paths)
    for f, _ in files:  # every file checked before the first one is run, its size from its header
        check_image(f, MAX_DENSE_PIXELS)
        load_image(f).close()
    targets = [Path(out_dir) / f"{name}_detections.png" for _, name in files] if out_dir is not None else []
    refuse_existing(targets, overwrite)
    model = model.to(device).eval()
    results = []
    for i, (f, _) in enumerate(files):
        image = torch.from_numpy(np.array(load_image(f))).permute(2, 0, 1).contiguous()
        det = {k: v.cpu() for k, v in model([image.to(device).float() / 255])[0].items()}
        entry = dict(file=str(f), detections=describe(det, class_names, score_thresh))
        if out_dir is not None:
            drawn = detection_picture(image, det, class_names, score_thresh)
            target = targets[i]
            write_atomically(  # never over a picture another run wrote since the check above
                target, lambda tmp: Image.fromarray(drawn).save(tmp, format="PNG"), exclusive=not overwrite
            )
            entry["picture"] = str(target)
        results.append(entry)
    return results


__all__ = ["load_detector", "detect_files", "describe"]
