"""Segmentation data: image + mask folder readers (ADE20K's layout and a generic one), the joint transforms of
mmsegmentation's ADE20K recipe built from torchvision's transforms v2, and the iteration-based sampler.

Every bad input is an error that names it: a missing split folder, an image without its mask (or the reverse), a
mask whose size differs from its image, a label outside the class range.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision import tv_tensors

from ...data.folders import IMG_EXTENSIONS, DataError
from ...models.segmentation import IGNORE_INDEX
from .scenes import DigitScenes

# ADE20K (SceneParse150) class names, in label order 1..150 (0 is "other", ignored with reduce_zero_label)
ADE20K_CLASSES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)
assert len(ADE20K_CLASSES) == 150


def palette(num_classes: int, seed: int = 3) -> List[Tuple[int, int, int]]:
    """A fixed colour per class: evenly spread hues at alternating lightness (seeded order), class 0 first."""
    import colorsys

    order = np.random.RandomState(seed).permutation(num_classes)
    colours = []
    for i in range(num_classes):
        h = order[i] / max(num_classes, 1)
        r, g, b = colorsys.hls_to_rgb(h, 0.45 + 0.15 * (i % 2), 0.85)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def _stems(folder: str, extensions: Sequence[str]) -> Dict[str, str]:
    return {
        os.path.splitext(f)[0]: os.path.join(folder, f)
        for f in sorted(os.listdir(folder))
        if f.lower().endswith(tuple(extensions))
    }


class MaskFolderDataset(torch.utils.data.Dataset):
    """Images and same-named PNG masks: <root>/<image_dir>/<split>/<name>.<ext> + <root>/<mask_dir>/<split>/<name>.png.

    ADE20K: image_dir='images', mask_dir='annotations', splits 'training'/'validation', reduce_zero_label (label 0,
    "other", becomes 255 and every other label drops by one). Items are (tv_tensors.Image uint8, tv_tensors.Mask
    int64) before ``transform``; labels are checked against num_classes as they are read.
    """

    def __init__(
        self,
        root: str,
        split: str,
        num_classes: int,
        image_dir: str = "images",
        mask_dir: str = "masks",
        reduce_zero_label: bool = False,
        transform=None,
        class_names: Optional[Sequence[str]] = None,
    ):
        if not root or not os.path.isdir(root):
            raise DataError(f"segmentation data directory not found: {root}")
        img_root, mask_root = os.path.join(root, image_dir, split), os.path.join(root, mask_dir, split)
        for folder, what in ((img_root, "images"), (mask_root, "masks")):
            if not os.path.isdir(folder):
                parent = os.path.dirname(folder)
                found = sorted(os.listdir(parent)) if os.path.isdir(parent) else []
                raise DataError(
                    f"split '{split}' has no {what} folder {folder} (found in {parent}: "
                    f"{found or 'nothing'}); expected {root}/{image_dir}/<split>/ and "
                    f"{root}/{mask_dir}/<split>/"
                )
        images, masks = _stems(img_root, IMG_EXTENSIONS), _stems(mask_root, (".png",))
        if not images:
            raise DataError(f"no images found in {img_root}")
        lone = sorted(set(images) ^ set(masks))
        if lone:
            side = "mask" if lone[0] in images else "image"
            raise DataError(
                f"{len(lone)} files without a partner in split '{split}', e.g. "
                f"{images.get(lone[0]) or masks.get(lone[0])} has no {side} in "
                f"{mask_root if side == 'mask' else img_root}"
            )
        self.samples = [(images[k], masks[k]) for k in sorted(images)]
        self.num_classes, self.reduce_zero_label, self.transform = num_classes, reduce_zero_label, transform
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]

    def __len__(self) -> int:
        return len(self.samples)

    def read_mask(self, path: str) -> np.ndarray:
        with Image.open(path) as m:
            if m.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"mask {path} is a {m.mode} image; masks are single-channel PNGs of class indices")
            mask = np.asarray(m).astype(np.int64)
        if self.reduce_zero_label:
            mask = np.where(mask == 0, IGNORE_INDEX, mask - 1)
        bad = (mask != IGNORE_INDEX) & ((mask < 0) | (mask >= self.num_classes))
        if bad.any():
            raise DataError(
                f"mask {path} holds label {int(mask[bad][0])}, outside the {self.num_classes} classes "
                f"(0..{self.num_classes - 1}, or {IGNORE_INDEX} for ignored pixels)"
                + ("" if self.reduce_zero_label else "; is this ADE20K without reduce_zero_label?")
            )
        return mask

    def check_files(self) -> None:
        """Every image and mask of the split, checked before training starts (not at its first read, which for
        the validation split is the first validation): the image readable and under PIL's decompression limit,
        the mask a single-channel PNG of the image's size holding only known labels."""
        limit = Image.MAX_IMAGE_PIXELS
        for img_path, mask_path in self.samples:
            try:
                with Image.open(img_path) as im:
                    size = im.size
            except Exception as e:  # includes PIL's DecompressionBombError
                raise DataError(f"cannot read image {img_path}: {type(e).__name__}: {e}") from None
            if limit and size[0] * size[1] > limit:
                raise DataError(
                    f"image {img_path} is {size[0]}x{size[1]} ({size[0] * size[1]} pixels), over the "
                    f"decompression limit of {limit} pixels"
                )
            try:
                mask = self.read_mask(mask_path)
            except DataError:
                raise
            except Exception as e:
                raise DataError(f"cannot read mask {mask_path}: {type(e).__name__}: {e}") from None
            if mask.shape != (size[1], size[0]):
                raise DataError(
                    f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {img_path} is "
                    f"{size[0]}x{size[1]}"
                )

    def load(self, index: int) -> Tuple[tv_tensors.Image, tv_tensors.Mask]:
        img_path, mask_path = self.samples[index]
        try:
            with Image.open(img_path) as im:
                img = np.asarray(im.convert("RGB"))
        except Exception as e:
            raise DataError(f"cannot read image {img_path}: {e}") from e
        mask = self.read_mask(mask_path)
        if mask.shape != img.shape[:2]:
            raise DataError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {img_path} is "
                f"{img.shape[1]}x{img.shape[0]}"
            )
        return (
            tv_tensors.Image(torch.from_numpy(img.copy()).permute(2, 0, 1)),
            tv_tensors.Mask(torch.from_numpy(mask)),
        )

    def __getitem__(self, index: int):
        img, mask = self.load(index)
        return self.transform(img, mask) if self.transform is not None else (img, mask)


