"""Image folders every task reads (<split>/<class>/<image> for classification, images beside masks for segmentation): missing, empty or misplaced folders and unreadable images are errors that name the path."""

from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Dict, Optional

from PIL import Image
from timm.data import ImageDataset

_logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class DataError(RuntimeError):
    """The data cannot be used: a missing or empty folder, or an image that cannot be read."""


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
            raise DataError(
                f"{self.MAX_CONSECUTIVE} consecutive unreadable images in {self.reader.root}; "
                "the data directory looks broken"
            )
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
        raise DataError(
            f"data directory {data_dir} has no '{split}' folder (found: {present or 'nothing'}); "
            f"expected {data_dir}/{split}/<class>/<image>"
        )
    return check_image_dir(path)


SPLIT_NAMES = ("train", "val", "validation", "test", "eval")


def refuse_dataset_root(path: str) -> None:
    """A DataError when `path` holds split folders (train/, val/ ...) rather than class folders: read as an
    ImageFolder, it would score every split's images together under split names as classes."""
    splits = sorted(
        d
        for d in os.listdir(path)
        if d.lower() in SPLIT_NAMES
        and os.path.isdir(os.path.join(path, d))
        and any(os.path.isdir(os.path.join(path, d, c)) for c in os.listdir(os.path.join(path, d)))
    )
    if splits:
        raise DataError(
            f"{path} looks like a dataset root (it holds {', '.join(s + '/' for s in splits)} with class "
            f"folders inside), not one split; pass the split itself, e.g. {os.path.join(path, splits[-1])}"
        )


def check_class_folders(path: str, class_to_idx: Dict[str, int], known_as: str) -> None:
    """A DataError when `path` has class folders that `class_to_idx` lacks (timm would drop them silently); a
    warning when some known classes have no folder there."""
    found = {d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))}
    extra, absent = sorted(found - set(class_to_idx)), sorted(set(class_to_idx) - found)
    if extra:
        raise DataError(
            f"{path} has class folders that {known_as} does not know: {', '.join(extra[:10])}"
            + (f" (+{len(extra) - 10} more)" if len(extra) > 10 else "")
            + f"; its classes are {', '.join(sorted(class_to_idx)[:10])}"
            + (" ..." if len(class_to_idx) > 10 else "")
        )
    if absent:
        _logger.warning(
            "%s has no folder for %d of the %d classes of %s: %s",
            path,
            len(absent),
            len(class_to_idx),
            known_as,
            ", ".join(absent[:10]),
        )


def image_folder(
    path: str, on_error: str = "fail", class_map: Optional[Dict[str, int]] = None, known_as: str = "the model"
) -> CheckedImageFolder:
    """An ImageFolder (path/<class>/<image>), checked for existence, content, a dataset root passed by mistake,
    and (with class_map) class folders that the map, known as `known_as`, does not hold.

    Args:
        path: the folder of class folders.
        on_error: an image that cannot be decoded: 'fail' raises a DataError naming it, 'skip' serves the next
            readable one and counts it.
        class_map: class name to index (a model's classes); None takes the folder names, sorted.
        known_as: what to call the map's owner in the message.

    Returns:
        timm's ImageFolder dataset with that policy.

    Raises:
        DataError: the folder is missing or holds no images, holds split folders (train/, val/) instead of
            class folders, or has class folders `class_map` lacks.
        ValueError: `on_error` is neither 'fail' nor 'skip'.
    """
    check_image_dir(path)
    refuse_dataset_root(path)
    if class_map:
        check_class_folders(path, class_map, known_as)
    return CheckedImageFolder(path, on_error=on_error, class_map=class_map or "")


def class_to_idx(dataset) -> Optional[Dict[str, int]]:
    """The class-name-to-index map of an image folder dataset (None for other datasets)."""
    reader = getattr(dataset, "reader", None)
    return getattr(reader, "class_to_idx", None)
