"""Fine-tuning options: early stopping on the metric that picks model_best.pth, class balance (sampler or loss
weights), and crop_mode followed by training, validate, predict and the exported preprocessing."""

import collections

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.utils.class_weight import compute_class_weight
from test_train import make_folder, toy_cfg

from inceptionnext.data.images import data_config_for
from inceptionnext.model_file import load_model, portable_cfg
from inceptionnext.tasks.classification import task as classification_task
from inceptionnext.tasks.classification.data import whole_image_step
from inceptionnext.tasks.classification.evaluate import run_validation
from inceptionnext.train import Trainer, TrainError, fit
from inceptionnext.train.checkpoint import load_checkpoint_file
from inceptionnext.train.distributed import DistEnv


def test_early_stopping_ends_the_run_after_patience_validations_without_a_new_best(tmp_path, monkeypatch, capsys):
    scores = {1: 10.0, 2: 20.0, 3: 15.0, 4: 19.0, 5: 50.0}
    monkeypatch.setattr(
        classification_task,
        "evaluate_with_report",
        lambda *a, desc="", **k: ({"loss": 1.0, "top1": scores[int(desc.split()[-1])], "top5": 100.0}, None),
    )
    data = make_folder(tmp_path / "d", classes=2, train=4, val=2)
    res = fit(toy_cfg(tmp_path, data, model="_test_tiny_net", epochs=5, patience=2))
    assert res.epochs_done == 4 and res.best_epoch == 2  # epochs 3 and 4 did not beat 20; epoch 5 never ran
    said = capsys.readouterr().out
    assert "early stop after epoch 4/5: no better val top-1 than 20.00 (epoch 2) in 2 validations (patience)" in said
    assert load_checkpoint_file(res.last_checkpoint)["epoch"] == 4


def _imbalanced(root):
    make_folder(root, classes=2, train=2, val=1)  # class_1: 2 training images
    extra = make_folder(root / "more", classes=1, train=6, val=0)  # 6 more of class_0
    for i, p in enumerate(sorted((extra / "train" / "class_0").glob("*.png"))):
        p.rename(root / "train" / "class_0" / f"extra_{i}.png")
    return root


def test_class_balance_loss_weighs_each_class_as_scikit_learns_balanced_weights(tmp_path):
    data = _imbalanced(tmp_path / "d")
    trainer = Trainer(toy_cfg(tmp_path, data, model="_test_tiny_net", class_balance="loss"), DistEnv())
    targets = [0] * 8 + [1] * 2
    want = compute_class_weight("balanced", classes=np.array([0, 1]), y=targets)  # 10/(2*8), 10/(2*2)
    assert trainer.task.criterion.weight.tolist() == pytest.approx(want.tolist())
    with pytest.raises(TrainError, match="class_balance: loss weighs hard labels"):
        Trainer(toy_cfg(tmp_path, data, model="_test_tiny_net", class_balance="loss", mixup=0.8), DistEnv())


def test_class_balance_sampler_draws_every_class_about_equally_often(tmp_path):
    data = _imbalanced(tmp_path / "d")
    trainer = Trainer(toy_cfg(tmp_path, data, model="_test_tiny_net", class_balance="sampler"), DistEnv())
    sampler = trainer.train_loader.sampler
    assert isinstance(sampler, torch.utils.data.WeightedRandomSampler) and len(sampler) == 10
    targets = [t for _, t in trainer.train_set.reader.samples]
    torch.manual_seed(0)
    drawn = collections.Counter(targets[i] for _ in range(200) for i in sampler)
    assert drawn[1] / (drawn[0] + drawn[1]) == pytest.approx(0.5, abs=0.05)  # 0.2 without the sampler
    x, y = next(iter(trainer.train_loader))
    assert x.shape == (8, 3, 32, 32)


def test_border_keeps_a_wide_image_whole_and_pads_with_the_mean_colour():
    wide = Image.new("RGB", (64, 16), (255, 0, 0))
    wide.paste((0, 0, 255), (56, 0, 64, 16))  # the object at the right end, which a centre crop cuts off
    cfg = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5)}
    out = np.asarray(whole_image_step("border", cfg)(wide))
    assert out.shape == (32, 32, 3)
    assert (out[0, 16] == 128).all() and (out[-1, 16] == 128).all()  # padding above and below
    assert out[16, -1].tolist() == [0, 0, 255] and out[16, 0].tolist() == [255, 0, 0]  # both ends kept
    squash = np.asarray(whole_image_step("squash", cfg)(wide))
    assert squash.shape == (32, 32, 3) and squash[0, -1, 2] > 200 and squash[0, 0, 0] > 200
    assert whole_image_step("center", cfg) is None and whole_image_step(None, cfg) is None


def test_crop_mode_is_recorded_and_followed_by_validate_predict_and_export(tmp_path):
    data = make_folder(tmp_path / "d", classes=2, train=4, val=2, size=24)
    res = fit(toy_cfg(tmp_path, data, epochs=1, crop_mode="border", crop_pct=1.0))
    assert load_checkpoint_file(res.best_checkpoint)["data_config"]["crop_mode"] == "border"
    model = load_model(res.best_checkpoint)
    assert data_config_for(model)["crop_mode"] == "border"  # predict's and quantize's preprocessing
    assert portable_cfg(model.pretrained_cfg, model.num_classes)["crop_mode"] == "border"  # exported metadata
    r = run_validation(None, res.best_checkpoint, str(data / "val"), workers=0, progress=False)
    assert r["data_config"]["crop_mode"] == "border"
