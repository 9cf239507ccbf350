"""The recipes' RandAugment on Pillow 13: every config's augmentation, exactly as the engine builds it, runs over
thousands of images without the posterize error, and 0 kept bits gives the black image older Pillow gave."""

import glob
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from inceptionnext.tasks.classification.augment import posterize
from inceptionnext.tasks.classification.data import build_train_loader
from inceptionnext.train import parse_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    p
    for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("_")
)


class _Images(torch.utils.data.Dataset):
    def __init__(self, n=8, size=16):
        rng = np.random.RandomState(0)
        self.images = [Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
        self.transform = None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), 0


def _engine_transform(path):
    """The training transform the engine builds for this config (timm's create_loader, then our fix)."""
    cfg = parse_config(["--config", path, "--workers", "0"])
    size = cfg.img_size or 224
    data_cfg = dict(input_size=(3, size, size), mean=cfg.mean or (0.5,) * 3, std=cfg.std or (0.5,) * 3)
    ds = _Images()
    build_train_loader(ds, cfg, data_cfg, torch.device("cpu"), distributed=False)
    return cfg, ds


def _distinct_augmentations():
    """One config per distinct augmentation (aa string, input size, mean): the ImageNet configs share one."""
    seen = {}
    for p in CONFIGS:
        c = parse_config(["--config", p, "--set", "adapt_to_data=false"])  # the augmentation the file fixes
        if getattr(c, "aa", None):  # a classification key: the dense tasks' configs have none
            seen.setdefault((c.aa, c.img_size, c.mean), p)
    return list(seen.values())


@pytest.mark.parametrize("path", _distinct_augmentations(), ids=lambda p: os.path.relpath(p, REPO))
def test_config_randaugment_runs_on_thousands_of_images(path):
    cfg, ds = _engine_transform(path)
    ops = [t for t in ds.transform.transforms if hasattr(t, "ops")]
    assert ops, f"{path}: aa {cfg.aa} built no RandAugment"
    zero_bits = []
    for op in ops[0].ops:  # count the 0-bit posterize calls, to show the case that crashed was exercised
        if op.name.startswith("Posterize"):
            fn = op.aug_fn
            op.aug_fn = lambda img, bits, *a, _fn=fn, **k: (
                (zero_bits.append(bits) if bits < 1 else None) or _fn(img, bits, *a, **k)
            )
    random.seed(0)
    for i in range(5000):  # RandAugment at the images' own size: the op arguments do not depend on it
        out = ops[0](ds.images[i % len(ds.images)])
        assert out.size == (16, 16)
    if "mstd0.5" in cfg.aa and "inc1" in cfg.aa and "m9" in cfg.aa:
        assert zero_bits, "no 0-bit posterize drawn in 5000 images; the test lost its point"
    x, _ = ds[0]  # and the whole transform, at the config's input size
    assert x.shape[-1] == (cfg.img_size or 224)


def test_zero_bits_posterize_gives_the_black_image_older_pillow_gave():
    img = Image.fromarray(np.random.RandomState(1).randint(0, 256, (8, 8, 3), dtype=np.uint8))
    mask = ~(2**8 - 1)  # Pillow <= 12's mask for 0 kept bits
    expected = np.asarray(img).astype(np.int64) & mask
    assert np.array_equal(np.asarray(posterize(img, 0)), expected) and expected.max() == 0
    for bits in (1, 4):
        assert np.array_equal(np.asarray(posterize(img, bits)), np.asarray(ImageOps.posterize(img, bits)))
    assert posterize(img, 8) is img
    with pytest.raises(ValueError):  # what the fix stands in for: Pillow 13's own answer (older Pillow: black)
        if tuple(int(v) for v in Image.__version__.split(".")[:1]) < (13,):
            raise ValueError("older Pillow")
        ImageOps.posterize(img, 0)
