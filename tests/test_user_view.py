"""What a user sees (issue 21): the small-set recipe learns, `train` says what it started from and lists what it
wrote, the worker count fits the machine without torch's warning, parsers refuse prefixes, unknown keys suggest
their usual aliases, and the pictures explain themselves (titles, labels and legends read back from matplotlib)."""

import argparse
import importlib
import logging
import os
import stat
import warnings

import numpy as np
import pytest
import timm
import torch
from test_train import make_folder, toy_cfg

from inceptionnext.data.shapes import CLASSES, draw_shape, make_shapes_folder
from inceptionnext.train import ConfigError, fit, parse_config
from inceptionnext.train.aliases import ALIASES, suggest_keys
from inceptionnext.train.engine import create_training_model
from inceptionnext.train.overrides import known_keys
from inceptionnext.utils import workers as cpu_workers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("toy"), classes=3, train=8, val=4)


# ------------------------------------------------------------------------------------------- the weights: line
def test_weights_line_names_the_file_and_the_reinitialised_head(tmp_path, data, capsys):
    src = timm.create_model("inceptionnext_a", num_classes=10)
    path = tmp_path / "digits.pth"
    torch.save(src.state_dict(), path)
    res = fit(toy_cfg(tmp_path, data, epochs=1, weights=str(path), plot=False))
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.strip().startswith("weights:"))
    assert str(path) in line and "10-class head re-initialised for 3 classes" in line
    # the body was loaded: the first stage's weights left the file unchanged only by training, not by init
    assert res.model.head.fc2.weight.shape[0] == 3


def test_weights_line_keeps_a_head_that_fits(tmp_path):
    src = timm.create_model("inceptionnext_a", num_classes=3)
    path = tmp_path / "three.pth"
    torch.save(src.state_dict(), path)
    model = create_training_model("inceptionnext_a", 3, weights=str(path))
    assert torch.equal(model.head.fc2.weight, src.head.fc2.weight)  # the head was loaded, not re-initialised
    assert "the 3-class head too" in model.start_note


def test_weights_line_from_scratch_and_the_summary_lists_every_file(tmp_path, data, capsys):
    res = fit(toy_cfg(tmp_path, data, epochs=1, plot=True))
    out = capsys.readouterr().out
    assert "  weights: random initialisation" in out
    summary = out[out.index("done:") :]
    written = sorted(n for n in os.listdir(res.out_dir) if n != ".lock")  # the lock is the folder's, not an output
    assert {"config.yaml", "curves.png", "last.pth", "log.csv", "model_best.pth"} <= set(written)
    for name in written:
        assert os.path.join(res.out_dir, name) in summary, name


