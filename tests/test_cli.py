"""The `inceptionnext` command: every subcommand on the CPU, with weight files and images the tests make."""

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import save_file
from test_train import make_folder
from timm.data import ImageNetInfo, create_transform, resolve_data_config

import inceptionnext
from inceptionnext.cli import COMMANDS, main
from inceptionnext.model_file import load_model, read_model_file
from inceptionnext.models.fold import is_folded, reparameterize_model
from inceptionnext.train.checkpoint import capture_rng, make_checkpoint

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["apple", "banana", "cherry", "date", "elderberry"]


def run(capsys, *argv):
    """The command in-process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def randomized(model):
    """Non-trivial BatchNorm statistics and layer scales, so folding and loading mistakes change outputs."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if getattr(m, "gamma", None) is not None:
                m.gamma.copy_(torch.rand(m.gamma.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One model's weights in every format the library reads, and images to classify."""
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = randomized(timm.create_model("inceptionnext_a", num_classes=5))
    sd = model.state_dict()
    torch.save(sd, d / "raw.pth")
    torch.save({"model": sd, "epoch": 300}, d / "official.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "plain.safetensors"))
    ema = randomized(timm.create_model("inceptionnext_a", num_classes=5))
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.01 * torch.randn_like(p))
    torch.save(
        {
            "state_dict": {f"module.{k}": v for k, v in sd.items()},
            "state_dict_ema": ema.state_dict(),
            "args": argparse.Namespace(lr=1e-3),
            "epoch": 3,
        },
        d / "timm_train.pth",
    )
    ckpt = make_checkpoint(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        scheduler=None,
        ema=argparse.Namespace(module=ema),
        scaler=None,
        epoch=2,
        model_name="inceptionnext_a",
        num_classes=5,
        config={},
        history=[],
        best={},
        rng=[capture_rng()],
        data_config=dict(
            input_size=(3, 48, 48), interpolation="bilinear", crop_pct=1.0, mean=(0.5,) * 3, std=(0.5,) * 3
        ),
        class_to_idx={name: i for i, name in enumerate(CLASSES)},
    )
    torch.save(ckpt, d / "train_ckpt.pth")

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    ImageDraw.Draw(photo).ellipse((30, 20, 110, 100), fill=(200, 40, 40))
    photo.save(d / "photo.jpg", quality=90)
    Image.fromarray(rng.integers(0, 255, (64, 80, 4), dtype=np.uint8), "RGBA").save(d / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (50, 50), dtype=np.uint8), "L").save(d / "gray.png")
    (d / "truncated.jpg").write_bytes((d / "photo.jpg").read_bytes()[:400])
    (d / "not_an_image.png").write_text("hello")
    return d, model, ema


def expected_top(model, path, k, data_config=None):
    """Top-k indices and probabilities computed here with timm's transforms, independently of the CLI."""
    cfg = resolve_data_config({}, pretrained_cfg=data_config, model=model)
    x = create_transform(**cfg, is_training=False)(Image.open(path).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        p, i = model(x).softmax(-1).topk(k)
    return i[0].tolist(), p[0].tolist()


# ------------------------------------------------------------------------------------------------ entry point


def test_help_lists_every_command_and_each_has_its_own(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and all(name in out for name in COMMANDS)
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and f"usage: inceptionnext {name}" in out, name


def test_each_command_help_opens_with_a_whole_description(capsys):
    """--help's description ends its sentence; where it comes from the command's docstring, it is that docstring's
    whole first paragraph, not its first line."""
    for name, (module, _) in COMMANDS.items():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        description = " ".join(capsys.readouterr().out.split("\n\n")[1].split())
        first = " ".join(importlib.import_module(module).__doc__.split("\n\n")[0].split())
        from_doc = first.split(": ", 1)[1] if first.startswith(f"`inceptionnext {name}`: ") else first
        assert description.endswith("."), (name, description)
        assert description == from_doc or name == "train", (name, description)  # train's comes from its config


def test_unknown_command_suggests_the_close_one(capsys):
    code, _, err = run(capsys, "predcit")
    assert code == 2 and "did you mean predict" in err


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "inceptionnext"
    p = subprocess.run([str(exe), "list", "inceptionnext_t", "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert [r["name"] for r in json.loads(p.stdout)] == ["inceptionnext_t"]
    v = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=300)
    assert v.stdout.strip() == f"inceptionnext {inceptionnext.__version__}"


# ------------------------------------------------------------------------------------------------ list, info


def test_list_counts_params_and_macs_and_shows_tags(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for entry in inceptionnext.ZOO:
        assert entry.name in out
    code, out, _ = run(capsys, "list", "inceptionnext_*", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {
        "inceptionnext_a",
        "inceptionnext_t",
        "inceptionnext_s",
        "inceptionnext_b",
        "inceptionnext_b_384",
    }
    t = rows["inceptionnext_t"]
    assert (t["params_m"], t["macs_g"], t["paper_top1"], t["alias"]) == (28.06, 4.19, 82.3, "inceptionnext_tiny")
    assert t["pretrained_tags"] == ["sail_in1k"] and rows["inceptionnext_b_384"]["input_size"] == [3, 384, 384]
    code, _, err = run(capsys, "list", "resnet*")
    assert code == 1 and "no model matches resnet*" in err
    # the segmentation and detection models are listed by task, with head and backbone
    code, out, _ = run(capsys, "list", "--task", "segmentation", "fpn_*", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["fpn_inceptionnext_a"] == dict(
        name="fpn_inceptionnext_a", head="fpn", backbone="inceptionnext_a"
    )
    assert not any(n.startswith("upernet_") for n in rows)
    code, out, _ = run(capsys, "list", "--task", "detection")
    assert code == 0 and "maskrcnn_inceptionnext_t_fpn" in out and "inceptionnext_t\n" in out + "\n"
    code, _, err = run(capsys, "list", "--task", "detection", "yolo*")
    assert code == 1 and "no detection model matches yolo*" in err


def test_info_shows_stages_features_and_preprocessing(capsys):
    code, out, _ = run(capsys, "info", "inceptionnext_t")
    assert code == 0
    assert "identity 60 | 3x3 on 12 | 1x11 on 12 | 11x1 on 12" in out
    assert "channels [96, 192, 384, 768], strides [4, 8, 16, 32]" in out
    assert "crop_pct 0.875" in out and "timm/inception_next_tiny.sail_in1k" in out
    code, out, _ = run(capsys, "info", "inceptionnext_b_384", "--json")
    info = json.loads(out)
    assert [s["depth"] for s in info["stages"]] == [3, 3, 27, 3]
    assert info["preprocessing"]["input_size"] == [3, 384, 384] and info["preprocessing"]["crop_pct"] == 1.0
    assert info["macs_g"] == 43.6 and info["paper"]["top1"] == 85.2
    code, out, _ = run(capsys, "info", "convnext_tiny_k3_par1_4", "--json")
    assert json.loads(out)["stages"][0]["token_mixer"] == "3x3 on 24 channels, identity on the rest"
    code, _, err = run(capsys, "info", "inceptionnext_tt")
    assert code == 1 and "unknown model 'inceptionnext_tt'" in err and "inceptionnext_t" in err


# ------------------------------------------------------------------------------------------------ predict


@pytest.mark.parametrize("weights", ["raw.pth", "official.pth", "timm_train.pth", "plain.safetensors"])
def test_predict_gives_the_models_top5_from_every_weight_format(files, capsys, weights):
    d, model, ema = files
    model = ema if weights == "timm_train.pth" else model  # timm's train.py scored its EMA copy: the default
    images = [d / "photo.jpg", d / "rgba.png", d / "gray.png"]
    code, out, err = run(
        capsys, "predict", "inceptionnext_a", "--weights", d / weights, *images, "--json", "--no-progress"
    )
    assert code == 0, err
    result = json.loads(out)
    assert [p["file"] for p in result["predictions"]] == [str(i) for i in images]
    for path, pred in zip(images, result["predictions"]):
        idx, probs = expected_top(model, path, 5)
        assert [t["index"] for t in pred["top_k"]] == idx
        assert [t["probability"] for t in pred["top_k"]] == pytest.approx(probs, abs=1e-5)
        assert [t["label"] for t in pred["top_k"]] == [f"class {i}" for i in idx]  # no names in a bare state dict


def test_predict_names_imagenet_classes_and_prints_a_readable_list(tmp_path, files, capsys):
    d, _, _ = files
    model = timm.create_model("inceptionnext_a").eval()
    torch.save(model.state_dict(), tmp_path / "in1k.pth")
    code, out, _ = run(
        capsys,
        "predict",
        "inceptionnext_atto",
        "--weights",
        tmp_path / "in1k.pth",
        d / "photo.jpg",
        "--top-k",
        "3",
        "--no-progress",
    )
    assert code == 0
    idx, probs = expected_top(model, d / "photo.jpg", 3)
    info = ImageNetInfo()
    lines = out.splitlines()
    assert lines[0] == str(d / "photo.jpg") and len(lines) == 4
    for line, i, p in zip(lines[1:], idx, probs):
        assert line.strip() == f"{100 * p:.2f}%  {info.index_to_description(i)}  ({i})"


def test_predict_uses_a_training_checkpoints_classes_preprocessing_and_ema(files, capsys):
    d, model, ema = files
    stored = dict(input_size=(3, 48, 48), interpolation="bilinear", crop_pct=1.0, mean=(0.5,) * 3, std=(0.5,) * 3)
    # the checkpoint's run kept EMA weights and scored them: they are the default; --no-ema gives the model's
    for extra, ref in (((), ema), (("--no-ema",), model), (("--use-ema",), ema)):
        code, out, err = run(
            capsys,
            "predict",
            "inceptionnext_a",
            "--weights",
            d / "train_ckpt.pth",
            *extra,
            d / "photo.jpg",
            "--json",
            "--top-k",
            "2",
            "--no-progress",
        )
        assert code == 0, err
        top = json.loads(out)["predictions"][0]["top_k"]
        idx, probs = expected_top(ref, d / "photo.jpg", 2, data_config=stored)
        assert [t["index"] for t in top] == idx and [t["label"] for t in top] == [CLASSES[i] for i in idx]
        assert [t["probability"] for t in top] == pytest.approx(probs, abs=1e-5)


@pytest.mark.parametrize(
    "image,message",
    [
        ("missing.jpg", "image not found"),
        ("truncated.jpg", "cannot be read as an image"),
        ("not_an_image.png", "cannot be read as an image"),
    ],
)
def test_predict_names_a_bad_image(files, capsys, image, message):
    d, _, _ = files
    code, _, err = run(capsys, "predict", "inceptionnext_a", "--weights", d / "raw.pth", d / "photo.jpg", d / image)
    assert code == 1 and message in err and image in err


def test_predict_refuses_weights_for_another_model(files, capsys):
    d, _, _ = files
    code, _, err = run(capsys, "predict", "inceptionnext_t", "--weights", d / "raw.pth", d / "photo.jpg")
    assert code == 1 and "does not fit inceptionnext_t" in err and "shape mismatches" in err
    code, _, err = run(capsys, "predict", "inceptionnext_t", "--weights", d / "train_ckpt.pth", d / "photo.jpg")
    assert code == 1 and "holds weights for inceptionnext_a, not inceptionnext_t" in err
    code, _, err = run(capsys, "predict", "inceptionnext_a", "--weights", d / "photo.jpg", d / "photo.jpg")
    assert code == 1 and "cannot be read as a checkpoint" in err


# ------------------------------------------------------------------------------------------------ convert


@pytest.mark.parametrize("source", ["raw.pth", "official.pth", "timm_train.pth", "plain.safetensors"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_convert_round_trip_gives_identical_outputs(files, tmp_path, capsys, source, suffix):
    d, model, ema = files
    out_file = tmp_path / f"converted{suffix}"
    code, out, err = run(capsys, "convert", d / source, out_file, "--model", "inceptionnext_a")
    assert code == 0, err
    assert "identical outputs" in out
    rebuilt = load_model(out_file)  # no name needed: the file carries it
    x = torch.randn(2, 3, 64, 64)
    ref = ema if source == "timm_train.pth" else model  # timm's train.py scored its EMA copy: that one, by default
    with torch.no_grad():
        assert torch.equal(rebuilt(x), ref(x))
    record = read_model_file(out_file)
    assert (record.kind, record.model_name, record.num_classes, record.deploy) == (
        "model file",
        "inceptionnext_a",
        5,
        False,
    )
    assert record.pretrained_cfg["input_size"] == [3, 224, 224] and "url" not in record.pretrained_cfg


def test_converted_files_load_through_timm_and_keep_metadata(files, tmp_path, capsys):
    d, model, _ = files
    assert run(capsys, "convert", d / "raw.pth", tmp_path / "m.pth", "--model", "inceptionnext_a")[0] == 0
    assert run(capsys, "convert", d / "raw.pth", tmp_path / "m.safetensors", "--model", "inceptionnext_a")[0] == 0
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        record = json.loads(f.metadata()["record"])
    assert record["model"] == "inceptionnext_a" and record["num_classes"] == 5
    for name in ("m.pth", "m.safetensors"):  # still plain weight files for timm's own pretrained path
        via_timm = timm.create_model(
            "inceptionnext_a",
            pretrained=True,
            num_classes=5,
            pretrained_cfg_overlay=dict(file=str(tmp_path / name), num_classes=5),
        ).eval()
        assert all(torch.equal(a, b) for a, b in zip(via_timm.state_dict().values(), model.state_dict().values()))


def test_convert_deploy_folds_and_the_folded_file_rebuilds_itself(files, tmp_path, capsys):
    d, model, _ = files
    code, out, _ = run(
        capsys, "convert", d / "raw.pth", tmp_path / "deploy.safetensors", "--model", "inceptionnext_a", "--deploy"
    )
    assert code == 0 and "folded" in out
    folded = load_model(tmp_path / "deploy.safetensors")
    assert is_folded(folded) and not any(k.endswith("gamma") for k in folded.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)
        assert torch.equal(folded(x), reparameterize_model(model)(x))
    # a folded bare state dict (no record) is recognised by its keys
    torch.save(folded.state_dict(), tmp_path / "folded_raw.pth")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "folded_raw.pth", "inceptionnext_a")(x), folded(x))


def test_convert_keeps_a_training_checkpoints_classes_and_preprocessing(files, tmp_path, capsys):
    d, _, ema = files
    code, _, err = run(capsys, "convert", d / "train_ckpt.pth", tmp_path / "ema.safetensors", "--use-ema")
    assert code == 0, err  # the checkpoint names its model: no --model needed
    rebuilt = load_model(tmp_path / "ema.safetensors")
    assert rebuilt.pretrained_cfg["label_names"] == CLASSES
    assert tuple(rebuilt.pretrained_cfg["input_size"]) == (3, 48, 48)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), ema(x))


def test_convert_errors_name_what_is_wrong(files, tmp_path, capsys):
    d, _, _ = files
    code, _, err = run(capsys, "convert", d / "raw.pth", tmp_path / "x.pth")
    assert code == 1 and "does not say which model" in err
    code, _, err = run(capsys, "convert", d / "raw.pth", tmp_path / "x.onnx", "--model", "inceptionnext_a")
    assert code == 1 and "unknown weight format '.onnx'" in err and not (tmp_path / "x.onnx").exists()
    code, _, err = run(capsys, "convert", tmp_path / "nope.pth", tmp_path / "x.pth", "--model", "inceptionnext_a")
    assert code == 1 and "weight file not found" in err
    code, _, err = run(capsys, "convert", d / "raw.pth", tmp_path / "x.pth", "--model", "inceptionnext_s")
    assert code == 1 and "does not fit inceptionnext_s" in err and not (tmp_path / "x.pth").exists()
    code, _, err = run(capsys, "convert", d / "raw.pth", tmp_path / "x.pth", "--model", "inceptionnext_a", "--use-ema")
    assert code == 1 and "holds no EMA weights" in err
    code, _, err = run(capsys, "convert", d / "raw.pth", tmp_path, "--model", "inceptionnext_a")
    assert code == 1 and "unknown weight format" in err
    (tmp_path / "dir.pth").mkdir()
    code, _, err = run(capsys, "convert", d / "raw.pth", tmp_path / "dir.pth", "--model", "inceptionnext_a")
    assert code == 1 and f"cannot write {tmp_path / 'dir.pth'}: it is a folder" in err


def test_convert_deploy_refuses_a_model_with_nothing_to_fold(tmp_path, capsys):
    torch.save(timm.create_model("resnet10t", num_classes=4).state_dict(), tmp_path / "r.pth")
    code, _, err = run(
        capsys, "convert", tmp_path / "r.pth", tmp_path / "r.safetensors", "--model", "resnet10t", "--deploy"
    )
    assert code == 1 and "nothing to fold" in err and not (tmp_path / "r.safetensors").exists()
    # without --deploy any timm model converts and rebuilds itself
    assert run(capsys, "convert", tmp_path / "r.pth", tmp_path / "r.safetensors", "--model", "resnet10t")[0] == 0
    assert load_model(tmp_path / "r.safetensors").num_classes == 4


def test_scored_ema_weights_by_default_either_set_on_request(files, tmp_path, capsys):
    d, model, ema = files
    x = torch.randn(1, 3, 64, 64)
    # timm's train.py scores its EMA copy when it keeps one, and timm's loaders read it: so do we, by default
    for extra, ref in (((), ema), (("--no-ema",), model), (("--use-ema",), ema)):
        assert (
            run(capsys, "convert", d / "timm_train.pth", tmp_path / "w.pth", "--model", "inceptionnext_a", *extra)[0]
            == 0
        )
        with torch.no_grad():
            assert torch.equal(load_model(tmp_path / "w.pth")(x), ref(x))
    code, _, err = run(
        capsys, "predict", "inceptionnext_a", "--weights", tmp_path / "w.pth", "--use-ema", d / "photo.jpg"
    )
    assert code == 1 and "holds one set of weights" in err


def test_records_survive_one_input_channel_and_no_classifier(files, tmp_path, capsys):
    d, _, _ = files
    gray = randomized(timm.create_model("inceptionnext_a", in_chans=1, num_classes=3))
    inceptionnext.model_file.save_model(gray, tmp_path / "gray.safetensors", label_names=["a", "b", "c"])
    rebuilt = load_model(tmp_path / "gray.safetensors")
    assert rebuilt.in_chans == 1 and tuple(rebuilt.pretrained_cfg["input_size"]) == (1, 224, 224)
    code, out, err = run(
        capsys,
        "predict",
        "inceptionnext_a",
        "--weights",
        tmp_path / "gray.safetensors",
        d / "photo.jpg",
        "--json",
        "--no-progress",
    )
    assert code == 0, err
    top = json.loads(out)["predictions"][0]["top_k"]
    x = create_transform(
        input_size=(1, 224, 224), interpolation="bicubic", crop_pct=0.875, mean=(0.449,), std=(0.226,)
    )(Image.open(d / "photo.jpg").convert("L")).unsqueeze(0)
    with torch.no_grad():
        p, i = gray(x).softmax(-1).topk(3)
    assert [t["index"] for t in top] == i[0].tolist() and [t["label"] for t in top] == ["abc"[j] for j in i[0]]
    assert [t["probability"] for t in top] == pytest.approx(p[0].tolist(), abs=1e-4)
    code, out, err = run(
        capsys,
        "export",
        "inceptionnext_a",
        "--weights",
        tmp_path / "gray.safetensors",
        "--format",
        "torchscript",
        "--img-size",
        "64",
        "--output",
        tmp_path / "gray.pt",
    )
    assert code == 0 and "input Nx1x64x64" in out, err
    headless = randomized(timm.create_model("inceptionnext_a", num_classes=0))
    inceptionnext.model_file.save_model(headless, tmp_path / "headless.pth")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "headless.pth")(x), headless(x))


# ------------------------------------------------------------------------------------------------ export


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torchscript", ".pt"), ("torch.export", ".pt2")])
def test_export_writes_a_checked_file(files, tmp_path, capsys, fmt, suffix):
    d, _, _ = files
    out_file = tmp_path / f"model{suffix}"
    code, out, err = run(
        capsys,
        "export",
        "inceptionnext_a",
        "--weights",
        d / "raw.pth",
        "--format",
        fmt,
        "--output",
        out_file,
        "--img-size",
        "64",
        "--deploy",
    )
    assert code == 0, err
    assert out_file.is_file() and f"wrote {out_file}" in out and "max abs diff" in out


def test_export_errors(files, tmp_path, capsys):
    d, _, _ = files
    code, _, err = run(capsys, "export", "inceptionnext_t", "--weights", d / "raw.pth", "--output", tmp_path / "m.onnx")
    assert code == 1 and "does not fit inceptionnext_t" in err and not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------------------ train, validate, benchmark


def test_train_then_predict_and_validate_through_the_entry_point(tmp_path, capsys):
    data = make_folder(tmp_path / "data", classes=3, train=4, val=2, size=16)
    code, out, err = run(
        capsys,
        "train",
        "--model",
        "inceptionnext_a",
        "--dataset",
        "folder",
        "--data-dir",
        data,
        "--img-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--aa",
        "none",
        "--reprob",
        "0",
        "--mixup",
        "0",
        "--cutmix",
        "0",
        "--output",
        tmp_path / "out",
        "--experiment",
        "run",
        "--progress",
        "false",
        "--warmup-epochs",
        "0",
    )
    assert code == 0, err[-2000:]
    best = tmp_path / "out" / "run" / "model_best.pth"
    image = next((data / "val" / "class_1").iterdir())
    code, out, err = run(capsys, "predict", "inceptionnext_a", "--weights", best, image, "--json", "--no-progress")
    assert code == 0, err
    top = json.loads(out)["predictions"][0]["top_k"]
    assert len(top) == 3 and {t["label"] for t in top} == {"class_0", "class_1", "class_2"}
    code, out, err = run(
        capsys,
        "validate",
        "--model",
        "inceptionnext_a",
        "--checkpoint",
        best,
        "--data-dir",
        data / "val",
        "--workers",
        "0",
        "--no-progress",
    )
    assert code == 0, err
    assert "top-1" in out and "on 6 images" in out
    top1 = out.split("top-1 ")[1].split()[0]
    # the same weights converted and folded validate the same (the file carries classes and preprocessing)
    assert run(capsys, "convert", best, tmp_path / "deploy.safetensors", "--deploy")[0] == 0
    code, out, err = run(
        capsys,
        "validate",
        "--model",
        "inceptionnext_a",
        "--checkpoint",
        tmp_path / "deploy.safetensors",
        "--data-dir",
        data / "val",
        "--workers",
        "0",
        "--no-progress",
    )
    assert code == 0, err
    assert f"top-1 {top1}" in out and "on 6 images" in out and "32px" in out


def test_benchmark_through_the_entry_point_prints_its_command(capsys):
    argv = [
        "benchmark",
        "--model",
        "inceptionnext_a",
        "--bench",
        "inference",
        "--batch-size",
        "1",
        "--img-size",
        "32",
        "--num-warm-iter",
        "1",
        "--num-bench-iter",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--no-cpu-memory",
        "--variants",
        "ref,unfolded",
    ]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "Command: `inceptionnext benchmark --model inceptionnext_a" in out and "| inceptionnext_a |" in out


def test_scripts_still_run_from_a_checkout():
    for script in ("train.py", "validate.py", "benchmark.py"):
        p = subprocess.run(
            [sys.executable, str(REPO / "scripts" / script), "--help"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": ""},
            cwd=str(REPO),
        )
        assert p.returncode == 0 and f"usage: python scripts/{script}" in p.stdout, p.stderr[-1000:]


def test_predict_preprocessing_can_be_overridden(files, capsys):
    d, model, _ = files
    code, out, err = run(
        capsys,
        "predict",
        "inceptionnext_a",
        "--weights",
        d / "raw.pth",
        d / "photo.jpg",
        "--img-size",
        "96",
        "--crop-pct",
        "1.0",
        "--interpolation",
        "bilinear",
        "--json",
        "--top-k",
        "5",
        "--no-progress",
    )
    assert code == 0, err
    top = json.loads(out)["predictions"][0]["top_k"]
    idx, probs = expected_top(
        model,
        d / "photo.jpg",
        5,
        data_config=dict(
            input_size=(3, 96, 96),
            crop_pct=1.0,
            interpolation="bilinear",
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
        ),
    )
    assert [t["index"] for t in top] == idx
    assert [t["probability"] for t in top] == pytest.approx(probs, abs=1e-5)
    default = json.loads(
        run(
            capsys, "predict", "inceptionnext_a", "--weights", d / "raw.pth", d / "photo.jpg", "--json", "--no-progress"
        )[1]
    )["predictions"][0]["top_k"]
    assert [t["probability"] for t in default] != pytest.approx([t["probability"] for t in top], abs=1e-6)


def test_predict_takes_a_folder_of_images(files, tmp_path, capsys):
    d, _, _ = files
    folder = tmp_path / "album"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.jpg").write_bytes((d / "photo.jpg").read_bytes())
    (folder / "sub" / "a.PNG").write_bytes((d / "rgba.png").read_bytes())
    (folder / "notes.txt").write_text("not an image")
    code, out, err = run(
        capsys,
        "predict",
        "inceptionnext_a",
        "--weights",
        d / "raw.pth",
        folder,
        d / "gray.png",
        "--json",
        "--no-progress",
    )
    assert code == 0, err
    assert [p["file"] for p in json.loads(out)["predictions"]] == [
        str(folder / "b.jpg"),
        str(folder / "sub" / "a.PNG"),
        str(d / "gray.png"),
    ]
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "predict", "inceptionnext_a", "--weights", d / "raw.pth", tmp_path / "empty")
    assert code == 1 and "no image files" in err


def test_images_are_read_upright_and_16_bit_ones_keep_their_levels(tmp_path):
    from inceptionnext.data.images import load_image

    img = Image.new("RGB", (80, 60), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    img.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "phone.jpg").size == (60, 80)
    Image.fromarray(np.full((8, 8), 128 * 257, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert np.asarray(load_image(tmp_path / "deep.png")).mean() == pytest.approx(128, abs=1)
    assert load_image(tmp_path / "phone.jpg", channels=1).mode == "L"


def test_bad_options_are_named(files, tmp_path, capsys):
    d, _, _ = files
    base = ["predict", "inceptionnext_a", "--weights", d / "raw.pth", d / "photo.jpg"]
    code, _, err = run(capsys, *base, "--mean", "0.5,0.5")
    assert code == 1 and "mean has 2 values for a model with 3 input channels" in err
    code, _, err = run(capsys, *base, "--device", "tpu")
    assert code == 1 and "device 'tpu': not a device" in err
    code, _, err = run(capsys, *base, "--crop-pct", "0")
    assert code == 1 and "crop_pct must be in (0, 1]" in err
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in base] + ["--interpolation", "fancy"])
    assert e.value.code == 2 and "invalid choice: 'fancy'" in capsys.readouterr().err
    code, _, err = run(
        capsys,
        "export",
        "inceptionnext_a",
        "--weights",
        d / "raw.pth",
        "--opset",
        "13",
        "--output",
        tmp_path / "m.onnx",
    )
    assert code == 1 and "opset 18 or newer" in err
    code, _, err = run(
        capsys,
        "export",
        "inceptionnext_a",
        "--weights",
        d / "raw.pth",
        "--img-size",
        "24",
        "--output",
        tmp_path / "m.onnx",
    )
    assert code == 1 and "--img-size 24 is too small" in err and "at least 32 px" in err


def test_model_files_answer_to_timms_name_for_the_same_architecture(files, tmp_path, capsys):
    d, model, _ = files
    assert run(capsys, "convert", d / "raw.pth", tmp_path / "a.safetensors", "--model", "inceptionnext_a")[0] == 0
    code, out, err = run(
        capsys,
        "predict",
        "inception_next_atto",
        "--weights",
        tmp_path / "a.safetensors",
        d / "photo.jpg",
        "--json",
        "--no-progress",
    )
    assert code == 0, err
    assert [t["index"] for t in json.loads(out)["predictions"][0]["top_k"]] == expected_top(model, d / "photo.jpg", 5)[
        0
    ]
