"""COCO-format detection data: a folder of images and one annotations JSON (boxes, optional masks).

Reading is torchvision's CocoDetection wrapped for transforms v2; what this module adds is the checking that
turns a bad annotation file into one clear error before training starts (a box outside its image, an unknown
category id, a missing image file, an empty annotation list), and one label convention for every detector:
category ids map, in sorted order, to labels 1..K, with 0 left for background as in torchvision.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection, VisionDataset, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

from ...data.folders import DataError
from ...data.images import ImageError, load_image
from ...utils.text import describe_value, excerpt

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
    except RecursionError:  # the reader recurses once per level; a COCO file nests 5 deep
        raise AnnotationError(
            f"{path}: its JSON is nested deeper than can be read (over {sys.getrecursionlimit()} levels); a COCO "
            "file nests a few levels (images, annotations, categories, polygons)"
        ) from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a COCO object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(
                f"{path}: has no '{key}' list; a COCO detection file needs images, annotations and categories"
            )
    return data


# Bounds on what one COCO file may ask for, checked before anything is allocated from it.
MAX_COORD = 1e6  # a box coordinate or size, in pixels
MAX_ANNOTATIONS_PER_IMAGE = 2000  # COCO's busiest image has under 100; masks for 100k would take tens of GB


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _count(problems: int) -> str:
    return f" (and {problems - 1} more)" if problems > 1 else ""


def _within(folder: str, real: str) -> bool:
    folder = os.path.realpath(folder)
    return os.path.commonpath([folder, real]) == folder


def _inside(root: str, file_name: Any, annotation_dir: Optional[str] = None) -> Optional[str]:
    """Why `file_name` does not name a file inside `root` (None when it does). An absolute path, as tools such
    as kwcoco write into their own bundle folder, is accepted when it resolves inside the image folder or inside
    the annotation file's folder tree (`annotation_dir`)."""
    if not isinstance(file_name, str) or not file_name:
        return "is not a file name"
    if os.path.isabs(file_name):
        real = os.path.realpath(file_name)
        folders = [root] + ([annotation_dir] if annotation_dir else [])
        if any(_within(folder, real) for folder in folders):
            return None
        return (
            f"is an absolute path ({real}) outside the image folder {os.path.realpath(root)}"
            + (f" and the annotation file's folder {os.path.realpath(annotation_dir)}" if annotation_dir else "")
            + " (absolute file names must lie inside one of them)"
        )
    if file_name.startswith(("/", "\\")) or ":" in file_name.split("/")[0]:
        return "is an absolute path of another system; file names are relative to the image folder"
    if ".." in file_name.replace("\\", "/").split("/"):
        return "climbs out of the image folder (..)"
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, file_name))
    if os.path.commonpath([real_root, real]) != real_root:
        return f"resolves (through a symlink) to {real}, outside the image folder {real_root}"
    return None


def _check_segmentation(seg: Any, image: Dict[str, Any]) -> Optional[str]:
    """Why a COCO segmentation is malformed for its image (None when it is well-formed)."""
    if isinstance(seg, list):  # polygons: [[x1, y1, x2, y2, ...], ...]
        for poly in seg:
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                return "has a polygon that is not a list of numbers"
            if len(poly) < 6 or len(poly) % 2:
                return f"has a polygon of {len(poly)} coordinates; a polygon is at least 3 (x, y) points"
            if not all(math.isfinite(v) and abs(v) <= MAX_COORD for v in poly):
                return "has a polygon coordinate that is not finite or beyond 1e6"
        return None
    if isinstance(seg, dict):  # RLE: {'size': [h, w], 'counts': str or [int, ...]}
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
            return f"has an RLE whose size {describe_value(size)} is not [height, width]"
        if size != [image["height"], image["width"]]:
            return f"has an RLE of size {size[1]}x{size[0]} (WxH) for an image of {image['width']}x{image['height']}"
        if isinstance(counts, list):
            if not all(_is_int(v) and v >= 0 for v in counts) or sum(counts) != size[0] * size[1]:
                return f"has RLE counts that do not cover its {size[0] * size[1]} pixels"
        elif not isinstance(counts, str) or not counts:
            return "has RLE counts that are neither a string nor a list of run lengths"
        elif not _rle_decodes(size, counts):
            return f"has an RLE whose counts do not decode to a {size[1]}x{size[0]} (WxH) mask"
        return None
    return f"has a segmentation that is {describe_value(seg)}, neither polygons nor an RLE"


