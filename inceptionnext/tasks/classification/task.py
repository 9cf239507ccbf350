"""Image classification: ImageFolder or the built-in digits, timm's augmentation and mixup, top-1/top-5."""

from __future__ import annotations

import os
from typing import Any, Dict

import torch
import torch.nn as nn
from timm.data import resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from ...data.folders import class_to_idx
from ...models.model_api import check_img_size
from ...train.engine import TrainError, create_training_model
from ...train.logs import CLASSIFICATION_METRICS, COLUMNS
from ...train.task import Task, register_task
from .config import SETTINGS
from .data import build_datasets, build_eval_loader, build_mixup, build_train_loader
from .draw import prediction_grid, to_display
from .evaluate import evaluate


@register_task
class ClassificationTask(Task):
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
        if self.mixing:
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
        return evaluate(model, loader, self.device, self.env, cfg.amp, cfg.channels_last, cfg.progress, desc=desc)

    def describe(self, row):
        return f"val loss {row['val_loss']:.4f} | top-1 {row['val_top1']:.2f} | top-5 {row['val_top5']:.2f}"

    def checkpoint_record(self, data_cfg, train_set):
        return {"data_config": dict(data_cfg), "class_to_idx": class_to_idx(train_set)}

    PICTURE = "val_predictions.png"

    @torch.no_grad()
    def after_validation(self, model, out_dir, epoch):
        """The first 16 validation images with the model's predictions, rewritten after every validation."""
        n = min(16, len(self.val_set))
        if n == 0:
            return
        images, targets = zip(*(self.val_set[i] for i in range(n)))
        x = torch.stack(images).to(self.device)
        was_training = model.training
        model.eval()
        predictions = model(x).argmax(1).tolist()
        model.train(was_training)
        mapping = class_to_idx(self.val_set)
        names = (
            [n for n, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
            if mapping
            else [str(i) for i in range(max(max(targets), max(predictions)) + 1)]
        )
        prediction_grid(
            to_display(x, self.data_cfg["mean"], self.data_cfg["std"]),
            [int(t) for t in targets],
            predictions,
            names,
            f"Validation after epoch {epoch}",
            os.path.join(out_dir, self.PICTURE),
        )

    def extra_outputs(self, out_dir):
        path = os.path.join(out_dir, self.PICTURE)
        return {"predictions": path} if os.path.exists(path) else {}