# ---------------------------------------------------------------------------------------------------------------
# joint transforms (torchvision transforms v2: masks take nearest interpolation and their own fill)


def _fit_scale(h: int, w: int, scale: Tuple[int, int]) -> float:
    """mmsegmentation's keep-ratio rescale: the largest factor that fits (long, short) edges inside scale."""
    long_edge, short_edge = max(scale), min(scale)
    return min(long_edge / max(h, w), short_edge / min(h, w))


class RandomRescale(v2.Transform):
    """Resize by a ratio drawn from ratio_range of the keep-ratio fit to base_size (or of the image's own size)."""

    def __init__(self, ratio_range: Tuple[float, float], base_size: Optional[Tuple[int, int]] = None):
        super().__init__()
        self.ratio_range, self.base_size = ratio_range, base_size

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        lo, hi = self.ratio_range
        r = lo + (hi - lo) * torch.rand(()).item()
        f = r * (_fit_scale(h, w, self.base_size) if self.base_size else 1.0)
        return {"size": [max(1, int(h * f + 0.5)), max(1, int(w * f + 0.5))]}

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        return TF.resize(inpt, params["size"], antialias=True)


class CatMaxRatioCrop(v2.Transform):
    """A random crop of crop_size (padded at the bottom/right, image 0 and mask 255, where the image is smaller);
    up to 10 draws are made until no class covers more than cat_max_ratio of the crop's labelled pixels."""

    def __init__(self, crop_size: int, cat_max_ratio: float = 1.0, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.size, self.cat_max_ratio, self.ignore_index = crop_size, cat_max_ratio, ignore_index

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        mask = next((x for x in flat_inputs if isinstance(x, tv_tensors.Mask)), None)

        def draw():
            top = int(torch.randint(0, max(h - self.size, 0) + 1, ()).item())
            left = int(torch.randint(0, max(w - self.size, 0) + 1, ()).item())
            return top, left

        top, left = draw()
        if self.cat_max_ratio < 1.0 and mask is not None:
            for _ in range(10):
                crop = mask[top : top + self.size, left : left + self.size]
                counts = torch.bincount(crop[crop != self.ignore_index].flatten())
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max().item() / counts.sum().item() < self.cat_max_ratio:
                    break
                top, left = draw()
        return {"top": top, "left": left, "pad_h": max(self.size - h, 0), "pad_w": max(self.size - w, 0)}

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        out = TF.crop(
            inpt, params["top"], params["left"], min(self.size, inpt.shape[-2]), min(self.size, inpt.shape[-1])
        )
        if params["pad_h"] or params["pad_w"]:
            fill = self.ignore_index if isinstance(inpt, tv_tensors.Mask) else 0
            out = TF.pad(out, [0, 0, params["pad_w"], params["pad_h"]], fill=fill)
        return out


class ToModelInput(v2.Transform):
    """Image to normalised float, mask to int64 (H, W)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.mean, self.std = list(mean), list(std)

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return inpt.as_subclass(torch.Tensor).long()
        if isinstance(inpt, tv_tensors.Image):
            x = TF.to_dtype(inpt, torch.float32, scale=True)
            return TF.normalize(x, self.mean, self.std).as_subclass(torch.Tensor)
        return inpt


def train_transform(cfg, mean, std) -> v2.Compose:
    """mmsegmentation's ADE20K training pipeline: random rescale, cat_max_ratio crop with 255 padding, flip,
    photometric distortion (each part switched by its config key)."""
    steps: List[v2.Transform] = []
    if cfg.seg_scale is not None and tuple(cfg.seg_scale) != (1.0, 1.0):
        steps.append(RandomRescale(tuple(cfg.seg_scale), tuple(cfg.base_size) if cfg.base_size else None))
    steps.append(CatMaxRatioCrop(cfg.crop_size, cfg.cat_max_ratio))
    if cfg.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(cfg.hflip))
    if cfg.photometric:
        steps.append(v2.RandomPhotometricDistort(p=0.5))
    steps.append(ToModelInput(mean, std))
    return v2.Compose(steps)


class EvalTransform(v2.Transform):
    """The test pipeline: keep-ratio resize of the image to base_size (none if unset); the mask keeps the
    original size, so metrics are taken at full resolution."""

    def __init__(self, base_size: Optional[Tuple[int, int]], mean, std):
        super().__init__()
        self.base_size = base_size
        self.to_input = ToModelInput(mean, std)

    def __call__(self, img, mask=None):
        if self.base_size:
            h, w = img.shape[-2:]
            f = _fit_scale(h, w, self.base_size)
            img = TF.resize(img, [int(h * f + 0.5), int(w * f + 0.5)], antialias=True)
        if mask is None:
            return self.to_input(img)
        return self.to_input(img, mask)


def collate_pairs(batch):
    """Stack images and masks when they share a size; otherwise keep lists (evaluated one by one)."""
    imgs, masks = zip(*batch)
    if len({tuple(i.shape) for i in imgs}) == 1 and len({tuple(m.shape) for m in masks}) == 1:
        return torch.stack(imgs), torch.stack(masks)
    return list(imgs), list(masks)


def read_class_names(data_dir: str, num_classes) -> List[str]:
    """<data_dir>/classes.txt (one name per line) if present, else the indices as names."""
    path = os.path.join(data_dir, "classes.txt")
    if os.path.isfile(path):
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
        if num_classes is not None and len(names) != num_classes:
            raise DataError(f"{path} names {len(names)} classes but num_classes is {num_classes}")
        return names
    if num_classes is None:
        raise DataError(f"set num_classes for the mask folder {data_dir}, or list the class names in {path}")
    return [str(i) for i in range(num_classes)]


def build_seg_datasets(cfg):
    """(train, val, class names) for cfg.dataset; transforms are attached by the task."""
    if cfg.dataset == "digit_scenes":
        size = cfg.img_size or 64
        n_train, n_val = cfg.scene_counts
        design = dict(canvas=size, scale=tuple(cfg.digit_scale), digits_per_scene=tuple(cfg.scene_digits))
        return (
            DigitScenes("train", length=n_train, **design),
            DigitScenes("val", length=n_val, **design),
            list(DigitScenes.class_names),
        )
    if cfg.dataset == "ade20k":
        names = list(ADE20K_CLASSES)
        splits = (
            cfg.train_split if cfg.train_split != "train" else "training",
            cfg.val_split if cfg.val_split != "val" else "validation",
        )
        sets = [
            MaskFolderDataset(
                cfg.data_dir, s, len(names), "images", "annotations", reduce_zero_label=True, class_names=names
            )
            for s in splits
        ]
        for one in sets:  # both splits, before the first iteration
            one.check_files()
        return sets[0], sets[1], names
    if cfg.dataset == "masks":
        if not cfg.data_dir or not os.path.isdir(cfg.data_dir):
            raise DataError(f"segmentation data directory not found: {cfg.data_dir}")
        names = read_class_names(cfg.data_dir, cfg.num_classes)
        sets = [
            MaskFolderDataset(cfg.data_dir, s, len(names), "images", "masks", cfg.reduce_zero_label, class_names=names)
            for s in (cfg.train_split, cfg.val_split)
        ]
        for one in sets:  # both splits, before the first iteration
            one.check_files()
        return sets[0], sets[1], names
    raise DataError(f"dataset {cfg.dataset!r} is not a segmentation dataset; use ade20k, masks or digit_scenes")