def _rle_decodes(size: List[int], counts: str) -> bool:
    """Whether a compressed RLE string decodes (pycocotools, as training will) to exactly size[0] x size[1]
    pixels: one made for a larger image, or damaged, does not."""
    from pycocotools import mask as mask_utils

    try:
        decoded = mask_utils.decode({"size": list(size), "counts": counts.encode("ascii")})
    except (ValueError, UnicodeEncodeError):
        return False
    return tuple(decoded.shape[:2]) == tuple(size)


def _image_size(root: str, file_name: str) -> Tuple[int, int]:
    """(width, height) from the image file's header."""
    from PIL import Image

    with Image.open(os.path.join(root, file_name)) as im:
        return im.size


def _keep_names_apart(categories: Dict[int, Dict[str, Any]], path: str) -> None:
    """Categories sharing a name (distinct ids) are renamed '<name> (id N)' with a warning, so the model's
    classes, its outputs and its metrics can tell them apart."""
    by_name: Dict[str, List[int]] = {}
    for cid, c in categories.items():
        by_name.setdefault(c["name"], []).append(cid)
    shared = {name: ids for name, ids in by_name.items() if len(ids) > 1}
    for name, ids in shared.items():
        for cid in ids:
            categories[cid]["name"] = f"{name} (id {cid})"
    if shared:
        listed = "; ".join(f"{excerpt(n)!r}: ids {', '.join(map(str, ids))}" for n, ids in list(shared.items())[:5])
        warnings.warn(
            f"{path}: categories share a name ({listed}); they are kept apart as '<name> (id N)'",
            stacklevel=3,
        )


