"""A warm-up that takes more than a quarter of the run is named by its key when the run starts, with the length that
would be a quarter; the configs as shipped warm up for less and say nothing."""

import os

import pytest
from test_train import make_folder, toy_cfg

from inceptionnext.train import fit, parse_config
from inceptionnext.train.engine import warmup_note

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DETECTION_DEMO = os.path.join(REPO, "configs", "detection", "demo_fasterrcnn_inceptionnext_a.yaml")


def test_the_detection_demo_warm_up_on_a_short_run_of_ones_own_is_named():
    cfg = parse_config(["--config", DETECTION_DEMO, "--epochs", "4"])  # its 30 warm-up updates, a small set: 10 a epoch
    assert warmup_note(cfg, updates_per_epoch=10) == (
        "warning: the lr warm-up takes 30 of the run's 40 updates (warmup_iters 30, 10 updates an epoch), so the lr "
        "peaks late in the run; a quarter of the run is warmup_iters 10"
    )
    demo = parse_config(["--config", DETECTION_DEMO])  # the demo itself: 800 training images, 100 updates an epoch
    assert warmup_note(demo, updates_per_epoch=100) is None


@pytest.mark.parametrize(
    "argv, per_epoch, expected",
    [
        (
            ["--epochs", "10"],
            5,
            "takes 50 of the run's 50 updates (warmup_epochs 20, 5 updates an epoch), so the lr "
            "peaks only after the run ends; a quarter of the run is warmup_epochs 2",
        ),
        (["--epochs", "8", "--warmup-epochs", "2"], 5, None),  # exactly a quarter
        (["--epochs", "8", "--warmup-epochs", "3"], 5, "(warmup_epochs 3, 5 updates an epoch)"),
        (
            ["--iters", "100", "--eval-interval", "50", "--warmup-iters", "50"],
            1,
            "takes 50 of the run's 100 updates (warmup_iters 50), so the lr peaks late",
        ),
        (["--iters", "800", "--eval-interval", "200", "--warmup-iters", "50"], 1, None),
    ],
)
def test_warm_up_is_named_only_past_a_quarter_of_the_run(argv, per_epoch, expected):
    note = warmup_note(parse_config(argv), per_epoch)
    assert note is None if expected is None else expected in note


SHIPPED = sorted(
    os.path.join(folder, name)
    for folder in os.listdir(os.path.join(REPO, "configs"))
    for name in os.listdir(os.path.join(REPO, "configs", folder))
    if not name.startswith("_")
)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_warm_up_for_at_most_a_quarter_of_their_run(name, tmp_path):
    data = make_folder(tmp_path / "data", classes=2, train=8, val=2)  # for the recipes that read their images
    cfg = parse_config(["--config", os.path.join(REPO, "configs", name), "--data-dir", str(data)])
    assert warmup_note(cfg, updates_per_epoch=100) is None


def test_a_run_says_when_its_warm_up_eats_it(tmp_path, capsys):
    data = make_folder(tmp_path / "data", classes=2, train=8, val=2)  # 2 updates an epoch
    fit(toy_cfg(tmp_path, data, model="_test_plain_net", epochs=2, warmup_epochs=1, plot=False))
    assert (
        "warning: the lr warm-up takes 2 of the run's 4 updates (warmup_epochs 1, 2 updates an epoch), so the lr "
        "peaks late in the run; a quarter of the run is warmup_iters 1 with warmup_epochs 0" in capsys.readouterr().out
    )