# ------------------------------------------------------------------------------------------- workers
def test_workers_default_to_the_cores_and_a_larger_request_is_capped_and_said(monkeypatch):
    monkeypatch.setattr(cpu_workers, "available_cpus", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert cpu_workers.loader_workers(None) == (2, None)
    assert cpu_workers.loader_workers(0) == (0, None)
    n, note = cpu_workers.loader_workers(8)
    assert n == 2 and "workers: 8 asked for" in note and "2 cores" in note
    monkeypatch.setattr(cpu_workers, "available_cpus", lambda: 64)
    assert cpu_workers.loader_workers(None) == (cpu_workers.AUTO_MAX, None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun: the cores are shared between the processes
    assert cpu_workers.loader_workers(None) == (8, None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert cpu_workers.loader_workers(None) == (2, None)


def test_train_says_when_workers_exceed_the_cores_and_torch_stays_quiet(tmp_path, data, capsys):
    too_many = cpu_workers.available_cpus() + 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit(toy_cfg(tmp_path, data, epochs=1, workers=too_many, plot=False))
    out = capsys.readouterr().out
    assert f"workers: {too_many} asked for" in out
    assert not [w for w in caught if "worker" in str(w.message)], [str(w.message) for w in caught]
    import yaml

    saved = yaml.safe_load(open(os.path.join(res.out_dir, "config.yaml")))
    assert saved["workers"] == cpu_workers.available_cpus()


# ------------------------------------------------------------------------------------------- parsers
def test_every_parser_refuses_abbreviated_options(capsys, monkeypatch):
    """Each command's --help builds its parser; every parser built must have prefix matching off (argparse would
    otherwise take --warmup-epoch as --warmup-epochs, --work as --workers ...)."""
    built = []
    real = argparse.ArgumentParser.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        built.append(self)

    monkeypatch.setattr(argparse.ArgumentParser, "__init__", spy)
    from inceptionnext.cli import COMMANDS, main

    for command in COMMANDS:
        before = len(built)
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert len(built) > before, command
    with pytest.raises(SystemExit):
        importlib.import_module("inceptionnext.ops.bench").main(["--help"])
    capsys.readouterr()
    assert built and all(p.allow_abbrev is False for p in built), [p.prog for p in built if p.allow_abbrev]


def test_train_refuses_a_prefix_of_a_key():
    with pytest.raises(ConfigError, match="unknown config key 'warmup_epoch'.*did you mean warmup_epochs"):
        parse_config(["--warmup-epoch", "3"])
    assert parse_config(["--warmup-epochs", "3"]).warmup_epochs == 3


def test_a_schedule_key_the_run_does_not_read_is_refused_not_ignored(tmp_path):
    seg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "segmentation")
    demo = os.path.join(seg, "demo_fpn_inceptionnext_a.yaml")  # an iteration run (iters, eval_interval)
    with pytest.raises(ConfigError, match=r"'epochs' in the command line counts epochs; this run counts updates"):
        parse_config(["--config", demo, "--epochs", "5"])
    with pytest.raises(ConfigError, match=r"'warmup_epochs' in --set counts epochs.*\(warm-up: warmup_iters\)"):
        parse_config(["--config", demo, "--set", "warmup_epochs=3"])
    with pytest.raises(ConfigError, match=r"'eval_interval' in the command line is read by iteration runs only"):
        parse_config(["--epochs", "5", "--eval-interval", "10"])
    # what a run reads is taken, and a key at its default (as in a run's dumped config.yaml) passes
    assert parse_config(["--config", demo, "--eval-interval", "100", "--set", "epochs=300"]).eval_interval == 100
    assert parse_config(["--epochs", "5", "--warmup-iters", "30", "--warmup-epochs", "0"]).warmup_iters == 30


def test_train_help_names_every_task(capsys):
    from inceptionnext.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Train an image classifier" not in text
    assert "classifier, a segmentation or a detection model" in text


# ------------------------------------------------------------------------------------------- suggestions
@pytest.mark.parametrize(
    "typed, meant",
    [
        ("learning_rate", "lr"),
        ("num_workers", "workers"),
        ("num_epochs", "epochs"),
        ("optimizer", "opt"),
        ("wd", "weight_decay"),
        ("label_smoothing", "smoothing"),
        ("image_size", "img_size"),
        ("drop_path_rate", "drop_path"),
        ("max_iters", "iters"),
    ],
)
def test_unknown_keys_suggest_the_key_their_alias_means(tmp_path, typed, meant):
    assert suggest_keys(typed, known_keys())[0] == meant
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"{typed}: 1\n")
    with pytest.raises(ConfigError, match=rf"unknown config key '{typed}' in .*did you mean {meant}\b"):
        parse_config(["--config", str(cfg_file)])


def test_aliases_name_real_keys_and_never_shadow_one():
    keys = set(known_keys())
    assert set(ALIASES) <= keys
    assert not {a for aliases in ALIASES.values() for a in aliases} & keys
    assert suggest_keys("drop_pth", keys)[0] == "drop_path"  # spelling matches still come through


# ------------------------------------------------------------------------------------------- smaller slips
def test_logged_lr_is_the_one_the_last_update_applied(tmp_path, data):
    # 3 updates per epoch, warm-up over the first epoch from 1e-5: epoch 1's last update is 2/3 of the way up
    res = fit(toy_cfg(tmp_path, data, epochs=3, warmup_epochs=1, warmup_lr=1e-5, lr=3e-3, sched="cosine", plot=False))
    first = res.history[0]["lr"]
    assert first == pytest.approx(1e-5 + (3e-3 - 1e-5) * 2 / 3, rel=1e-3)


def test_digits_config_comment_counts_the_split():
    from inceptionnext.data.digits import DigitsDataset

    text = open(os.path.join(REPO, "configs", "demo", "digits_inceptionnext_a.yaml")).read()
    n_train, n_val = len(DigitsDataset("train", 8)), len(DigitsDataset("val", 8))
    assert f"{n_train:,} train / {n_val:,} val images" in text


def test_demo_data_folder_has_ordinary_permissions(tmp_path):
    from inceptionnext.tasks.detection.scenes import DemoSpec, ensure_demo_data

    root = ensure_demo_data(str(tmp_path / "data" / "digits_detection"), DemoSpec(train_images=2, val_images=1))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o777 & ~mask


def test_quantize_keeps_the_cuda_home_notice_quiet(caplog):
    from inceptionnext.deploy.quantize import _quiet_cpp_extension

    log = logging.getLogger("torch.utils.cpp_extension")
    before = log.level
    with _quiet_cpp_extension():
        assert not log.isEnabledFor(logging.WARNING)
        log.warning("No CUDA runtime is found, using CUDA_HOME='/usr/local'")
    assert log.level == before
    assert "No CUDA runtime" not in caplog.text


# ------------------------------------------------------------------------------------------- the generated set
def test_shapes_folder_is_an_image_folder_of_distinct_classes(tmp_path):
    counts = make_shapes_folder(str(tmp_path), train=4, val=2, size=32, seed=1)
    assert counts == {"train": 12, "val": 6}
    for split, n in (("train", 4), ("val", 2)):
        assert sorted(os.listdir(tmp_path / split)) == list(CLASSES)
        for c in CLASSES:
            assert len(os.listdir(tmp_path / split / c)) == n
    # the same seed draws the same image; the classes differ in their mean colour
    a = np.asarray(draw_shape("circle", 32, np.random.RandomState(3)))
    assert np.array_equal(a, np.asarray(draw_shape("circle", 32, np.random.RandomState(3))))
    with pytest.raises(ValueError, match="unknown class 'square'"):
        draw_shape("square")


# ------------------------------------------------------------------------------------------- pictures
def _texts(legend):
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


def _close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_curves_name_only_what_they_draw_and_leave_out_a_flat_series():
    from inceptionnext.train.logs import curves_figure

    history = [
        dict(epoch=e, lr=1e-3, train_loss=1.0 / e, val_loss=1.1 / e, val_top1=50 + 10 * e, val_top5=100.0)
        for e in range(1, 5)
    ]  # 3 classes: top-5 is 100 at every epoch; no EMA
    fig = curves_figure(history, title="inceptionnext_a (run)")
    try:
        loss, metric = fig.axes
        assert fig._suptitle.get_text() == "inceptionnext_a (run)"
        assert loss.get_title() == "loss: train, validation" and _texts(loss.get_legend()) == ["train", "validation"]
        assert _texts(metric.get_legend()) == ["top-1"] and len(metric.get_lines()) == 1
        assert metric.get_title().startswith("validation top-1") and "EMA" not in metric.get_title()
        assert "not drawn: top-5 100 throughout" in metric.get_title()
        assert loss.get_xlabel() == metric.get_xlabel() == "epoch" and metric.get_ylabel() == "%"
        assert [t for t in metric.get_xticks()] == [1, 2, 3, 4]
    finally:
        _close(fig)


def test_curves_of_an_iteration_run_count_iterations_and_name_no_absent_metric():
    from inceptionnext.tasks.detection.task import DetectionTask
    from inceptionnext.train.logs import curves_figure

    history = [
        dict(epoch=r, iter=200 * r, lr=1e-3, train_loss=2.0 / r, val_map=5.0 * r, val_map_50=9.0 * r)
        for r in range(1, 5)
    ]  # Faster R-CNN: no mask mAP
    fig = curves_figure(history, metrics=DetectionTask.plot_metrics)
    try:
        loss, metric = fig.axes
        assert loss.get_xlabel() == metric.get_xlabel() == "iteration"
        assert list(metric.get_xticks()) == [200, 400, 600, 800]
        assert _texts(metric.get_legend()) == ["mAP", "mAP@0.5"]
        assert "mask" not in metric.get_title() and "EMA" not in metric.get_title()
        assert _texts(loss.get_legend()) == ["train"] and loss.get_title() == "loss: train"
    finally:
        _close(fig)


def test_grid_figure_draws_every_panel_at_one_scale():
    from inceptionnext.utils.plots import grid_figure

    small, large = np.zeros((32, 32, 3), np.uint8), np.zeros((64, 48, 3), np.uint8)
    fig = grid_figure([[small, small], [large, large]], ["a", "b"], legend=[("cat", (255, 0, 0))])
    try:
        axes = fig.axes
        assert {ax.get_xlim() for ax in axes} == {(0.0, 48.0)} and {ax.get_ylim() for ax in axes} == {(64.0, 0.0)}
        assert {tuple(a.get_position().size.round(6)) for a in axes}.__len__() == 1  # equal panels
        assert axes[0].images[0].get_extent() == [0, 32, 32, 0] and axes[2].images[0].get_extent() == [0, 48, 64, 0]
    finally:
        _close(fig)


class _SegVal:
    """Two val scenes of different sizes: background (0) with a square of class 2, and a few ignored pixels."""

    def load(self, i):
        side = 24 if i == 0 else 40
        img = torch.full((3, side, side), 120, dtype=torch.uint8)
        mask = torch.zeros((side, side), dtype=torch.int64)
        mask[4:12, 4:12] = 2
        mask[0, 0] = 255
        return img, mask

    def transform(self, img, mask):
        return img.float() / 255, mask

    def __len__(self):
        return 2


class _PredictsOne(torch.nn.Module):
    def forward(self, x):
        logits = torch.zeros(1, 3, *x.shape[-2:])
        logits[:, 1] = 1.0  # class "road" everywhere
        return logits


def test_segmentation_overlays_have_column_titles_a_legend_and_an_untinted_background():
    from inceptionnext.tasks.segmentation.config import SegmentationConfig
    from inceptionnext.tasks.segmentation.draw import overlay, untinted_classes
    from inceptionnext.tasks.segmentation.task import SegmentationTask

    task = SegmentationTask.__new__(SegmentationTask)
    task.cfg, task.device = SegmentationConfig(overlays=2, iters=400, eval_interval=200), torch.device("cpu")
    task.val_set, task.class_names, task.num_classes = _SegVal(), ["background", "road", "car"], 3
    fig = task.overlay_figure(_PredictsOne(), epoch=2)
    try:
        titles = [ax.get_title() for ax in fig.axes[:3]]
        assert titles == ["image", "ground truth", "prediction (iteration 400)"]
        legend = _texts(fig.legends[0])
        assert legend == ["background (not tinted)", "road", "car", "unlabelled (ignored, not tinted)"]
        assert fig.legends[0].get_title().get_text() == "classes"
        assert {ax.get_xlim() for ax in fig.axes} == {(0.0, 40.0)}  # the 24 px scene at the 40 px one's scale
    finally:
        _close(fig)
    assert untinted_classes(["Background", "x"]) == (0,)
    img = np.full((2, 2, 3), 100, np.uint8)
    out = overlay(img, np.array([[0, 1], [1, 255]]), np.array([[0, 255, 0], [255, 0, 0]], np.float32), 0.5, (0,))
    assert (out[0, 0] == 100).all() and (out[1, 1] == 100).all() and out[0, 1, 0] > 100


def test_mask_png_is_a_palette_png_of_class_indices(tmp_path):
    from PIL import Image

    from inceptionnext.tasks.segmentation.infer import mask_png

    pred = np.array([[0, 1, 2], [2, 2, 1]])
    colours = np.array([[20, 200, 20], [200, 30, 30], [30, 30, 200]], np.float32)
    mask_png(pred, colours, black=(0,)).save(tmp_path / "m.png")
    back = Image.open(tmp_path / "m.png")
    assert back.mode == "P" and np.array_equal(np.asarray(back), pred)
    pal = back.getpalette()
    assert pal[0:3] == [0, 0, 0] and pal[3:6] == [200, 30, 30] and pal[6:9] == [30, 30, 200]
    assert np.asarray(back.convert("RGB")).max() == 200  # a viewer sees colours, not near-black 0/1/2


def test_detections_picture_puts_ground_truth_beside_the_detections():
    from inceptionnext.tasks.detection.draw import truth_and_detections_figure

    images = [torch.rand(3, 48, 48), torch.rand(3, 32, 40)]
    targets = [
        dict(boxes=torch.tensor([[4.0, 4.0, 20.0, 30.0]]), labels=torch.tensor([3])),
        dict(boxes=torch.tensor([[2.0, 2.0, 12.0, 12.0]]), labels=torch.tensor([1])),
    ]
    dets = [
        dict(
            boxes=torch.tensor([[5.0, 5.0, 21.0, 29.0], [1.0, 1.0, 9.0, 9.0]]),
            labels=torch.tensor([3, 2]),
            scores=torch.tensor([0.9, 0.2]),
        ),  # the 0.2 one is below the threshold: not drawn, not named
        dict(boxes=torch.zeros((0, 4)), labels=torch.zeros(0, dtype=torch.int64), scores=torch.zeros(0)),
    ]
    # labels are 1..K (0 is the detectors' background): 1 cat, 2 dog, 3 bird
    fig = truth_and_detections_figure(images, targets, dets, ["cat", "dog", "bird"], title="after epoch 3")
    try:
        assert [ax.get_title() for ax in fig.axes[:2]] == ["ground truth", "detections (score >= 0.5)"]
        assert [fig.axes[i].get_ylabel() for i in (0, 2)] == ["val 0", "val 1"]
        assert _texts(fig.legends[0]) == ["cat", "bird"]  # the dog scored 0.2: neither drawn nor named
        assert fig._suptitle.get_text() == "after epoch 3"
        assert {ax.get_xlim() for ax in fig.axes} == {(0.0, 48.0 * 4)}  # one enlargement (x4) for both images
    finally:
        _close(fig)


# ------------------------------------------------------------------------------------------- the small-set recipe
@pytest.mark.slow
def test_small_set_recipe_learns_a_generated_three_class_set(tmp_path, capsys):
    """configs/finetune/small_scratch.yaml from scratch on a set the size of the issue's (60 train / 20 val
    images per class, 3 classes): at least 90% val top-1. 10 epochs (not the recipe's 600 updates) keep it short."""
    make_shapes_folder(str(tmp_path / "shapes"), train=60, val=20, size=64, seed=0)
    cfg = parse_config(
        [
            "--config",
            os.path.join(REPO, "configs", "finetune", "small_scratch.yaml"),
            "--data-dir",
            str(tmp_path / "shapes"),
            "--output",
            str(tmp_path / "out"),
            "--epochs",
            "10",
            "--min-updates",
            "null",
            "--progress",
            "false",
            "--plot",
            "false",
        ]
    )
    res = fit(cfg)
    out = capsys.readouterr().out
    assert "weights: random initialisation" in out and "180 train / 60 val images at 64px" in out
    assert res.best_top1 >= 90.0, [round(r["val_top1"], 1) for r in res.history]


def test_small_recipes_are_light_and_the_pretrained_one_starts_from_weights(tmp_path):
    make_shapes_folder(str(tmp_path / "shapes"), train=20, val=2, size=64, seed=0)
    recipe = ["--data-dir", str(tmp_path / "shapes"), "--config"]
    scratch = parse_config(recipe + [os.path.join(REPO, "configs", "finetune", "small_scratch.yaml")])
    tuned = parse_config(recipe + [os.path.join(REPO, "configs", "finetune", "small_pretrained.yaml")])
    for cfg in (scratch, tuned):
        assert cfg.aa is None and cfg.mixup == cfg.cutmix == cfg.reprob == 0 and cfg.layer_decay is None
        assert cfg.batch_size == 16 and cfg.workers is None and cfg.img_size == 64
    assert not scratch.pretrained and tuned.pretrained and tuned.epochs < scratch.epochs


def test_classification_prediction_grid_says_right_and_wrong(monkeypatch, tmp_path):
    import numpy as np

    from inceptionnext.tasks.classification import draw

    kept = {}
    monkeypatch.setattr(draw, "save_figure", lambda fig, path, dpi=100: kept.update(fig=fig, path=path))
    images = np.zeros((3, 8, 8, 3))
    draw.prediction_grid(
        images, [0, 1, 2], [0, 2, 2], ["cat", "dog", "fox"], "Validation after epoch 3", tmp_path / "p.png", columns=4
    )
    fig = kept["fig"]
    assert fig._suptitle.get_text().startswith("Validation after epoch 3: 2/3 right")
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == ["cat", "fox\n(true: dog)", "fox"]
    colours = [ax.title.get_color() for ax in fig.axes if ax.get_title()]
    assert colours == ["tab:green", "tab:red", "tab:green"]