def check_annotations(data: Dict[str, Any], path: str, image_root: str, masks: bool = False) -> Dict[str, Any]:
    """Check every record of a COCO document in one pass and return it as pycocotools reads it: optional fields
    filled with COCO's defaults (iscrowd 0, area = box area, image width/height from the file, annotation ids),
    extra fields ignored. The first problem is an AnnotationError naming the file, the entry and what is wrong:
    duplicate ids, boxes that are not four finite numbers inside their image, categories without an integer id,
    malformed polygons or RLEs, file names outside the image folder, missing or oversized images, too many
    annotations on one image."""
    from PIL import Image

    if not data["images"]:
        raise AnnotationError(f"{path}: the image list is empty")
    if not data["annotations"]:
        raise AnnotationError(f"{path}: the annotation list is empty (no objects to learn from)")
    if not data["categories"]:
        raise AnnotationError(f"{path}: the category list is empty")
    categories = {}
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            raise AnnotationError(f"{path}: category {i} ({describe_value(c)}) has no integer 'id'")
        if c["id"] in categories:
            raise AnnotationError(f"{path}: category id {c['id']} appears twice")
        name = c.get("name", str(c["id"]))
        categories[c["id"]] = dict(c, name=name if isinstance(name, str) else str(name))
    _keep_names_apart(categories, path)
    images, missing, limit = {}, [], Image.MAX_IMAGE_PIXELS
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")) or "file_name" not in img:
            raise AnnotationError(f"{path}: image entry {i} lacks an integer 'id' or a 'file_name'")
        if img["id"] in images:
            first = excerpt(images[img["id"]]["file_name"])
            raise AnnotationError(
                f"{path}: image id {img['id']} appears twice ({first} and "
                f"{excerpt(img['file_name'])}); ids must be unique"
            )
        why = _inside(image_root, img["file_name"], os.path.dirname(os.path.abspath(path)))
        if why:
            raise AnnotationError(f"{path}: image {img['id']}'s file_name {describe_value(img['file_name'])} {why}")
        if not os.path.isfile(os.path.join(image_root, img["file_name"])):
            missing.append(img["file_name"])
            continue
        try:
            size = _image_size(image_root, img["file_name"])
        except Exception as e:  # includes PIL's DecompressionBombError
            raise AnnotationError(
                f"{path}: image {os.path.join(image_root, img['file_name'])} cannot be read "
                f"({type(e).__name__}: {excerpt(e, 150)})"
            ) from None
        if limit and size[0] * size[1] > limit:
            raise AnnotationError(
                f"{path}: image {os.path.join(image_root, img['file_name'])} is {size[0]}x{size[1]}"
                f" ({size[0] * size[1]} pixels), over the decompression limit of {limit} pixels"
            )
        for key, value in (("width", size[0]), ("height", size[1])):
            if img.get(key) is not None and img[key] != value:
                raise AnnotationError(
                    f"{path}: image {img['file_name']} is {size[0]}x{size[1]}, but the annotations"
                    f" say {describe_value(img.get('width'))}x{describe_value(img.get('height'))}"
                )
        images[img["id"]] = dict(img, width=size[0], height=size[1])
    if missing:
        raise AnnotationError(
            f"{path}: image file {os.path.join(image_root, missing[0])} is missing" + _count(len(missing))
        )
    used_ids = {a.get("id") for a in data["annotations"] if isinstance(a, dict) and _is_int(a.get("id"))}
    next_id = max(used_ids, default=0) + 1
    seen, per_image, annotations = set(), {}, []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise AnnotationError(f"{path}: annotation entry {i} is {describe_value(ann)}, not an object")
        ann = dict(ann)
        if "id" not in ann:
            ann["id"], next_id = next_id, next_id + 1
        where = f"{path}: annotation {describe_value(ann['id'])}"
        if not _is_int(ann["id"]) or ann["id"] in seen:
            raise AnnotationError(
                f"{where}: "
                + ("appears twice; ids must be unique" if ann["id"] in seen else "its id is not an integer")
            )
        seen.add(ann["id"])
        image = images.get(ann.get("image_id"))
        if image is None:
            raise AnnotationError(
                f"{where} refers to image id {describe_value(ann.get('image_id'))}, which is not in 'images'"
            )
        file_name = excerpt(image["file_name"])
        per_image[image["id"]] = per_image.get(image["id"], 0) + 1
        if per_image[image["id"]] > MAX_ANNOTATIONS_PER_IMAGE:
            raise AnnotationError(
                f"{path}: image {file_name} has more than {MAX_ANNOTATIONS_PER_IMAGE} annotations "
                "(the limit per image, inceptionnext.tasks.detection.data.MAX_ANNOTATIONS_PER_IMAGE)"
            )
        if ann.get("category_id") not in categories:
            raise AnnotationError(
                f"{where} (image {file_name}) has category id "
                f"{describe_value(ann.get('category_id'))}, which is not among the categories "
                f"{sorted(categories)[:20]}"
            )
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise AnnotationError(
                f"{where} (image {file_name}) has bbox {describe_value(box)}; expected [x, y, w, h] as four numbers"
            )
        if not all(math.isfinite(v) and abs(v) <= MAX_COORD for v in box):
            raise AnnotationError(
                f"{where} (image {file_name}) has bbox {box}: a value is not finite or beyond {MAX_COORD:.0e}"
            )
        x, y, w, h = box
        width, height = image["width"], image["height"]
        if w <= 0 or h <= 0:
            raise AnnotationError(f"{where} (image {file_name}) has an empty box [x, y, w, h] = {box}")
        if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE or y + h > height + BOX_TOLERANCE:
            raise AnnotationError(
                f"{where}: box [x, y, w, h] = {box} lies outside its image {file_name} ({width}x{height})"
            )
        crowd = ann.setdefault("iscrowd", 0)
        if crowd not in (0, 1):  # False/True compare equal to 0/1
            raise AnnotationError(f"{where} (image {file_name}) has iscrowd {describe_value(crowd)}; expected 0 or 1")
        ann["iscrowd"] = int(crowd)
        area = ann.setdefault("area", float(w * h))
        if not (_is_number(area) and math.isfinite(area) and area >= 0):
            raise AnnotationError(
                f"{where} (image {file_name}) has area {describe_value(area)}; expected a finite number >= 0"
            )
        seg = ann.get("segmentation")
        if seg in (None, [], {}):
            ann.pop("segmentation", None)
        else:
            why = _check_segmentation(seg, image)
            if why:
                raise AnnotationError(f"{where} (image {file_name}) {why}")
        if masks and "segmentation" not in ann:
            raise AnnotationError(f"{path}: masks were asked for, but annotation {ann['id']} has no 'segmentation'")
        annotations.append(ann)
    return dict(data, images=list(images.values()), annotations=annotations, categories=list(categories.values()))


