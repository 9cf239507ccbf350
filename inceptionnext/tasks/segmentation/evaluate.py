"""Segmentation evaluation: whole, sliding-window and multi-scale + flip inference, and mIoU from dataset-level
intersection and union sums (a confusion matrix over every labelled pixel; 255 ignored), as mmsegmentation does.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ...model_file import load_model
from ...models.segmentation import IGNORE_INDEX
from ...train import distributed as dist_lib
from ...train.checkpoint import training_config
from ...train.engine import TrainError, autocast_for
from ...train.overrides import apply_overrides
from ...utils.device import resolve_device
from ...utils.workers import capped_workers
from .config import SegmentationConfig
from .data import EvalTransform, build_seg_datasets, collate_pairs


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = truth, columns = prediction, ignored pixels left out."""
    keep = target != ignore_index
    idx = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_metrics(conf: torch.Tensor) -> Tuple[Dict[str, float], np.ndarray]:
    """mIoU, mean class accuracy and pixel accuracy (all %) from summed counts, and the per-class IoU (%, NaN for
    a class absent from both truth and prediction, left out of the mean as mmsegmentation does)."""
    conf = conf.double().cpu()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    per_class = (inter / union).numpy() * 100  # 0/0 -> nan
    class_acc = (inter / conf.sum(1)).numpy() * 100
    total = conf.sum().item()
    with np.errstate(invalid="ignore"):
        metrics = {
            "miou": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else 0.0,
            "macc": float(np.nanmean(class_acc)) if np.isfinite(class_acc).any() else 0.0,
            "acc": 100.0 * inter.sum().item() / total if total else 0.0,
        }
    return metrics, per_class


