"""Datasets and loaders: timm's ImageFolder reader, transforms and loader, plus the built-in digits dataset.

Two additions over plain timm: unreadable images are either an error naming the file or skipped and counted
(timm alone retries silently and then fails with no path), and a data directory that is missing, empty or lacks
its train/val folders is an error that says which folder it looked for.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from timm.data import ImageDataset, Mixup, FastCollateMixup, create_loader, create_transform

from ..cpu_workers import capped_workers
from .augment import fix_posterize

_logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class DataError(RuntimeError):
    """The data cannot be used: a missing or empty folder, or an image that cannot be read."""


def digits_split(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (values 0-16) and labels of one split of DigitsDataset's fixed split, so every
    dataset built from the digits (classification, detection, segmentation) keeps val digits out of training."""
    if split not in ("train", "val"):
        raise DataError(f"digits dataset has splits 'train' and 'val', not {split!r}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, targets = digits.images, digits.target
    rng = np.random.RandomState(DigitsDataset.SPLIT_SEED)
    val_idx = []
    for c in range(DigitsDataset.num_classes):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        val_idx.extend(idx[: int(round(len(idx) * DigitsDataset.VAL_FRACTION))].tolist())
    val_mask = np.zeros(len(targets), dtype=bool)
    val_mask[val_idx] = True
    keep = np.flatnonzero(val_mask if split == "val" else ~val_mask)
    return images[keep], targets[keep]


class DigitsDataset(torch.utils.data.Dataset):
    """scikit-learn's handwritten digits (1,797 8x8 grey images, 10 classes), shipped inside scikit-learn.

    A fixed split (seeded, stratified, 20% validation) so every run and every machine sees the same
    validation set; images are upsampled once to ``img_size`` and given 3 channels so timm's transforms apply.
    """

    SPLIT_SEED = 0
    VAL_FRACTION = 0.2
    num_classes = 10

    def __init__(self, split: str = "train", img_size: int = 32, transform=None):
        images, targets = digits_split(split)
        self.targets = [int(t) for t in targets]
        self.images = [self._to_pil(img, img_size) for img in images]
        self.transform = transform

    @staticmethod
    def _to_pil(img8: np.ndarray, size: int) -> Image.Image:
        grey = Image.fromarray(np.clip(img8 * (255.0 / 16.0), 0, 255).astype(np.uint8), mode="L")
        return grey.resize((size, size), Image.BICUBIC).convert("RGB")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img = self.images[index]
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]


class CheckedImageFolder(ImageDataset):
    """timm's ImageFolder dataset with an explicit policy for images that cannot be decoded.

    ``on_error="fail"`` raises a DataError with the file's path; ``"skip"`` serves the next readable image in
    its place, logs each bad file once and counts it in ``skipped`` (shared with loader worker processes).
    """

    MAX_CONSECUTIVE = 50

    def __init__(self, root: str, on_error: str = "fail", **kwargs):
        super().__init__(root, reader="", **kwargs)
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
        self.on_error = on_error
        self._skipped = multiprocessing.Value("i", 0)
        self._reported = set()

    @property
    def skipped(self) -> int:
        """Number of unreadable images met so far (every epoch counts again)."""
        return self._skipped.value

    def reset_skipped(self) -> None:
        with self._skipped.get_lock():
            self._skipped.value = 0

    def _load(self, index: int):
        src, target = self.reader[index][:2]
        try:
            img = Image.open(src)
            img.load()  # decode now, so a truncated or corrupt file fails here and not inside a transform
            return img.convert(self.input_img_mode or "RGB"), target
        finally:
            if hasattr(src, "close"):
                src.close()

    def __getitem__(self, index: int):
        for _ in range(min(self.MAX_CONSECUTIVE, len(self))):
            try:
                img, target = self._load(index)
                break
            except Exception as e:  # PIL raises several types for bad files
                path = self.filename(index, absolute=True)
                if self.on_error == "fail":
                    raise DataError(f"cannot read image {path}: {e} (set bad_images: skip to skip such files)") from e
                with self._skipped.get_lock():
                    self._skipped.value += 1
                if path not in self._reported:
                    self._reported.add(path)
                    _logger.warning("skipping unreadable image %s: %s", path, e)
                index = (index + 1) % len(self)
        else:
            raise DataError(f"{self.MAX_CONSECUTIVE} consecutive unreadable images in {self.reader.root}; "
                            "the data directory looks broken")
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def check_image_dir(path: str, what: str = "image folder") -> str:
    """Raise a DataError unless path is a folder holding at least one image below it."""
    if not os.path.isdir(path):
        raise DataError(f"{what} not found: {path}")
    has_image = any(f.lower().endswith(IMG_EXTENSIONS) for _, _, files in os.walk(path) for f in files)
    if not has_image:
        raise DataError(f"no images found in {path}; expected {path}/<class>/<image> with one of {IMG_EXTENSIONS}")
    return path


def _split_dir(data_dir: Optional[str], split: str) -> str:
    if not data_dir:
        raise DataError("no data directory given: set data_dir (an ImageFolder root with train/ and val/ folders)")
    if not os.path.isdir(data_dir):
        raise DataError(f"data directory not found: {data_dir}")
    path = os.path.join(data_dir, split)
    if not os.path.isdir(path):
        present = sorted(d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d)))
        raise DataError(f"data directory {data_dir} has no '{split}' folder (found: {present or 'nothing'}); "
                        f"expected {data_dir}/{split}/<class>/<image>")
    return check_image_dir(path)


SPLIT_NAMES = ("train", "val", "validation", "test", "eval")


