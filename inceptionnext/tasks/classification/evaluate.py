"""Validation of a trained model: load any checkpoint the model library reads, preprocess the way the weights
expect, and report top-1/top-5 on an ImageFolder (or the built-in digits)."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.data import resolve_data_config
from tqdm import tqdm

from ...data.digits import DigitsDataset
from ...data.folders import class_to_idx, image_folder
from ...deploy.runtimes import is_runtime_file, load_runtime, wrap_torch
from ...model_file import load_model
from ...models.model_api import check_img_size
from ...train import distributed as dist_lib
from ...train.engine import TrainError, autocast_for, create_training_model
from ...utils.device import resolve_device
from .data import build_eval_loader
from .per_class import (
    MISTAKES_KEPT,
    MistakeCollector,
    class_names_for,
    confusion_counts,
    dataset_files,
    most_confident,
    per_class_report,
    sample_indices,
)
from .per_class_plots import draw_mistakes, plot_per_class


def load_for_eval(
    model_name: Optional[str],
    checkpoint: Optional[str] = None,
    num_classes: Optional[int] = None,
    use_ema: Optional[bool] = None,
    runtime: Optional[str] = None,
    precision: Optional[str] = None,
) -> Tuple[nn.Module, Dict[str, Any]]:
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
        model = create_training_model(model_name, num_classes or 1000, pretrained=True)
        model.weights_note = f"the pretrained weights of {model_name}"
        return wrap_torch(model, runtime or "torch", precision or "fp32"), {}
    else:
        model = load_model(checkpoint, model_name, num_classes=num_classes, use_ema=use_ema)
        model = wrap_torch(model, runtime or "torch", precision or "fp32")
    names = model.pretrained_cfg.get("label_names")
    return model, ({"class_to_idx": {n: i for i, n in enumerate(names)}} if names else {})


def run_validation(
    model_name: Optional[str],
    checkpoint: Optional[str] = None,
    data_dir: Optional[str] = None,
    dataset: str = "folder",
    num_classes: Optional[int] = None,
    use_ema: Optional[bool] = None,
    batch_size: int = 128,
    workers: Optional[int] = None,
    amp: str = "none",
    channels_last: bool = False,
    device: str = "auto",
    img_size: Optional[int] = None,
    crop_pct: Optional[float] = None,
    interpolation: Optional[str] = None,
    mean=None,
    std=None,
    bad_images: str = "fail",
    progress: bool = True,
    runtime: Optional[str] = None,
    precision: Optional[str] = None,
    plot: Optional[str] = None,
    mistakes_plot: Optional[str] = None,
) -> Dict[str, Any]:
    """Top-1/top-5/loss of a checkpoint, and the per-class results (precision, recall, F1, support, confusion
    matrix, most confident mistakes); preprocessing from the checkpoint's own record, else the model's
    pretrained config, each overridable. model_name may be None for a file that records it. `plot` and
    `mistakes_plot` are PNG paths for the per-class picture and the grid of mistakes."""
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
    overrides = {"img_size": img_size, "crop_pct": crop_pct, "interpolation": interpolation, "mean": mean, "std": std}
    data_cfg = resolve_data_config(overrides, model=model)
    if dataset == "digits":
        ds = DigitsDataset("val", data_cfg["input_size"][1])
    else:
        if not data_dir:
            raise TrainError("no data directory given: pass the folder that holds <class>/<image> (e.g. .../val)")
        ds = image_folder(data_dir, bad_images, class_map=info.get("class_to_idx"), known_as=str(checkpoint))
    if hasattr(model, "check_input"):  # a runtime file of fixed size: said before any image is read
        try:
            model.check_input((1, *data_cfg["input_size"]))
        except ValueError as e:
            raise TrainError(str(e)) from None
    labels = (
        DigitsDataset.num_classes
        if dataset == "digits"
        else max((int(i) for i in (class_to_idx(ds) or {}).values()), default=-1) + 1
    )
    predicts = int(getattr(model, "num_classes", 0) or 0)  # 0: a runtime file that does not record it
    if predicts and labels > predicts:
        source = checkpoint or model_name
        raise TrainError(
            f"{source}: the model predicts {predicts} classes, the dataset {data_dir or dataset} has "
            f"{labels}; validate on data of the model's classes"
        )
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = build_eval_loader(ds, data_cfg, batch_size, workers, dev)
    t0 = time.time()
    metrics, report = evaluate_with_report(model, loader, dev, amp=amp, channels_last=channels_last, progress=progress)
    metrics.update({k: report[k] for k in ("macro_avg", "weighted_avg", "worst_class", "confusion_matrix", "mistakes")})
    metrics["per_class"] = report["classes"]
    name = model.pretrained_cfg.get("architecture") or model_name
    if plot:
        plot_per_class(report, plot, f"{name} on {data_dir or dataset}")
    if mistakes_plot:
        draw_mistakes(report, ds, data_cfg, mistakes_plot, f"{name} on {data_dir or dataset}")
    metrics.update(
        time_s=round(time.time() - t0, 2),
        model=model.pretrained_cfg.get("architecture") or model_name,
        checkpoint=checkpoint,
        weights=getattr(model, "weights_note", None),
        runtime=getattr(model, "runtime", "torch"),
        precision=getattr(model, "precision", "fp32"),
        data_config={
            k: data_cfg.get(k) for k in ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
        },
        skipped_images=getattr(ds, "skipped", 0),
    )
    return metrics


def evaluate(model: nn.Module, loader, device: torch.device, *args, **kwargs) -> Dict[str, float]:
    """Top-1, top-5 (top-k capped at the class count), macro F1 and cross-entropy, summed over all ranks' shares
    (`evaluate_with_report`'s arguments, without its per-class report)."""
    return evaluate_with_report(model, loader, device, *args, **kwargs)[0]


@torch.no_grad()
def evaluate_with_report(
    model: nn.Module,
    loader,
    device: torch.device,
    env: Optional[dist_lib.DistEnv] = None,
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "val",
) -> Tuple[Dict[str, float], Dict[str, Any]]:
    """`evaluate`'s metrics (macro F1 added), and the per-class report (`per_class.per_class_report`): the
    confusion matrix summed over all ranks, the most confident mistakes gathered from them."""
    env = env or dist_lib.DistEnv(device=device)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct@1, correct@5, count
    dataset, indices = sample_indices(loader)
    confusion, mistakes, seen = None, MistakeCollector(), 0
    bar = tqdm(
        loader, desc=desc, disable=None if (progress and env.is_main) else True, leave=False, dynamic_ncols=True
    )  # None: shown on a terminal, silent in logs
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(amp, device):
            logits = model(x)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(y[:, None])
        sums += torch.stack(
            [
                nn.functional.cross_entropy(logits, y, reduction="sum").double(),
                hit[:, :1].sum().double(),
                hit.sum().double(),
                torch.tensor(float(y.numel()), dtype=torch.float64, device=device),
            ]
        )
        if confusion is None:
            confusion = torch.zeros(logits.shape[1], logits.shape[1], dtype=torch.float64, device=device)
        confusion += confusion_counts(y, top[:, 0], logits.shape[1]).to(confusion.dtype)
        positions = range(seen, seen + y.numel())
        mistakes.add(
            [indices[p] for p in positions] if indices is not None else positions, y.cpu(), logits.softmax(1).cpu()
        )
        seen += y.numel()
    dist_lib.all_reduce_sum(sums, env)
    model.train(was_training)
    loss, c1, c5, n = sums.tolist()
    if n == 0:
        raise TrainError("the validation set is empty")
    classes = int(getattr(model, "num_classes", 0) or 0) or (confusion.shape[0] if confusion is not None else 1)
    if confusion is None:  # this rank had no share of the samples
        confusion = torch.zeros(classes, classes, dtype=torch.float64, device=device)
    dist_lib.all_reduce_sum(confusion, env)
    gathered = dist_lib.gather_objects(mistakes.mistakes, env)
    report = per_class_report(
        confusion.round().long().cpu().numpy(),
        class_names_for(class_to_idx(dataset), confusion.shape[0]),
        most_confident([m for part in gathered for m in part], MISTAKES_KEPT),
        dataset_files(dataset),
    )
    metrics = {
        "loss": loss / n,
        "top1": 100.0 * c1 / n,
        "top5": 100.0 * c5 / n,
        "macro_f1": 100.0 * report["macro_avg"]["f1"],
        "count": int(n),
    }
    return metrics, report
