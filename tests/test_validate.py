"""validate.py: any weight format the library loads, the weights' own preprocessing, and clear errors."""

import os

import pytest
import timm
import torch
from safetensors.torch import save_file
from test_train import make_folder, run_checkout_script

import inceptionnext  # noqa: F401
from inceptionnext.tasks.classification.evaluate import load_for_eval, run_validation
from inceptionnext.train import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    torch.manual_seed(0)
    model = timm.create_model("inceptionnext_a", num_classes=3).eval()
    sd = model.state_dict()
    torch.save(sd, d / "plain.pth")
    torch.save({"model": sd, "epoch": 3}, d / "official_style.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "w.safetensors"))
    return d, model


@pytest.mark.parametrize("name", ["plain.pth", "official_style.pth", "w.safetensors"])
def test_foreign_formats_load_with_class_count_read_off_the_head(weights, name):
    d, ref = weights
    model, info = load_for_eval("inceptionnext_a", str(d / name))
    assert info == {} and model.head.fc2.out_features == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_formats_agree_and_pretrained_preprocessing_is_used(weights, tmp_path):
    d, _ = weights
    data = make_folder(tmp_path / "data", train=1, val=3)
    results = [
        run_validation(
            "inceptionnext_a", str(d / n), data_dir=str(data / "val"), workers=0, batch_size=4, progress=False
        )
        for n in ("plain.pth", "w.safetensors")
    ]
    assert results[0]["top1"] == results[1]["top1"] and results[0]["loss"] == pytest.approx(results[1]["loss"])
    dc = results[0]["data_config"]
    assert dc["input_size"] == (3, 224, 224) and dc["crop_pct"] == 0.875 and dc["interpolation"] == "bicubic"
    small = run_validation(
        "inceptionnext_a",
        str(d / "plain.pth"),
        data_dir=str(data / "val"),
        workers=0,
        img_size=32,
        crop_pct=1.0,
        progress=False,
    )
    assert small["data_config"]["input_size"] == (3, 32, 32) and small["count"] == 9


def test_cli_prints_top1_top5_and_reports_bad_input(weights, tmp_path, monkeypatch, capsys):
    d, _ = weights
    data = make_folder(tmp_path / "data", train=1, val=2)
    model = ["--model", "inceptionnext_a", "--checkpoint", d / "plain.pth"]
    options = ["--img-size", "32", "--workers", "0", "--no-progress", "--channels-last", "--amp", "bf16"]
    code, out, err = run_checkout_script(
        monkeypatch, capsys, "validate.py", *model, "--data-dir", data / "val", *options
    )
    assert code == 0, err[-2000:]
    assert "top-1" in out and "top-5" in out and "on 6 images" in out
    code, _, err = run_checkout_script(monkeypatch, capsys, "validate.py", *model, "--data-dir", tmp_path / "nope")
    assert code == 1 and "image folder not found" in err
    with pytest.raises(DataError, match="no images found"):
        (tmp_path / "empty" / "a").mkdir(parents=True)
        run_validation("inceptionnext_a", str(d / "plain.pth"), data_dir=str(tmp_path / "empty"), workers=0)
