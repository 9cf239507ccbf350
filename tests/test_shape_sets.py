"""The generated small sets used to check the small-data recipe beyond its own demo set: several classes, mixed
image sizes and aspect ratios, JPEG and PNG, the same images for the same seed."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inceptionnext.data.shape_sets import PRESETS, SHAPES, draw_object, make_shape_set
from inceptionnext.tasks.classification.data import build_datasets
from inceptionnext.train import make_config


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.*")):
        h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_a_set_has_its_classes_mixed_sizes_and_both_formats_and_reads_as_an_image_folder(tmp_path):
    counts = make_shape_set(str(tmp_path / "s"), classes=5, train=12, val=3, max_aspect=3.0, seed=3)
    assert counts == {"train": 60, "val": 15}
    files = sorted((tmp_path / "s" / "train").rglob("*.*"))
    assert {p.parent.name for p in files} == set(SHAPES[:5])
    assert {p.suffix for p in files} == {".jpg", ".png"}
    sizes = [Image.open(p).size for p in files]
    ratios = [max(w, h) / min(w, h) for w, h in sizes]
    assert len(set(sizes)) > 30 and max(ratios) > 2.0 and min(ratios) < 1.3
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)  # wide and tall
    train, val, classes = build_datasets(make_config(data_dir=str(tmp_path / "s")))
    assert (len(train), len(val), classes) == (60, 15, 5)


def test_the_same_seed_writes_the_same_set(tmp_path):
    make_shape_set(str(tmp_path / "a"), classes=3, train=3, val=1, seed=5)
    make_shape_set(str(tmp_path / "b"), classes=3, train=3, val=1, seed=5)
    make_shape_set(str(tmp_path / "c"), classes=3, train=3, val=1, seed=6)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_presets_span_three_to_ten_classes_and_30_to_150_images_per_class():
    assert len(PRESETS) >= 4
    assert {p["classes"] for p in PRESETS.values()} >= {3, 10}
    assert all(30 <= p["train"] <= 150 for p in PRESETS.values())


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_draws_an_object_that_differs_from_its_background(shape):
    img = np.asarray(draw_object(shape, 80, 40, np.random.RandomState(0))).astype(float)
    assert img.shape == (40, 80, 3) and img.std() > 10
    with pytest.raises(ValueError, match="unknown shape"):
        draw_object("blob", 10, 10)
