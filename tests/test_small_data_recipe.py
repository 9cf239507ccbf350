"""The small-data recipe that chooses from the training images (adapt_to_data): what it reads from a folder, what
it chooses and why, and that a key the user sets always wins."""

import os

import pytest
from PIL import Image

from inceptionnext.data.folders import DataError
from inceptionnext.tasks.classification.recipe import ImageSetSummary, plan_recipe, summarize_image_folder
from inceptionnext.train import make_config, parse_config
from inceptionnext.train.config_files import save_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRATCH = os.path.join(REPO, "configs", "finetune", "small_scratch.yaml")
PRETRAINED = os.path.join(REPO, "configs", "finetune", "small_pretrained.yaml")


def write_set(root, sizes_per_class, val=2):
    """root/train/<class>/ and root/val/<class>/ with one PNG per (w, h) given for the class."""
    for name, sizes in sizes_per_class.items():
        for split, items in (("train", sizes), ("val", sizes[:val])):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, (w, h) in enumerate(items):
                Image.new("RGB", (w, h), (40 * i % 255, 90, 200)).save(folder / f"{i}.png")
    return root


@pytest.fixture
def wide_set(tmp_path):
    # 3 classes of 20 images: sizes 80x40 (2:1, off square) for half, 70x70 for the rest -> medians 75 / 55
    sizes = [(80, 40)] * 10 + [(70, 70)] * 10
    return write_set(tmp_path / "wide", {"a": sizes, "b": sizes, "c": sizes})


def test_the_summary_counts_images_per_class_and_reads_their_sizes(tmp_path):
    root = write_set(tmp_path / "s", {"x": [(100, 50)] * 3 + [(60, 60)] * 2, "y": [(30, 90)] * 7})
    (root / "train" / "y" / "broken.png").write_bytes(b"not a png")  # counted as an image, left out of the sizes
    s = summarize_image_folder(str(root / "train"))
    assert (s.images, s.classes, s.per_class) == (13, 2, 6.5)
    # sizes of the 12 readable images: longer sides 100 x3, 60 x2, 90 x7; shorter 50 x3, 60 x2, 30 x7
    assert (s.longer_side, s.shorter_side) == (90, 30)
    assert s.off_square == pytest.approx(10 / 12)


