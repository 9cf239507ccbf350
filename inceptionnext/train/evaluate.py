"""Validation of a trained model: load any checkpoint the model library reads, preprocess the way the weights
expect, and report top-1/top-5 on an ImageFolder (or the built-in digits)."""
from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.data import resolve_data_config

from ..cpu_workers import capped_workers
from ..model_file import load_model
from ..models.model_api import check_img_size
from ..runtimes import is_runtime_file, load_runtime, wrap_torch
from ..weights import CheckpointError
from . import checkpoint as ckpt_lib
from .data import DigitsDataset, build_eval_loader, image_folder
from .distributed import resolve_device
from .engine import TrainError, create_model
from .tasks.classification import evaluate


def load_for_eval(model_name: Optional[str], checkpoint: Optional[str] = None, num_classes: Optional[int] = None,
                  use_ema: Optional[bool] = None, runtime: Optional[str] = None,
                  precision: Optional[str] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """The model with its weights (through `model_file.load_model`), and the class map its file records.

    This engine's checkpoints carry their class count, class map and preprocessing (which lands in the model's
    pretrained config); files written by `inceptionnext convert` rebuild themselves (folded ones included) and
    may carry class names; any other file (official .pth, timm/hub state dict, safetensors) has its class count
    read off its classifier. No checkpoint means the model's own pretrained weights. Of a checkpoint with model
    and EMA weights, the ones scored best in training, unless use_ema says which (`model_file.read_model_file`).
    An .onnx or OpenVINO .xml file (as the model or the checkpoint) runs on its runtime (`inceptionnext.runtimes`);
    weights run in PyTorch as `runtime`/`precision` ask (torch.compile, bf16).
    """
    file = checkpoint if checkpoint and is_runtime_file(checkpoint) else model_name
    if file and is_runtime_file(file):
        model = load_runtime(file, runtime, precision)
    elif checkpoint is None:
        if use_ema is not None:
            raise TrainError("use_ema needs a checkpoint that holds EMA weights")
        model = create_model(model_name, num_classes or 1000, pretrained=True)
        model.weights_note = f"the pretrained weights of {model_name}"
        return wrap_torch(model, runtime or "torch", precision or "fp32"), {}
    else:
        try:
            model = load_model(checkpoint, model_name, num_classes=num_classes, use_ema=use_ema)
        except CheckpointError as e:
            raise ckpt_lib.CheckpointError(str(e)) from e
        model = wrap_torch(model, runtime or "torch", precision or "fp32")
    names = model.pretrained_cfg.get("label_names")
    return model, ({"class_to_idx": {n: i for i, n in enumerate(names)}} if names else {})


def run_validation(model_name: Optional[str], checkpoint: Optional[str] = None, data_dir: Optional[str] = None,
                   dataset: str = "folder", num_classes: Optional[int] = None, use_ema: Optional[bool] = None,
                   batch_size: int = 128, workers: Optional[int] = None, amp: str = "none", channels_last: bool = False,
                   device: str = "auto", img_size: Optional[int] = None, crop_pct: Optional[float] = None,
                   interpolation: Optional[str] = None, mean=None, std=None, bad_images: str = "fail",
                   progress: bool = True, runtime: Optional[str] = None,
                   precision: Optional[str] = None) -> Dict[str, Any]:
    """Top-1/top-5/loss of a checkpoint; preprocessing from the checkpoint's own record, else the model's
    pretrained config, each overridable. model_name may be None for a file that records it."""
    dev = resolve_device(device)
    if amp == "fp16" and dev.type != "cuda":
        raise TrainError("amp: fp16 needs a CUDA device; use bf16 or none on the CPU")
    model, info = load_for_eval(model_name, checkpoint, num_classes, use_ema, runtime, precision)
    if not any(True for _ in model.parameters()):
        dev = torch.device("cpu")  # a file run by ONNX Runtime or OpenVINO takes CPU tensors
    else:
        try:
            check_img_size(model, img_size, "img_size")
        except ValueError as e:
            raise TrainError(str(e)) from None
    overrides = {"img_size": img_size, "crop_pct": crop_pct, "interpolation": interpolation, "mean": mean,
                 "std": std}
    data_cfg = resolve_data_config(overrides, model=model)
    if dataset == "digits":
        ds = DigitsDataset("val", data_cfg["input_size"][1])
    else:
        if not data_dir:
            raise TrainError("no data directory given: pass the folder that holds <class>/<image> (e.g. .../val)")
        ds = image_folder(data_dir, bad_images, class_map=info.get("class_to_idx"), known_as=str(checkpoint))
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = build_eval_loader(ds, data_cfg, batch_size, workers, dev)
    t0 = time.time()
    metrics = evaluate(model, loader, dev, amp=amp, channels_last=channels_last, progress=progress)
    metrics.update(time_s=round(time.time() - t0, 2), model=model.pretrained_cfg.get("architecture") or model_name,
                   checkpoint=checkpoint, weights=getattr(model, "weights_note", None),
                   runtime=getattr(model, "runtime", "torch"), precision=getattr(model, "precision", "fp32"),
                   data_config={k: data_cfg[k] for k in ("input_size", "interpolation", "crop_pct", "mean", "std")},
                   skipped_images=getattr(ds, "skipped", 0))
    return metrics


def seg_architecture(train_config: Dict[str, Any], model_name: str) -> Dict[str, Any]:
    """The build arguments a segmentation run's config changed from the registered model (head width, no
    auxiliary head), so its checkpoint rebuilds the model it was trained as."""
    kwargs = {}
    if train_config.get("head_channels"):
        kwargs["head_channels"] = int(train_config["head_channels"])
    if model_name.startswith("upernet_") and train_config.get("aux_weight", 0.4) <= 0:
        kwargs["aux_head"] = False
    return kwargs


def training_config(path: str) -> Dict[str, Any]:
    """The config a training checkpoint of this engine was run with; empty for any other weight file."""
    try:
        return dict(ckpt_lib.load_checkpoint_file(path).get("config") or {})
    except ckpt_lib.CheckpointError:
        return {}


def run_seg_validation(model_name: str, checkpoint: Optional[str] = None, data_dir: Optional[str] = None,
                       dataset: Optional[str] = None, num_classes: Optional[int] = None, use_ema: Optional[bool] = None,
                       batch_size: int = 8, workers: Optional[int] = None, amp: str = "none", device: str = "auto",
                       mode: Optional[str] = None, crop_size: Optional[int] = None, stride: Optional[int] = None,
                       scales=(1.0,), flip: bool = False, base_size=None, img_size: Optional[int] = None,
                       progress: bool = True) -> Dict[str, Any]:
    """mIoU, per-class IoU, mAcc and pixel accuracy of a segmentation checkpoint on its validation split.

    Settings left unset come from the checkpoint's training config (dataset, data_dir, crop, test resize), so a
    run's best checkpoint validates as the run did; multi-scale (scales) and flip are test-time choices.
    """
    from .config import TrainConfig, apply_overrides
    from .seg_data import EvalTransform, collate_pairs
    from .seg_eval import evaluate_segmentation
    from .tasks.segmentation import build_seg_datasets

    dev = resolve_device(device)
    if checkpoint is None:
        raise TrainError("segmentation validation needs --checkpoint (a trained segmentation model)")
    saved = training_config(checkpoint)  # empty for a converted file or a plain state dict
    cfg = apply_overrides(TrainConfig(), {k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__},
                          f"the config in {checkpoint}")
    given = {"dataset": dataset, "data_dir": data_dir, "num_classes": num_classes, "crop_size": crop_size,
             "test_mode": mode, "test_stride": stride, "base_size": base_size, "img_size": img_size}
    cfg = apply_overrides(cfg, {k: v for k, v in given.items() if v is not None}, "the validate options")
    if cfg.dataset not in ("ade20k", "masks", "digit_scenes"):
        raise TrainError("name the segmentation dataset: --dataset ade20k|masks|digit_scenes (and --data-dir)")
    try:
        model = load_model(checkpoint, model_name, use_ema=use_ema, **seg_architecture(saved, model_name))
    except CheckpointError as e:
        raise ckpt_lib.CheckpointError(str(e)) from e
    _, val_set, names = build_seg_datasets(cfg)
    if model.num_classes != len(names):
        raise TrainError(f"{checkpoint} predicts {model.num_classes} classes, the {cfg.dataset} data has "
                         f"{len(names)}")
    data_cfg = model.pretrained_cfg
    val_set.transform = EvalTransform(cfg.base_size, data_cfg["mean"], data_cfg["std"])
    loader = torch.utils.data.DataLoader(val_set, batch_size=batch_size, shuffle=False, collate_fn=collate_pairs,
                                         num_workers=capped_workers(workers))
    model.to(dev)
    t0 = time.time()
    metrics, per_class = evaluate_segmentation(
        model, loader, model.num_classes, dev, amp=amp, progress=progress, mode=cfg.test_mode, crop=cfg.crop_size,
        stride=cfg.test_stride, scales=tuple(scales), flip=flip)
    metrics.update(time_s=round(time.time() - t0, 2), model=model_name, checkpoint=checkpoint,
                   per_class_iou={n: (None if v != v else float(v)) for n, v in zip(names, per_class)},
                   class_names=list(names), test=dict(mode=cfg.test_mode, crop=cfg.crop_size, stride=cfg.test_stride,
                                                      scales=list(scales), flip=flip, base_size=cfg.base_size))
    return metrics
