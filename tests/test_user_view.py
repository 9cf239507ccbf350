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

from inceptionnext import cpu_workers
from inceptionnext.shapes import CLASSES, draw_shape, make_shapes_folder
from inceptionnext.train import ConfigError, fit, parse_config
from inceptionnext.train.config import ALIASES, FIELDS, suggest_keys
from inceptionnext.train.engine import create_model
from test_train import make_folder, toy_cfg

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
    model = create_model("inceptionnext_a", 3, weights=str(path))
    assert torch.equal(model.head.fc2.weight, src.head.fc2.weight)  # the head was loaded, not re-initialised
    assert "the 3-class head too" in model.start_note


def test_weights_line_from_scratch_and_the_summary_lists_every_file(tmp_path, data, capsys):
    res = fit(toy_cfg(tmp_path, data, epochs=1))
    out = capsys.readouterr().out
    assert "  weights: random initialisation" in out
    summary = out[out.index("done:"):]
    written = sorted(os.listdir(res.out_dir))
    assert written == ["config.yaml", "curves.png", "last.pth", "log.csv", "model_best.pth"]
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
    from inceptionnext.cli import main
    from inceptionnext.cli import COMMANDS
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


def test_train_help_names_every_task(capsys):
    from inceptionnext.cli import main
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Train an image classifier" not in text
    assert "classifier, a segmentation or a detection model" in text


# ------------------------------------------------------------------------------------------- suggestions
@pytest.mark.parametrize("typed, meant", [("learning_rate", "lr"), ("num_workers", "workers"),
                                          ("num_epochs", "epochs"), ("optimizer", "opt"), ("wd", "weight_decay"),
                                          ("label_smoothing", "smoothing"), ("image_size", "img_size"),
                                          ("drop_path_rate", "drop_path"), ("max_iters", "iters")])
def test_unknown_keys_suggest_the_key_their_alias_means(tmp_path, typed, meant):
    assert suggest_keys(typed)[0] == meant
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"{typed}: 1\n")
    with pytest.raises(ConfigError, match=rf"unknown config key '{typed}' in .*did you mean {meant}\b"):
        parse_config(["--config", str(cfg_file)])


def test_aliases_name_real_keys_and_never_shadow_one():
    assert set(ALIASES) <= set(FIELDS)
    assert not {a for aliases in ALIASES.values() for a in aliases} & set(FIELDS)
    assert suggest_keys("drop_pth")[0] == "drop_path"  # spelling matches still come through


# ------------------------------------------------------------------------------------------- smaller slips
def test_logged_lr_is_the_one_the_last_update_applied(tmp_path, data):
    # 3 updates per epoch, warm-up over the first epoch from 1e-5: epoch 1's last update is 2/3 of the way up
    res = fit(toy_cfg(tmp_path, data, epochs=3, warmup_epochs=1, warmup_lr=1e-5, lr=3e-3, sched="cosine",
                      plot=False))
    first = res.history[0]["lr"]
    assert first == pytest.approx(1e-5 + (3e-3 - 1e-5) * 2 / 3, rel=1e-3)


def test_digits_config_comment_counts_the_split():
    from inceptionnext.train.data import DigitsDataset
    text = open(os.path.join(REPO, "configs", "demo", "digits_inceptionnext_a.yaml")).read()
    n_train, n_val = len(DigitsDataset("train", 8)), len(DigitsDataset("val", 8))
    assert f"{n_train:,} train / {n_val:,} val images" in text


def test_demo_data_folder_has_ordinary_permissions(tmp_path):
    from inceptionnext.detection.demo_data import DemoSpec, ensure_demo_data
    root = ensure_demo_data(str(tmp_path / "data" / "digits_detection"), DemoSpec(train_images=2, val_images=1))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o777 & ~mask


def test_quantize_keeps_the_cuda_home_notice_quiet(caplog):
    from inceptionnext.quantize import _quiet_cpp_extension
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
