"""COCO-format detection data: a folder of images and one annotations JSON (boxes, optional masks).

Reading is torchvision's CocoDetection wrapped for transforms v2; what this module adds is the checking that
turns a bad annotation file into one clear error before training starts (a box outside its image, an unknown
category id, a missing image file, an empty annotation list), and one label convention for every detector:
category ids map, in sorted order, to labels 1..K, with 0 left for background as in torchvision.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

from ...data.folders import DataError
import bisect
from typing import Iterator
from dataclasses import dataclass
from torchvision.transforms import v2

BOX_TOLERANCE = 1.0  # pixels a box may stick out of its image (rounding in real annotation tools) before it is an error


class AnnotationError(DataError, ValueError):
    """A COCO annotation file that cannot be trained on; the message names the file, the entry and the problem."""


def _read_json(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise AnnotationError(f"annotation file not found: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a COCO object with 'images', 'annotations' and 'categories'")
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"{path}: has no '{key}' list; a COCO detection file needs images, annotations "
                                  "and categories")
    return data


def check_annotations(data: Dict[str, Any], path: str, image_root: str) -> None:
    """Raise AnnotationError for the first thing a detector cannot train on, naming where it is."""
    if not data['images']:
        raise AnnotationError(f"{path}: the image list is empty")
    if not data['annotations']:
        raise AnnotationError(f"{path}: the annotation list is empty (no objects to learn from)")
    if not data['categories']:
        raise AnnotationError(f"{path}: the category list is empty")
    images = {}
    for img in data['images']:
        if 'id' not in img or 'file_name' not in img:
            raise AnnotationError(f"{path}: image entry {img!r} lacks 'id' or 'file_name'")
        images[img['id']] = img
    missing = [img['file_name'] for img in data['images']
               if not os.path.isfile(os.path.join(image_root, img['file_name']))]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise AnnotationError(f"{path}: image file {os.path.join(image_root, missing[0])} is missing{more}")
    categories = {c['id'] for c in data['categories']}
    for ann in data['annotations']:
        where = f"{path}: annotation {ann.get('id', '?')}"
        image = images.get(ann.get('image_id'))
        if image is None:
            raise AnnotationError(f"{where} refers to image id {ann.get('image_id')!r}, which is not in 'images'")
        if ann.get('category_id') not in categories:
            raise AnnotationError(f"{where} (image {image['file_name']}) has category id {ann.get('category_id')!r}, "
                                  f"which is not among the categories {sorted(categories)}")
        box = ann.get('bbox')
        if not (isinstance(box, (list, tuple)) and len(box) == 4):
            raise AnnotationError(f"{where} (image {image['file_name']}) has bbox {box!r}; expected [x, y, w, h]")
        x, y, w, h = box
        width, height = image.get('width'), image.get('height')
        if w <= 0 or h <= 0:
            raise AnnotationError(f"{where} (image {image['file_name']}) has an empty box [x, y, w, h] = {box}")
        if width is not None and height is not None and (
                x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE
                or y + h > height + BOX_TOLERANCE):
            raise AnnotationError(f"{where}: box [x, y, w, h] = {box} lies outside its image {image['file_name']} "
                                  f"({width}x{height})")


class CocoDetectionSet(torch.utils.data.Dataset):
    """Images + one COCO JSON, checked up front; items are (image, target) with tv_tensors boxes (XYXY), labels
    1..K, masks when asked for, and image_id / iscrowd for evaluation. Crowd regions are left out of training
    targets (as in torchvision's references) but kept, flagged, for evaluation."""

    def __init__(self, image_root: str, annotation_file: str, transforms=None, masks: bool = False,
                 keep_crowd: bool = False):
        data = _read_json(annotation_file)
        check_annotations(data, annotation_file, image_root)
        self.image_root, self.annotation_file = image_root, annotation_file
        self.masks, self.keep_crowd = masks, keep_crowd
        if masks:
            bad = [a.get('id') for a in data['annotations'] if not a.get('segmentation')]
            if bad:
                raise AnnotationError(f"{annotation_file}: masks were asked for, but annotation {bad[0]} has no "
                                      f"'segmentation'" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
        self.categories = sorted(data['categories'], key=lambda c: c['id'])
        self.class_names = [str(c.get('name', c['id'])) for c in self.categories]
        self.label_of = {c['id']: i + 1 for i, c in enumerate(self.categories)}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            base = CocoDetection(image_root, annotation_file)
        keys = ('image_id', 'boxes', 'labels', 'iscrowd') + (('masks',) if masks else ())
        self.dataset = wrap_dataset_for_transforms_v2(base, target_keys=keys)
        info = {img['id']: img for img in data['images']}
        self.image_info = [info[i] for i in base.ids]
        self.transforms = transforms

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def aspect_ratios(self) -> List[float]:
        """width / height of every image, from the JSON (no image is opened)."""
        return [img.get('width', 1) / max(img.get('height', 1), 1) for img in self.image_info]

    def __len__(self) -> int:
        return len(self.dataset)

    def _empty_target(self, image, image_id: int) -> Dict[str, Any]:
        h, w = image.height, image.width
        target = dict(image_id=image_id, iscrowd=[],
                      boxes=tv_tensors.BoundingBoxes(torch.zeros(0, 4), format='XYXY', canvas_size=(h, w)),
                      labels=torch.zeros(0, dtype=torch.int64))
        if self.masks:
            target['masks'] = tv_tensors.Mask(torch.zeros(0, h, w, dtype=torch.uint8))
        return target

    def __getitem__(self, index: int) -> Tuple[Any, Dict[str, Any]]:
        image, target = self.dataset[index]
        info = self.image_info[index]
        if (info.get('width'), info.get('height')) not in ((None, None), (image.width, image.height)):
            raise AnnotationError(f"{self.annotation_file}: image {info['file_name']} is {image.width}x"
                                  f"{image.height}, but the annotations say {info['width']}x{info['height']}")
        if 'boxes' not in target:
            target = self._empty_target(image, target['image_id'])
        target['boxes'] = target['boxes'].to(torch.float32)  # COCO boxes may be whole numbers; crops need floats
        target['labels'] = torch.tensor([self.label_of[int(c)] for c in target['labels']], dtype=torch.int64)
        crowd = torch.tensor([bool(c) for c in target.pop('iscrowd')], dtype=torch.bool)
        if self.keep_crowd:
            target['iscrowd'] = crowd.long()
        elif crowd.any():
            keep = ~crowd
            for key in ('boxes', 'labels', 'masks'):
                if key in target:
                    target[key] = target[key][keep]
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def collate(batch: Sequence[Tuple[Any, Dict[str, Any]]]) -> Tuple[List[Any], List[Dict[str, Any]]]:
    """Detectors take lists (images of different sizes), not stacked tensors."""
    return [b[0] for b in batch], [b[1] for b in batch]


def coco_json(images: Sequence[Dict[str, Any]], annotations: Sequence[Dict[str, Any]],
              class_names: Sequence[str], info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A COCO detection document; categories get ids 1..K in the order of class_names."""
    return dict(info=info or {}, images=list(images), annotations=list(annotations),
                categories=[dict(id=i + 1, name=n) for i, n in enumerate(class_names)])


def aspect_ratio_groups(aspect_ratios: Sequence[float], bins: Sequence[float] = (1.0,)) -> List[int]:
    """Group id of each image: the index of the first bin edge above its width/height ratio."""
    edges = sorted(bins)
    return [bisect.bisect_right(edges, r) for r in aspect_ratios]


class GroupedBatchSampler(torch.utils.data.Sampler[List[int]]):
    """Batches drawn in the sampler's order, each from one group; the few left over in each group are batched
    together at the end (mixed), and the batch order is shuffled with the epoch's seed."""

    def __init__(self, sampler: torch.utils.data.Sampler, group_ids: Sequence[int], batch_size: int,
                 seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.sampler, self.group_ids, self.batch_size, self.seed = sampler, list(group_ids), batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[List[int]]:
        buckets: dict = {}
        batches, leftovers = [], []
        for idx in self.sampler:
            bucket = buckets.setdefault(self.group_ids[idx], [])
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                batches.append(bucket[:])
                bucket.clear()
        for bucket in buckets.values():
            leftovers.extend(bucket)
        batches += [leftovers[i:i + self.batch_size]
                    for i in range(0, len(leftovers) - self.batch_size + 1, self.batch_size)]
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        for i in torch.randperm(len(batches), generator=g).tolist():
            yield batches[i]


@dataclass(frozen=True)
class Augment:
    """Which augmentations run in training, and how often (0 turns one off)."""
    hflip: float = 0.5          # horizontal flip probability (off for data where a mirror changes the class)
    photometric: float = 0.0    # probability of SSD's photometric distortion (brightness, contrast, hue, ...)
    zoom_out: float = 0.0       # probability of placing the image on a canvas up to 2x larger (small objects)
    iou_crop: bool = False      # SSD's random crop keeping objects by IoU (large objects)


def train_transforms(aug: Augment) -> v2.Compose:
    steps = [v2.ToImage()]
    if aug.photometric > 0:
        steps.append(v2.RandomPhotometricDistort(p=aug.photometric))
    if aug.zoom_out > 0:
        steps.append(v2.RandomZoomOut(fill=0, p=aug.zoom_out))
    if aug.iou_crop:
        steps.append(v2.RandomIoUCrop())
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=aug.hflip))
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0),
              v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()]
    return v2.Compose(steps)


def eval_transforms() -> v2.Compose:
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()])
