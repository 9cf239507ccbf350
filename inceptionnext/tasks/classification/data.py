"""Datasets and loaders: timm's ImageFolder reader, transforms and loader, plus the built-in digits dataset.

Two additions over plain timm: unreadable images are either an error naming the file or skipped and counted
(timm alone retries silently and then fails with no path), and a data directory that is missing, empty or lacks
its train/val folders is an error that says which folder it looked for.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Tuple

import torch
from timm.data import FastCollateMixup, Mixup, create_loader, create_transform

from ...data.digits import DigitsDataset
from ...data.folders import DataError, _split_dir, class_to_idx, image_folder
from .augment import fix_posterize

_logger = logging.getLogger(__name__)


def build_datasets(cfg) -> Tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, int]:
    """Train and validation datasets for the config, and the number of classes they hold."""
    if cfg.dataset == "digits":
        size = cfg.img_size or 32
        return DigitsDataset("train", size), DigitsDataset("val", size), DigitsDataset.num_classes
    train_dir = _split_dir(cfg.data_dir, cfg.train_split)
    train = image_folder(train_dir, cfg.bad_images)
    classes = class_to_idx(train)
    if len(classes) < 2:
        raise DataError(
            f"{train_dir} holds {len(classes)} class folder ({', '.join(classes)}); a classifier needs "
            "at least two (expected <train>/<class>/<image>, one folder per class)"
        )
    val = image_folder(
        _split_dir(cfg.data_dir, cfg.val_split),
        cfg.bad_images,
        class_map=classes,
        known_as=f"the training set ({train_dir})",
    )
    return train, val, len(classes)


def build_mixup(cfg, num_classes: int, collate: bool):
    """timm's mixup/cutmix with label smoothing folded into the soft targets, or None when both are off."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    cls = FastCollateMixup if collate else Mixup
    return cls(
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        prob=cfg.mixup_prob,
        switch_prob=cfg.mixup_switch_prob,
        mode=cfg.mixup_mode,
        label_smoothing=cfg.smoothing,
        num_classes=num_classes,
    )


def build_train_loader(
    dataset, cfg, data_cfg: Dict[str, Any], device: torch.device, distributed: bool, collate_mixup=None
):
    """timm's training loader: RandAugment, random erasing, RandomResizedCrop; the GPU prefetcher on CUDA.

    Workers are not persistent: each epoch's workers are seeded from the main RNG, which the checkpoint saves,
    so a resumed run draws the same augmentations as an uninterrupted one. Posterize is made safe for Pillow 13.
    """
    loader = create_loader(
        dataset,
        input_size=data_cfg["input_size"],
        batch_size=cfg.batch_size,
        is_training=True,
        re_prob=cfg.reprob,
        re_mode=cfg.remode,
        re_count=cfg.recount,
        scale=cfg.scale,
        ratio=cfg.ratio,
        hflip=cfg.hflip,
        color_jitter=cfg.color_jitter,
        auto_augment=cfg.aa,
        interpolation=cfg.train_interpolation,
        mean=data_cfg["mean"],
        std=data_cfg["std"],
        num_workers=min(cfg.workers, os.cpu_count() or 1),
        distributed=distributed,
        collate_fn=collate_mixup,
        pin_memory=cfg.pin_memory and device.type == "cuda",
        device=device,
        use_prefetcher=device.type == "cuda",
        persistent_workers=False,
    )
    fix_posterize(dataset.transform)  # create_loader set it; workers start later, with the fixed ops
    return loader


def build_eval_loader(
    dataset,
    data_cfg: Dict[str, Any],
    batch_size: int,
    workers: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
):
    """Deterministic eval transform (resize by crop_pct, centre crop) over this rank's share of the samples.

    Ranks take every world_size-th sample, with no padding, so summed counts cover each image exactly once.
    """
    dataset.transform = create_transform(
        data_cfg["input_size"],
        is_training=False,
        interpolation=data_cfg["interpolation"],
        mean=data_cfg["mean"],
        std=data_cfg["std"],
        crop_pct=data_cfg["crop_pct"],
        crop_mode=data_cfg.get("crop_mode"),
    )
    if world_size > 1:
        dataset = torch.utils.data.Subset(dataset, list(range(rank, len(dataset), world_size)))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=min(workers, os.cpu_count() or 1),
        pin_memory=device.type == "cuda",
        drop_last=False,
    )
