"""The ImageNet recipes against the official runs (shell scripts plus timm 0.6 train.py defaults): cool-down
epochs, lr held at the recipe's global batch, train/eval interpolation kept apart, AGC sparing the head, fp32."""

import glob
import os

import pytest
import torch
from test_train import make_folder, toy_cfg
from timm.data.transforms import RandomResizedCropAndInterpolation
from timm.scheduler import create_scheduler_v2

from inceptionnext.tasks.classification.data import build_datasets, build_train_loader
from inceptionnext.train import Trainer, apply_overrides, fit, parse_config, plan_batch
from inceptionnext.train.distributed import DistEnv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET = sorted(
    p for p in glob.glob(os.path.join(REPO, "configs", "imagenet", "*.yaml")) if not os.path.basename(p).startswith("_")
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("toy"), classes=3, train=4, val=2)


@pytest.mark.parametrize("path", IMAGENET, ids=os.path.basename)
def test_recipes_run_the_official_epoch_count_with_cooldown(path):
    cfg = parse_config(["--config", path])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    _, total = create_scheduler_v2(
        opt,
        sched=cfg.sched,
        num_epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        min_lr=cfg.min_lr,
        cooldown_epochs=cfg.cooldown_epochs,
        updates_per_epoch=10,
    )
    assert total == (610 if cfg.model == "inceptionnext_a" else 310)


@pytest.mark.parametrize("path", IMAGENET, ids=os.path.basename)
def test_recipes_are_fp32_as_the_official_runs(path):
    assert parse_config(["--config", path]).amp == "none"


def test_fewer_gpus_accumulate_to_keep_the_recipes_global_batch():
    cfg = parse_config(["--config", os.path.join(REPO, "configs", "imagenet", "inceptionnext_t.yaml")])
    for gpus, accum in ((8, 4), (4, 8), (16, 2), (32, 1)):
        got, lr, note = plan_batch(cfg, gpus)
        assert (got, lr) == (accum, 4e-3) and "held as the recipe's" in note
    got, lr, note = plan_batch(cfg, 3)  # 128 x 3 does not divide 4096: scale the lr instead, and say so
    assert got == 1 and lr == pytest.approx(4e-3 * 384 / 4096) and "not a multiple" in note and "scaled" in note
    got, lr, note = plan_batch(apply_overrides(cfg, {"grad_accum": 2}, "test"), 4)  # an explicit choice wins
    assert got == 2 and lr == pytest.approx(4e-3 * 1024 / 4096) and "grad_accum set" in note
    atto = parse_config(["--config", os.path.join(REPO, "configs", "imagenet", "inceptionnext_a.yaml")])
    assert plan_batch(atto, 4)[:2] == (2, 1e-3)  # 160 x 4 x 2 = 1280


def test_train_and_eval_interpolation_are_separate_keys(data, tmp_path):
    cfg = toy_cfg(tmp_path, data, interpolation="bicubic")
    assert cfg.train_interpolation == "random"  # timm's --train-interpolation default
    ds, _, _ = build_datasets(cfg)
    data_cfg = dict(input_size=(3, 32, 32), interpolation="bicubic", crop_pct=0.875, mean=(0.5,) * 3, std=(0.5,) * 3)
    build_train_loader(ds, cfg, data_cfg, torch.device("cpu"), distributed=False)
    crop = next(t for t in ds.transform.transforms if isinstance(t, RandomResizedCropAndInterpolation))
    assert isinstance(crop.interpolation, (list, tuple)) and len(crop.interpolation) == 2  # random of two
    build_train_loader(
        ds,
        apply_overrides(cfg, {"train_interpolation": "bilinear"}, "t"),
        data_cfg,
        torch.device("cpu"),
        distributed=False,
    )
    crop = next(t for t in ds.transform.transforms if isinstance(t, RandomResizedCropAndInterpolation))
    assert "bilinear" in str(crop.interpolation).lower()


def test_agc_clipping_spares_the_head(data, tmp_path):
    """One SGD step with tight AGC: the body's update is clipped, the classifier's is the unclipped one."""
    kw = dict(
        model="_test_plain_net",
        epochs=1,
        batch_size=12,
        opt="momentum",
        momentum=0.0,
        weight_decay=0.0,
        sched="none",
        plot=False,
        lr=0.5,
    )
    free = fit(toy_cfg(tmp_path, data, experiment="free", **kw)).model.state_dict()
    agc = fit(toy_cfg(tmp_path, data, experiment="agc", clip_grad=1e-4, clip_mode="agc", **kw)).model.state_dict()
    assert torch.equal(free["fc.weight"], agc["fc.weight"]) and torch.equal(free["fc.bias"], agc["fc.bias"])
    assert not torch.equal(free["features.0.weight"], agc["features.0.weight"])


def test_amp_none_trains_with_the_official_fp32_numerics(data, tmp_path):
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")  # e.g. set by the user's own script for speed
        Trainer(toy_cfg(tmp_path, data, amp="none"), DistEnv())
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)