class _CheckedCocoDetection(CocoDetection):
    """CocoDetection whose images are read by `load_image`: fully decoded (a truncated file is an error naming
    it, not PIL's 'image file is truncated' deep in a loader), in their stored orientation (as the boxes are),
    and 16-bit images scaled to 8 bits with their levels kept (PIL's convert('RGB') clips them to 0 and 255)."""

    def _load_image(self, id: int):
        path = os.path.join(self.root, self.coco.loadImgs(id)[0]["file_name"])
        try:
            return load_image(path, 3, upright=False)
        except ImageError as e:
            raise DataError(str(e)) from None


def _coco_dataset(image_root: str, data: Dict[str, Any]) -> CocoDetection:
    """torchvision's CocoDetection over the checked document (not the file re-read: its defaults are filled)."""
    from pycocotools.coco import COCO

    base = _CheckedCocoDetection.__new__(_CheckedCocoDetection)
    VisionDataset.__init__(base, image_root)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        base.coco = COCO()
        base.coco.dataset = data
        base.coco.createIndex()
    base.ids = sorted(base.coco.imgs.keys())
    return base


class CocoDetectionSet(torch.utils.data.Dataset):
    """Images + one COCO JSON, checked up front; items are (image, target) with tv_tensors boxes (XYXY), labels
    1..K, masks when asked for, and image_id / iscrowd for evaluation. Crowd regions are left out of training
    targets (as in torchvision's references) but kept, flagged, for evaluation."""

    def __init__(
        self, image_root: str, annotation_file: str, transforms=None, masks: bool = False, keep_crowd: bool = False
    ):
        data = check_annotations(_read_json(annotation_file), annotation_file, image_root, masks)
        self.image_root, self.annotation_file = image_root, annotation_file
        self.masks, self.keep_crowd = masks, keep_crowd
        self.categories = sorted(data["categories"], key=lambda c: c["id"])
        self.class_names = [c["name"] for c in self.categories]
        self.label_of = {c["id"]: i + 1 for i, c in enumerate(self.categories)}
        base = _coco_dataset(image_root, data)
        keys = ("image_id", "boxes", "labels", "iscrowd") + (("masks",) if masks else ())
        self.dataset = wrap_dataset_for_transforms_v2(base, target_keys=keys)
        info = {img["id"]: img for img in data["images"]}
        self.image_info = [info[i] for i in base.ids]
        self.transforms = transforms

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def aspect_ratios(self) -> List[float]:
        """width / height of every image, from the JSON (no image is opened)."""
        return [img.get("width", 1) / max(img.get("height", 1), 1) for img in self.image_info]

    def __len__(self) -> int:
        return len(self.dataset)

    def _empty_target(self, image, image_id: int) -> Dict[str, Any]:
        h, w = image.height, image.width
        target = dict(
            image_id=image_id,
            iscrowd=[],
            boxes=tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(h, w)),
            labels=torch.zeros(0, dtype=torch.int64),
        )
        if self.masks:
            target["masks"] = tv_tensors.Mask(torch.zeros(0, h, w, dtype=torch.uint8))
        return target

    def __getitem__(self, index: int) -> Tuple[Any, Dict[str, Any]]:
        image, target = self.dataset[index]
        info = self.image_info[index]
        if (info.get("width"), info.get("height")) not in ((None, None), (image.width, image.height)):
            raise AnnotationError(
                f"{self.annotation_file}: image {info['file_name']} is {image.width}x"
                f"{image.height}, but the annotations say {info['width']}x{info['height']}"
            )
        if "boxes" not in target:
            target = self._empty_target(image, target["image_id"])
        target["boxes"] = target["boxes"].to(torch.float32)  # COCO boxes may be whole numbers; crops need floats
        target["labels"] = torch.tensor([self.label_of[int(c)] for c in target["labels"]], dtype=torch.int64)
        crowd = torch.tensor([bool(c) for c in target.pop("iscrowd")], dtype=torch.bool)
        if self.keep_crowd:
            target["iscrowd"] = crowd.long()
        elif crowd.any():
            keep = ~crowd
            for key in ("boxes", "labels", "masks"):
                if key in target:
                    target[key] = target[key][keep]
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def collate(batch: Sequence[Tuple[Any, Dict[str, Any]]]) -> Tuple[List[Any], List[Dict[str, Any]]]:
    """Detectors take lists (images of different sizes), not stacked tensors."""
    return [b[0] for b in batch], [b[1] for b in batch]