def refuse_dataset_root(path: str) -> None:
    """A DataError when `path` holds split folders (train/, val/ ...) rather than class folders: read as an
    ImageFolder, it would score every split's images together under split names as classes."""
    splits = sorted(d for d in os.listdir(path) if d.lower() in SPLIT_NAMES and os.path.isdir(os.path.join(path, d))
                    and any(os.path.isdir(os.path.join(path, d, c)) for c in os.listdir(os.path.join(path, d))))
    if splits:
        raise DataError(f"{path} looks like a dataset root (it holds {', '.join(s + '/' for s in splits)} with class "
                        f"folders inside), not one split; pass the split itself, e.g. {os.path.join(path, splits[-1])}")


def check_class_folders(path: str, class_to_idx: Dict[str, int], known_as: str) -> None:
    """A DataError when `path` has class folders that `class_to_idx` lacks (timm would drop them silently); a
    warning when some known classes have no folder there."""
    found = {d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))}
    extra, absent = sorted(found - set(class_to_idx)), sorted(set(class_to_idx) - found)
    if extra:
        raise DataError(f"{path} has class folders that {known_as} does not know: {', '.join(extra[:10])}"
                        + (f" (+{len(extra) - 10} more)" if len(extra) > 10 else "") +
                        f"; its classes are {', '.join(sorted(class_to_idx)[:10])}"
                        + (" ..." if len(class_to_idx) > 10 else ""))
    if absent:
        _logger.warning("%s has no folder for %d of the %d classes of %s: %s", path, len(absent), len(class_to_idx),
                        known_as, ", ".join(absent[:10]))


def image_folder(path: str, on_error: str = "fail", class_map: Optional[Dict[str, int]] = None,
                 known_as: str = "the model") -> CheckedImageFolder:
    """An ImageFolder (path/<class>/<image>), checked for existence, content, a dataset root passed by mistake,
    and (with class_map) class folders that the map, known as `known_as`, does not hold."""
    check_image_dir(path)
    refuse_dataset_root(path)
    if class_map:
        check_class_folders(path, class_map, known_as)
    return CheckedImageFolder(path, on_error=on_error, class_map=class_map or "")


def class_names(dataset) -> Optional[Dict[str, int]]:
    reader = getattr(dataset, "reader", None)
    return getattr(reader, "class_to_idx", None)


def build_datasets(cfg) -> Tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, int]:
    """Train and validation datasets for the config, and the number of classes they hold."""
    if cfg.dataset == "digits":
        size = cfg.img_size or 32
        return DigitsDataset("train", size), DigitsDataset("val", size), DigitsDataset.num_classes
    train_dir = _split_dir(cfg.data_dir, cfg.train_split)
    train = image_folder(train_dir, cfg.bad_images)
    classes = class_names(train)
    if len(classes) < 2:
        raise DataError(f"{train_dir} holds {len(classes)} class folder ({', '.join(classes)}); a classifier needs "
                        "at least two (expected <train>/<class>/<image>, one folder per class)")
    val = image_folder(_split_dir(cfg.data_dir, cfg.val_split), cfg.bad_images, class_map=classes,
                       known_as=f"the training set ({train_dir})")
    return train, val, len(classes)


def build_mixup(cfg, num_classes: int, collate: bool):
    """timm's mixup/cutmix with label smoothing folded into the soft targets, or None when both are off."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    cls = FastCollateMixup if collate else Mixup
    return cls(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
               switch_prob=cfg.mixup_switch_prob, mode=cfg.mixup_mode,
               label_smoothing=cfg.smoothing, num_classes=num_classes)


def build_train_loader(dataset, cfg, data_cfg: Dict[str, Any], device: torch.device, distributed: bool,
                       collate_mixup=None):
    """timm's training loader: RandAugment, random erasing, RandomResizedCrop; the GPU prefetcher on CUDA.

    Workers are not persistent: each epoch's workers are seeded from the main RNG, which the checkpoint saves,
    so a resumed run draws the same augmentations as an uninterrupted one. Posterize is made safe for Pillow 13.
    """
    loader = create_loader(
        dataset, input_size=data_cfg["input_size"], batch_size=cfg.batch_size, is_training=True,
        re_prob=cfg.reprob, re_mode=cfg.remode, re_count=cfg.recount, scale=cfg.scale, ratio=cfg.ratio,
        hflip=cfg.hflip, color_jitter=cfg.color_jitter, auto_augment=cfg.aa, grayscale_prob=cfg.grayscale_prob,
        interpolation=cfg.train_interpolation, mean=data_cfg["mean"], std=data_cfg["std"],
        num_workers=capped_workers(cfg.workers), distributed=distributed, collate_fn=collate_mixup,
        pin_memory=cfg.pin_memory and device.type == "cuda", device=device,
        use_prefetcher=device.type == "cuda", persistent_workers=False,
    )
    fix_posterize(dataset.transform)  # create_loader set it; workers start later, with the fixed ops
    return loader


def build_eval_loader(dataset, data_cfg: Dict[str, Any], batch_size: int, workers: int, device: torch.device,
                      rank: int = 0, world_size: int = 1):
    """Deterministic eval transform (resize by crop_pct, centre crop) over this rank's share of the samples.

    Ranks take every world_size-th sample, with no padding, so summed counts cover each image exactly once.
    """
    dataset.transform = create_transform(
        data_cfg["input_size"], is_training=False, interpolation=data_cfg["interpolation"],
        mean=data_cfg["mean"], std=data_cfg["std"], crop_pct=data_cfg["crop_pct"],
        crop_mode=data_cfg.get("crop_mode"))
    if world_size > 1:
        dataset = torch.utils.data.Subset(dataset, list(range(rank, len(dataset), world_size)))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                       num_workers=capped_workers(workers),
                                       pin_memory=device.type == "cuda", drop_last=False)
