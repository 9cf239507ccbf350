"""Image classification: ImageFolder or the built-in digits, timm's augmentation and mixup, top-1/top-5."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.nn as nn
from timm.data import resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from ...data.folders import class_to_idx
from ...models.model_api import check_img_size
from ...train.engine import TrainError, create_training_model
from ...train.logs import CLASSIFICATION_METRICS, COLUMNS
from ...train.task import Task, register_task
from ...utils.files import write_atomically
from .config import SETTINGS
from .data import balanced_loss_weights, build_datasets, build_eval_loader, build_mixup, build_train_loader
from .draw import prediction_grid, to_display
from .evaluate import evaluate_with_report
from .examples import candidate_pool, dataset_targets, mistakes_first
from .per_class_plots import draw_mistakes, plot_per_class


@register_task
class ClassificationTask(Task):
    """Image classification with timm's data pipeline, losses and metrics (top-1 picks the best checkpoint).

    Args:
        cfg: the run's `ClassificationConfig`.
        env: the process's distributed environment.
    """

    name = "classification"
    settings = SETTINGS
    log_columns = COLUMNS
    plot_metrics = CLASSIFICATION_METRICS

    def build_datasets(self):
        return build_datasets(self.cfg)

    def build_model(self, num_classes: int) -> nn.Module:
        cfg = self.cfg
        model = create_training_model(
            cfg.model,
            num_classes,
            pretrained=cfg.pretrained,
            weights=cfg.weights,
            drop_path_rate=cfg.drop_path,
            drop_rate=cfg.drop,
        )
        try:
            check_img_size(model, cfg.img_size, "img_size")
        except ValueError as e:
            raise TrainError(str(e)) from None
        return model

    def data_config(self, model: nn.Module) -> Dict[str, Any]:
        cfg = self.cfg
        return resolve_data_config(
            {
                "img_size": cfg.img_size or (32 if cfg.dataset == "digits" else None),
                "crop_pct": cfg.crop_pct,
                "interpolation": cfg.interpolation,
                "mean": cfg.mean,
                "std": cfg.std,
                "crop_mode": cfg.crop_mode,
            },
            model=model,
        )

    def build_loaders(self, train_set, val_set, data_cfg, num_classes, round_sampler):
        cfg, env = self.cfg, self.env
        prefetch = self.device.type == "cuda"
        self.mixup_fn = build_mixup(cfg, num_classes, collate=False) if not prefetch else None
        collate = build_mixup(cfg, num_classes, collate=True) if prefetch else None
        self.mixing = cfg.mixup > 0 or cfg.cutmix > 0
        train_loader = build_train_loader(train_set, cfg, data_cfg, self.device, env.distributed, collate_mixup=collate)
        val_loader = build_eval_loader(
            val_set, data_cfg, cfg.batch_size, cfg.workers, self.device, env.rank, env.world_size
        )
        self.val_set, self.data_cfg = val_set, data_cfg
        if cfg.class_balance == "loss":
            if self.mixing:
                raise TrainError(
                    "class_balance: loss weighs hard labels, and mixup/cutmix mix them; use class_balance: "
                    "sampler, or set mixup and cutmix to 0"
                )
            weights = balanced_loss_weights(train_set, num_classes).to(self.device)
            self.criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.smoothing)
        elif self.mixing:
            self.criterion = SoftTargetCrossEntropy()
        elif cfg.smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()
        return train_loader, val_loader

    def train_loss(self, model, batch):
        x, y = batch
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)  # no-op after prefetch
        if self.mixup_fn is not None:
            x, y = self.mixup_fn(x, y)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.criterion(model(x), y), x.shape[0]

    def evaluate(self, model, loader, desc="val"):
        cfg = self.cfg
        metrics, report = evaluate_with_report(
            model, loader, self.device, self.env, cfg.amp, cfg.channels_last, cfg.progress, desc=desc
        )
        if not hasattr(self, "reports"):
            self.reports = {}
        self.reports[id(model)] = report  # for after_validation: the per-class results of the weights that scored best
        return metrics

    def describe(self, row):
        text = f"val loss {row['val_loss']:.4f} | top-1 {row['val_top1']:.2f} | top-5 {row['val_top5']:.2f}"
        return text + (f" | macro F1 {row['val_macro_f1']:.2f}" if row.get("val_macro_f1") is not None else "")

    def checkpoint_record(self, data_cfg, train_set):
        return {"data_config": dict(data_cfg), "class_to_idx": class_to_idx(train_set)}

    PICTURE = "val_predictions.png"
    SHOWN = 16  # images in the picture
    POOL = 48  # val images it chooses them from, across the classes

    def after_validation(self, model, out_dir, epoch):
        """On a best epoch, with the weights model_best.pth holds: val_predictions.png and the per-class files
        (per_class.json; its pictures when the run draws pictures)."""
        if self.cfg.plot:
            self._draw_predictions(model, out_dir, epoch)
        self._write_per_class(model, out_dir, epoch)

    @torch.no_grad()
    def _draw_predictions(self, model, out_dir, epoch):
        """val_predictions.png: 16 val images across the classes, mistakes first, with the predictions of `model`."""
        targets = dataset_targets(self.val_set)
        pool = candidate_pool(targets, len(self.val_set), self.POOL)
        if not pool:
            return
        images, labels = zip(*(self.val_set[i] for i in pool))
        labels = [int(t) for t in labels]
        was_training = model.training
        model.eval()
        predictions = []
        for start in range(0, len(pool), self.cfg.batch_size):
            x = torch.stack(images[start : start + self.cfg.batch_size]).to(self.device)
            predictions += model(x).argmax(1).tolist()
        model.train(was_training)
        shown = mistakes_first(pool, labels, predictions, self.SHOWN)
        mapping = class_to_idx(self.val_set)
        names = (
            [n for n, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
            if mapping
            else [str(i) for i in range(max(max(labels), max(predictions)) + 1)]
        )
        wrong = sum(p != t for p, t in zip(predictions, labels))
        prediction_grid(
            to_display(torch.stack([images[p] for p in shown]), self.data_cfg["mean"], self.data_cfg["std"]),
            [labels[p] for p in shown],
            [predictions[p] for p in shown],
            names,
            f"model_best.pth (epoch {epoch}) on {len(pool)} val images across {len({*labels})} classes, "
            f"{wrong} wrong; mistakes first",
            os.path.join(out_dir, self.PICTURE),
        )

    def extra_outputs(self, out_dir):
        files = {"predictions": self.PICTURE, **{label: name for label, name in self.PER_CLASS_FILES.items()}}
        found = {label: os.path.join(out_dir, name) for label, name in files.items()}
        return {label: path for label, path in found.items() if os.path.exists(path)}

    # per-class results of the best weights, rewritten whenever an epoch scores best
    PER_CLASS_FILES = {"per-class": "per_class.json", "confusion": "confusion_matrix.png", "mistakes": "mistakes.png"}

    def _write_per_class(self, model, out_dir, epoch):
        """per_class.json, confusion_matrix.png and mistakes.png of the weights that scored this best epoch."""
        report = getattr(self, "reports", {}).get(id(model))
        if not report:
            return
        report = dict(report, epoch=epoch)
        names = self.PER_CLASS_FILES
        write_atomically(
            os.path.join(out_dir, names["per-class"]),
            lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)),
        )
        if not self.cfg.plot:
            return
        title = f"{self.cfg.model}, best epoch {epoch}"
        plot_per_class(report, os.path.join(out_dir, names["confusion"]), title)
        draw_mistakes(report, self.val_set, self.data_cfg, os.path.join(out_dir, names["mistakes"]), title)

    def run_summary(self, out_dir, best_checkpoint):
        """The worst class of the best epoch and the commands that use this run's checkpoint next."""
        lines = []
        path = os.path.join(out_dir, self.PER_CLASS_FILES["per-class"])
        if os.path.isfile(path):
            with open(path) as f:
                report = json.load(f)
            worst = report.get("worst_class")
            if worst:
                lines.append(
                    f"worst class: {worst['name']} (F1 {worst['f1']:.3f}, precision {worst['precision']:.3f}, "
                    f"recall {worst['recall']:.3f}, {worst['support']} val images); all classes: {path}"
                )
        lines.append("next:")
        lines.extend("  " + command for command in next_commands(self.cfg, best_checkpoint, out_dir))
        return lines


def next_commands(cfg, best_checkpoint: str, out_dir: str) -> List[str]:
    """validate, predict, export and quantize commands filled in with this run's checkpoint and data."""
    if cfg.dataset == "digits":
        data, calib, images = "--dataset digits", "digits", "IMAGE.png"
    else:
        val = os.path.join(cfg.data_dir or "DATA", cfg.val_split)
        data, calib = f"--data-dir {val}", os.path.join(cfg.data_dir or "DATA", cfg.train_split)
        images = val
    w = f"--weights {best_checkpoint}"
    return [
        f"inceptionnext validate {w} {data} --plot {os.path.join(out_dir, 'val_per_class.png')}",
        f"inceptionnext predict {w} {images}",
        f"inceptionnext export {w} --output {os.path.join(out_dir, 'model.onnx')}",
        f"inceptionnext quantize {w} --calibration {calib} --output {os.path.join(out_dir, 'model_int8.xml')}",
    ]