def slide_logits(model: nn.Module, x: torch.Tensor, crop: int, stride: int, num_classes: int) -> torch.Tensor:
    """mmsegmentation's sliding window: crop x crop windows every stride pixels (the last flush with the border),
    logits averaged where windows overlap. An image no larger than one crop is one window."""
    n, _, h, w = x.shape
    rows = max(h - crop + stride - 1, 0) // stride + 1
    cols = max(w - crop + stride - 1, 0) // stride + 1
    out = x.new_zeros((n, num_classes, h, w))
    count = x.new_zeros((1, 1, h, w))
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, h), min(c * stride + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            out[:, :, y1:y2, x1:x2] += model(x[:, :, y1:y2, x1:x2]).float()
            count[:, :, y1:y2, x1:x2] += 1
    return out / count


def predict_logits(
    model: nn.Module,
    x: torch.Tensor,
    num_classes: int,
    mode: str = "whole",
    crop: int = 512,
    stride: Optional[int] = None,
) -> torch.Tensor:
    """Logits at x's resolution, from the whole image or from sliding windows."""
    if mode == "whole":
        return model(x).float()
    if mode == "slide":
        return slide_logits(model, x, crop, stride or (2 * crop + 2) // 3, num_classes)
    raise ValueError(f"test mode must be 'whole' or 'slide', not {mode!r}")


def predict_probs(
    model: nn.Module,
    x: torch.Tensor,
    num_classes: int,
    mode: str = "whole",
    crop: int = 512,
    stride: Optional[int] = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    size: Optional[Tuple[int, int]] = None,
) -> torch.Tensor:
    """Class probabilities at `size` (default x's), averaged over scales (x resized by each) and, with flip, over
    the horizontally flipped input too (mmsegmentation's test-time augmentation)."""
    size = tuple(size or x.shape[2:])
    total, n = None, 0
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            inp = xs.flip(-1) if flipped else xs
            logits = predict_logits(model, inp, num_classes, mode, crop, stride)
            if flipped:
                logits = logits.flip(-1)
            if tuple(logits.shape[2:]) != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            p = logits.softmax(1)
            total, n = (p if total is None else total + p), n + 1
    return total / n


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    loader,
    num_classes: int,
    device: torch.device,
    env: Optional[dist_lib.DistEnv] = None,
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "val",
    mode: str = "whole",
    crop: int = 512,
    stride: Optional[int] = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> Tuple[Dict[str, float], np.ndarray]:
    """(metrics, per-class IoU) over every rank's share: mIoU/mAcc/aAcc (%) from one summed confusion matrix, and
    the cross-entropy over labelled pixels (at the test resolution, from the averaged probabilities)."""

    env = env or dist_lib.DistEnv(device=device)
    was_training = model.training
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros(3, dtype=torch.float64, device=device)  # summed NLL, labelled pixels, images
    bar = tqdm(loader, desc=desc, disable=None if (progress and env.is_main) else True, leave=False, dynamic_ncols=True)
    for xs, ys in bar:
        pairs = zip(xs, ys) if isinstance(xs, list) else [(xs, ys)]
        for x, y in pairs:
            x, y = x.to(device), y.to(device)
            if x.dim() == 3:
                x, y = x[None], y[None]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(amp, device):
                probs = predict_probs(model, x, num_classes, mode, crop, stride, scales, flip, size=y.shape[-2:])
            conf += confusion_matrix(probs.argmax(1), y, num_classes)
            valid = y != IGNORE_INDEX
            nll = F.nll_loss(probs.clamp_min(1e-8).log(), y, ignore_index=IGNORE_INDEX, reduction="sum")
            loss_sum += torch.stack(
                [
                    nll.double(),
                    valid.sum().double(),
                    torch.tensor(float(x.shape[0]), dtype=torch.float64, device=device),
                ]
            )
    dist_lib.all_reduce_sum(conf, env)
    dist_lib.all_reduce_sum(loss_sum, env)
    model.train(was_training)
    if conf.sum() == 0:
        raise TrainError("the validation set has no labelled pixels")
    metrics, per_class = iou_metrics(conf)
    metrics["loss"] = (loss_sum[0] / loss_sum[1]).item()
    metrics["count"] = int(loss_sum[2].item())
    return metrics, per_class


def format_table(per_class: np.ndarray, names: List[str], metrics: Dict[str, float]) -> str:
    """The per-class IoU table and the summary line, as `inceptionnext validate` prints it."""
    width = max([len(n) for n in names] + [5])
    lines = [f"{'class':<{width}}  IoU (%)"]
    for name, v in zip(names, per_class):
        lines.append(f"{name:<{width}}  {'  n/a' if np.isnan(v) else f'{v:6.2f}'}")
    lines.append(f"mIoU {metrics['miou']:.2f} | mAcc {metrics['macc']:.2f} | aAcc {metrics['acc']:.2f}")
    return "\n".join(lines)


def seg_architecture(train_config: Dict[str, Any], model_name: str) -> Dict[str, Any]:
    """The build arguments a segmentation run's config changed from the registered model (head width, no
    auxiliary head), so its checkpoint rebuilds the model it was trained as."""
    kwargs = {}
    if train_config.get("head_channels"):
        kwargs["head_channels"] = int(train_config["head_channels"])
    if model_name.startswith("upernet_") and train_config.get("aux_weight", 0.4) <= 0:
        kwargs["aux_head"] = False
    return kwargs


def run_seg_validation(
    model_name: str,
    checkpoint: Optional[str] = None,
    data_dir: Optional[str] = None,
    dataset: Optional[str] = None,
    num_classes: Optional[int] = None,
    use_ema: Optional[bool] = None,
    batch_size: int = 8,
    workers: Optional[int] = None,
    amp: str = "none",
    device: str = "auto",
    mode: Optional[str] = None,
    crop_size: Optional[int] = None,
    stride: Optional[int] = None,
    scales=(1.0,),
    flip: bool = False,
    base_size=None,
    img_size: Optional[int] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """mIoU, per-class IoU, mAcc and pixel accuracy of a segmentation checkpoint on its validation split.

    Settings left unset come from the checkpoint's training config (dataset, data_dir, crop, test resize), so a
    run's best checkpoint validates as the run did; multi-scale (scales) and flip are test-time choices.
    """

    dev = resolve_device(device)
    if checkpoint is None:
        raise TrainError("segmentation validation needs --checkpoint (a trained segmentation model)")
    saved = training_config(checkpoint)  # empty for a converted file or a plain state dict
    if saved.get("dataset") is None and dataset is None:
        raise TrainError("name the segmentation dataset: --dataset ade20k|masks|digit_scenes (and --data-dir)")
    cfg = apply_overrides(
        SegmentationConfig(),
        {k: v for k, v in saved.items() if k in SegmentationConfig.__dataclass_fields__ and k != "task"},
        f"the config in {checkpoint}",
    )
    given = {
        "dataset": dataset,
        "data_dir": data_dir,
        "num_classes": num_classes,
        "crop_size": crop_size,
        "test_mode": mode,
        "test_stride": stride,
        "base_size": base_size,
        "img_size": img_size,
    }
    cfg = apply_overrides(cfg, {k: v for k, v in given.items() if v is not None}, "the validate options")
    model = load_model(checkpoint, model_name, use_ema=use_ema, **seg_architecture(saved, model_name))
    _, val_set, names = build_seg_datasets(cfg)
    if model.num_classes != len(names):
        raise TrainError(f"{checkpoint} predicts {model.num_classes} classes, the {cfg.dataset} data has {len(names)}")
    data_cfg = model.pretrained_cfg
    val_set.transform = EvalTransform(cfg.base_size, data_cfg["mean"], data_cfg["std"])
    loader = torch.utils.data.DataLoader(
        val_set, batch_size=batch_size, shuffle=False, collate_fn=collate_pairs, num_workers=capped_workers(workers)
    )
    model.to(dev)
    t0 = time.time()
    metrics, per_class = evaluate_segmentation(
        model,
        loader,
        model.num_classes,
        dev,
        amp=amp,
        progress=progress,
        mode=cfg.test_mode,
        crop=cfg.crop_size,
        stride=cfg.test_stride,
        scales=tuple(scales),
        flip=flip,
    )
    metrics.update(
        time_s=round(time.time() - t0, 2),
        model=model_name,
        checkpoint=checkpoint,
        per_class_iou={n: (None if v != v else float(v)) for n, v in zip(names, per_class)},
        class_names=list(names),
        test=dict(
            mode=cfg.test_mode,
            crop=cfg.crop_size,
            stride=cfg.test_stride,
            scales=list(scales),
            flip=flip,
            base_size=cfg.base_size,
        ),
    )
    return metrics