def coco_json(
    images: Sequence[Dict[str, Any]],
    annotations: Sequence[Dict[str, Any]],
    class_names: Sequence[str],
    info: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """A COCO detection document; categories get ids 1..K in the order of class_names."""
    return dict(
        info=info or {},
        images=list(images),
        annotations=list(annotations),
        categories=[dict(id=i + 1, name=n) for i, n in enumerate(class_names)],
    )


def aspect_ratio_groups(aspect_ratios: Sequence[float], bins: Sequence[float] = (1.0,)) -> List[int]:
    """Group id of each image: the index of the first bin edge above its width/height ratio."""
    edges = sorted(bins)
    return [bisect.bisect_right(edges, r) for r in aspect_ratios]


class GroupedBatchSampler(torch.utils.data.Sampler[List[int]]):
    """Batches drawn in the sampler's order, each from one group; the few left over in each group are batched
    together at the end (mixed), and the batch order is shuffled with the epoch's seed."""

    def __init__(self, sampler: torch.utils.data.Sampler, group_ids: Sequence[int], batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.sampler, self.group_ids, self.batch_size, self.seed = sampler, list(group_ids), batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
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
        batches += [
            leftovers[i : i + self.batch_size] for i in range(0, len(leftovers) - self.batch_size + 1, self.batch_size)
        ]
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        for i in torch.randperm(len(batches), generator=g).tolist():
            yield batches[i]


@dataclass(frozen=True)
class Augment:
    """Which augmentations run in training, and how often (0 turns one off)."""

    hflip: float = 0.5  # horizontal flip probability (off for data where a mirror changes the class)
    photometric: float = 0.0  # probability of SSD's photometric distortion (brightness, contrast, hue, ...)
    zoom_out: float = 0.0  # probability of placing the image on a canvas up to 2x larger (small objects)
    iou_crop: bool = False  # SSD's random crop keeping objects by IoU (large objects)


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
    steps += [
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0),
        v2.ToDtype(torch.float32, scale=True),
        v2.ToPureTensor(),
    ]
    return v2.Compose(steps)


def eval_transforms() -> v2.Compose:
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()])
