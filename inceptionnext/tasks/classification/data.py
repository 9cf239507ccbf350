"""Datasets and loaders: timm's ImageFolder reader, transforms and loader, plus the built-in digits dataset.

Two additions over plain timm: unreadable images are either an error naming the file or skipped and counted
(timm alone retries silently and then fails with no path), and a data directory that is missing, empty or lacks
its train/val folders is an error that says which folder it looked for.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from timm.data import FastCollateMixup, Mixup, create_loader, create_transform
from timm.data.transforms import CenterCropOrPad, ResizeKeepRatio
from torchvision import transforms

from ...data.digits import DigitsDataset
from ...data.folders import DataError, _split_dir, class_to_idx, image_folder
from ...utils.workers import capped_workers
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
        num_workers=capped_workers(cfg.workers),
        distributed=distributed,
        collate_fn=collate_mixup,
        pin_memory=cfg.pin_memory and device.type == "cuda",
        device=device,
        use_prefetcher=device.type == "cuda",
        persistent_workers=False,
    )
    fix_posterize(dataset.transform)  # create_loader set it; workers start later, with the fixed ops
    whole = whole_image_step(cfg.crop_mode, data_cfg)
    if whole is not None:  # the whole image becomes a square first; the random crop then keeps most of it
        dataset.transform = transforms.Compose([whole, dataset.transform])
    if cfg.class_balance == "sampler":
        loader = _with_balanced_sampler(loader, dataset, distributed)
    return loader


def whole_image_step(crop_mode: Optional[str], data_cfg: Dict[str, Any]):
    """The training transform's first step for a whole-image crop mode: squash (resize to a square) or border
    (resize the longer side, pad with the mean colour, as timm's evaluation does); None for center (timm's
    random resized crop on the image as it is)."""
    size = data_cfg["input_size"][1:]
    if crop_mode == "squash":
        return transforms.Resize(tuple(size), interpolation=transforms.InterpolationMode.BICUBIC)
    if crop_mode == "border":
        fill = tuple(round(255 * m) for m in data_cfg["mean"])
        return transforms.Compose([ResizeKeepRatio(tuple(size), longest=1), CenterCropOrPad(tuple(size), fill=fill)])
    return None


def dataset_targets(dataset) -> List[int]:
    """The class index of every sample (timm's ImageFolder reader, or a dataset's ``targets``), read without
    decoding an image."""
    samples = getattr(getattr(dataset, "reader", None), "samples", None)
    if samples is not None:
        return [int(s[1]) for s in samples]
    if hasattr(dataset, "targets"):
        return [int(t) for t in dataset.targets]
    raise DataError(f"cannot read the classes of {type(dataset).__name__} to balance them (class_balance)")


def class_counts(dataset, num_classes: int) -> np.ndarray:
    return np.bincount(dataset_targets(dataset), minlength=num_classes)


def balanced_loss_weights(dataset, num_classes: int) -> torch.Tensor:
    """scikit-learn's "balanced" class weights, n_samples / (n_classes x count), for the classes present."""
    from sklearn.utils.class_weight import compute_class_weight  # here: importing scikit-learn takes a second

    targets = np.asarray(dataset_targets(dataset))
    present = np.unique(targets)
    weights = np.ones(num_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=targets)
    return torch.tensor(weights, dtype=torch.float32)


def _with_balanced_sampler(loader, dataset, distributed: bool):
    """The same loader drawing every class equally often: each sample is drawn with probability proportional
    to 1 / its class's size, with replacement, as many draws per epoch as the set has images. The draws come
    from the main RNG, which checkpoints save, so a resumed run draws as an uninterrupted one."""
    if distributed:
        raise DataError(
            "class_balance: sampler draws from the whole training set in one process; under torchrun use "
            "class_balance: loss"
        )
    targets = dataset_targets(dataset)
    counts = np.bincount(targets)
    weights = torch.tensor([1.0 / counts[t] for t in targets], dtype=torch.float64)
    inner = getattr(loader, "loader", loader)  # timm's CUDA prefetcher wraps the DataLoader
    balanced = torch.utils.data.DataLoader(
        dataset,
        batch_size=inner.batch_size,
        sampler=torch.utils.data.WeightedRandomSampler(weights, num_samples=len(targets), replacement=True),
        num_workers=inner.num_workers,
        collate_fn=inner.collate_fn,
        pin_memory=inner.pin_memory,
        drop_last=inner.drop_last,
        worker_init_fn=inner.worker_init_fn,
        persistent_workers=False,
    )
    if inner is loader:
        return balanced
    loader.loader = balanced
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
        num_workers=capped_workers(workers),
        pin_memory=device.type == "cuda",
        drop_last=False,
    )