def test_a_folder_whose_images_cannot_be_read_is_named(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "t" / c).mkdir(parents=True)
        (tmp_path / "t" / c / "0.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"t: none of its 2 images could be read"):
        summarize_image_folder(str(tmp_path / "t"))


def summary(**kw):
    base = dict(images=240, classes=4, per_class=60, longer_side=90, shorter_side=50, off_square=0.5)
    return ImageSetSummary(**{**base, **kw})


def test_the_input_size_follows_the_side_the_crop_keeps_within_its_bounds():
    def size(crop_mode="border", weights=False, **kw):
        return plan_recipe(summary(**kw), 16, crop_mode, weights)["img_size"][0]

    assert size(longer_side=40) == 48 and size(longer_side=37) == 32 and size(longer_side=10) == 32
    assert size(longer_side=90) == 64  # from scratch: at most 64
    assert size(longer_side=90, weights=True) == 96 and size(longer_side=900, weights=True) == 224
    assert size("center", longer_side=90, shorter_side=50) == 48  # a centre crop keeps the shorter side
    why = plan_recipe(summary(), 16, "border", False)["img_size"][1]
    assert why == "the images' median longer side is 90 px, at most 64 px from scratch"
    assert plan_recipe(summary(longer_side=64), 16, "border", False)["img_size"][1].endswith("side is 64 px")


def test_the_schedule_gives_updates_per_class_within_bounds():
    def epochs(weights=False, **kw):
        return plan_recipe(summary(**kw), 16, "border", weights)["epochs"]

    # 240 images at batch 16: 15 updates per epoch
    assert epochs(classes=4)[0] == 40  # 600 updates (the floor; 4 x 150 = 600)
    assert epochs(classes=6)[0] == 60  # 900
    assert epochs(classes=10)[0] == 100 and epochs(classes=40)[0] == 100  # 1500, the ceiling
    assert epochs(classes=2)[0] == 40  # the floor
    assert epochs(classes=6, weights=True)[0] == 30  # 450 from weights
    assert epochs(classes=2, weights=True)[0] == 20 and epochs(classes=40, weights=True)[0] == 50
    assert epochs(classes=6)[1] == "900 updates for 6 classes at 15 updates per epoch"
    # two processes share each step: half the updates per epoch, so twice the epochs
    assert plan_recipe(summary(classes=6, images=320), 16, "border", False)["epochs"][0] == 45
    assert plan_recipe(summary(classes=6, images=320), 16, "border", False, processes=2)["epochs"][0] == 90
    assert plan_recipe(summary(images=10), 16, "border", False)["epochs"][0] == 600  # smaller than a batch


@pytest.mark.parametrize(
    "per_class, scale, jitter, aa",
    [(30, (0.6, 1.0), 0.0, None), (299, (0.6, 1.0), 0.0, None), (300, (0.35, 1.0), 0.4, None),
     (1000, (0.08, 1.0), 0.4, "rand-m9-mstd0.5-inc1")],
)  # fmt: skip
def test_augmentation_grows_with_the_images_per_class(per_class, scale, jitter, aa):
    plan = plan_recipe(summary(per_class=per_class), 16, "border", False)
    assert (plan["scale"][0], plan["color_jitter"][0], plan["aa"][0]) == (scale, jitter, aa)
    assert plan["aa"][1].startswith(f"{per_class} images per class: ")


def test_the_recipe_fills_what_the_run_leaves_unset_and_says_why(wide_set, capsys):
    cfg = parse_config(["--config", SCRATCH, "--data-dir", str(wide_set)])
    out = capsys.readouterr().out
    # 60 images at batch 16: 3 updates per epoch; 3 classes: 600 updates -> 200 epochs
    assert (cfg.img_size, cfg.epochs, cfg.scale, cfg.color_jitter, cfg.aa) == (64, 200, (0.6, 1.0), 0.0, None)
    assert cfg.crop_mode == "border" and cfg.batch_size == 16  # the recipe's own keys
    assert "chosen from the training data (adapt_to_data):\n" in out
    assert "  img_size: 64 (the images' median longer side is 75 px, at most 64 px from scratch)\n" in out
    assert "  epochs: 200 (600 updates for 3 classes at 3 updates per epoch)\n" in out
    assert "  scale: [0.6, 1] (20 images per class: crops keep most of the object" in out
    # from weights: half the updates, and the full median side
    tuned = parse_config(["--config", PRETRAINED, "--data-dir", str(wide_set), "--pretrained", "false", "--weights",
                          "w.pth"])  # fmt: skip
    assert (tuned.img_size, tuned.epochs) == (80, 100)


def test_a_key_the_user_sets_is_never_changed(wide_set, tmp_path, capsys):
    cfg = parse_config(["--config", SCRATCH, "--data-dir", str(wide_set), "--img-size", "96", "--set", "epochs=7"])
    out = capsys.readouterr().out
    assert (cfg.img_size, cfg.epochs, cfg.aa) == (96, 7, None)
    assert "img_size:" not in out and "epochs:" not in out and "  aa: null" in out
    # a config file of one's own that sets a key
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"_base_: {SCRATCH}\nscale: [0.2, 1.0]\n")
    assert parse_config(["--config", str(mine), "--data-dir", str(wide_set)]).scale == (0.2, 1.0)
    # from Python
    cfg = make_config(adapt_to_data=True, data_dir=str(wide_set), batch_size=16, color_jitter=0.3)
    assert (cfg.color_jitter, cfg.epochs, cfg.img_size) == (0.3, 200, 48)  # no crop_mode: the shorter side, 55


def test_off_by_default_and_refused_for_a_dataset_with_no_folder(wide_set, capsys):
    cfg = parse_config(["--data-dir", str(wide_set)])
    assert (cfg.img_size, cfg.epochs) == (None, 300) and capsys.readouterr().out == ""
    with pytest.raises(DataError, match=r"adapt_to_data reads the training images of an image folder .* dataset "
                                        r"digits has none to read: set adapt_to_data: false"):  # fmt: skip
        parse_config(["--config", SCRATCH, "--dataset", "digits"])
    with pytest.raises(DataError, match="no data directory given"):
        parse_config(["--config", SCRATCH])


def test_a_runs_config_yaml_keeps_its_choices_when_the_folder_changes(wide_set, tmp_path, capsys):
    """A run's config.yaml (and its checkpoints' config) holds every key, so resuming from it chooses nothing
    again, even when the folder has since grown."""
    cfg = parse_config(["--config", SCRATCH, "--data-dir", str(wide_set)])
    save_config(cfg, str(tmp_path / "config.yaml"))
    saved = (tmp_path / "config.yaml").read_text()
    assert "img_size: 64\n" in saved and "adapt_to_data: true\n" in saved and "color_jitter: 0.0\n" in saved
    write_set(wide_set, {"d": [(400, 400)] * 300})  # a fourth, larger class: a new plan would differ
    assert parse_config(["--config", SCRATCH, "--data-dir", str(wide_set)]).epochs == 28  # 600 / (360 // 16)
    capsys.readouterr()
    again = parse_config(["--config", str(tmp_path / "config.yaml")])
    assert (again.img_size, again.epochs, again.scale, again.color_jitter) == (64, 200, (0.6, 1.0), 0.0)
    assert "chosen from the training data" not in capsys.readouterr().out
