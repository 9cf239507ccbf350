"""What a new user trips over, each as a one-line error or a consistent CLI: data mistakes, too-small images,
misspelled names, and the commands' shared flags and help texts."""

import os
import shutil

import pytest
import timm
import torch
from test_cli import run
from test_train import make_folder, toy_cfg

from inceptionnext.cli import COMMANDS, main
from inceptionnext.tasks.classification.data import build_datasets
from inceptionnext.tasks.classification.evaluate import run_validation
from inceptionnext.train import ConfigError, DataError, fit, parse_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("toy"), classes=3, train=4, val=2)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "plain.pth"
    torch.save(timm.create_model("inceptionnext_a", num_classes=3).state_dict(), path)
    return path


# ------------------------------------------------------------------------------------------- point 3: data


def test_validate_on_the_dataset_root_is_an_error(data, plain):
    with pytest.raises(DataError, match=r"looks like a dataset root .*train/, val/.*pass the split itself"):
        run_validation("inceptionnext_a", str(plain), data_dir=str(data), workers=0, progress=False)


def test_val_class_folders_unknown_to_train_are_an_error(tmp_path):
    root = make_folder(tmp_path / "d", classes=3, train=2, val=1)
    shutil.copytree(root / "val" / "class_0", root / "val" / "class_9")
    with pytest.raises(DataError, match=r"class folders that the training set .* does not know: class_9"):
        build_datasets(toy_cfg(tmp_path, root))


def test_validate_with_a_checkpoints_class_names_refuses_unknown_folders(tmp_path, capsys):
    root = make_folder(tmp_path / "d", classes=3, train=4, val=1)
    res = fit(toy_cfg(tmp_path, root, epochs=1, plot=False))
    capsys.readouterr()
    (root / "val" / "class_0").rename(root / "val" / "cat")
    with pytest.raises(DataError, match="does not know: cat"):
        run_validation(None, res.best_checkpoint, data_dir=str(root / "val"), workers=0, progress=False)


def test_one_class_folder_is_an_error(tmp_path):
    root = make_folder(tmp_path / "d", classes=1, train=2, val=1)
    with pytest.raises(DataError, match="a classifier needs at least two"):
        build_datasets(toy_cfg(tmp_path, root))


# ------------------------------------------------------------------------------- point 7: input size


@pytest.mark.parametrize("size", [16, 0])
def test_too_small_or_zero_img_size_is_one_error_everywhere(size, data, plain, tmp_path, capsys):
    want = f"img_size {size} is too small: inceptionnext_a needs images of at least 32 px"
    img = next((data / "val").rglob("*.png"))
    for argv in (
        ["predict", "inceptionnext_a", "--weights", plain, img, "--img-size", size, "--no-progress"],
        [
            "validate",
            "inceptionnext_a",
            "--weights",
            plain,
            "--data-dir",
            data / "val",
            "--img-size",
            size,
            "--workers",
            "0",
            "--no-progress",
        ],
        ["export", "inceptionnext_a", "--weights", plain, "--img-size", size, "-o", tmp_path / "x.onnx"],
        [
            "train",
            "--model",
            "inceptionnext_a",
            "--data-dir",
            data,
            "--img-size",
            size,
            "--workers",
            "0",
            "--output",
            tmp_path,
            "--progress",
            "false",
        ],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 1 and "Traceback" not in err, (argv[0], err)
        assert want.replace("img_size", "--img-size") in err or want in err, (argv[0], err)


# ------------------------------------------------------------------------------ point 8: names


def test_train_suggests_close_model_names_and_optimizers(data, tmp_path, capsys):
    common = ["--data-dir", data, "--workers", "0", "--output", tmp_path, "--progress", "false", "--img-size", "32"]
    code, _, err = run(capsys, "train", "--model", "inceptionnext_tt", *common)
    assert code == 1 and "did you mean" in err and "inceptionnext_t," in err + ","
    code, _, err = run(capsys, "train", "--model", "inceptionext_a", *common)
    assert code == 1 and "inceptionnext_a" in err
    code, _, err = run(capsys, "train", "--model", "inceptionnext_a", "--set", "opt=adamx", "--epochs", "1", *common)
    assert code == 1 and "Traceback" not in err and "unknown optimizer opt: 'adamx'" in err and "adamax" in err


def test_convert_to_onnx_points_to_export(plain, tmp_path, capsys):
    code, _, err = run(capsys, "convert", plain, tmp_path / "out.onnx", "--model", "inceptionnext_a")
    assert code == 1 and "inceptionnext export" in err


def test_config_paths_resolve_from_anywhere_or_say_where_recipes_live(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_config(["--config", "configs/finetune/inceptionnext_t.yaml"]).model == "inceptionnext_t"
    with pytest.raises(ConfigError, match=r"shipped recipes are in .*configs"):
        parse_config(["--config", "configs/finetune/nope.yaml"])


# ------------------------------------------------------------------------------- point 9: one CLI


def test_validate_takes_the_model_and_flags_as_predict_does(data, plain, capsys):
    import json

    code, out, err = run(
        capsys,
        "validate",
        "inceptionnext_a",
        "--weights",
        plain,
        "--data-dir",
        data / "val",
        "-b",
        "2",
        "--workers",
        "0",
        "--img-size",
        "32",
        "--no-progress",
        "--json",
    )
    assert code == 0, err
    r = json.loads(out)  # --json alone prints JSON, as predict --json does
    assert r["count"] == 6 and r["model"] == "inceptionnext_a" and "weights: " in err
    code, out, err = run(
        capsys,
        "validate",
        "--model",
        "inceptionnext_a",
        "--checkpoint",
        plain,
        "--data-dir",
        data / "val",
        "--workers",
        "0",
        "--img-size",
        "32",
        "--no-progress",
    )
    assert code == 0 and "top-1" in out  # timm's spellings still work


def test_predict_reads_the_model_name_from_a_file_that_records_it(data, plain, tmp_path, capsys):
    assert run(capsys, "convert", plain, tmp_path / "w.safetensors", "--model", "inceptionnext_a")[0] == 0
    img = next((data / "val").rglob("*.png"))
    code, out, err = run(capsys, "predict", "--weights", tmp_path / "w.safetensors", img, "--no-progress")
    assert code == 0 and str(img) in out, err
    code, _, err = run(capsys, "predict", "--weights", plain, img, "--no-progress")  # a bare state dict: no name
    assert code == 1 and "does not say which model" in err


def test_train_takes_bare_switches_and_b():
    cfg = parse_config(["--pretrained", "-b", "16", "--ema", "--channels-last"])
    assert cfg.pretrained and cfg.ema and cfg.channels_last and cfg.batch_size == 16
    assert parse_config(["--pretrained", "false"]).pretrained is False


def _parser(command):
    import importlib

    module = importlib.import_module(COMMANDS[command][0])
    if hasattr(module, "build_parser"):
        return module.build_parser(f"inceptionnext {command}")
    if command == "benchmark":
        return None
    return None


@pytest.mark.parametrize("command", ["info", "export", "predict", "convert", "validate", "list", "benchmark"])
def test_help_texts_are_whole_and_every_option_says_what_it_does(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "(default: )" not in text and "(default: ...)" not in text
    description = text.split("\n\n")[1].replace("\n", " ").strip()
    assert description.endswith("."), f"{command} --help description stops mid-sentence: {description!r}"
    parser = _parser(command)
    if parser is not None:
        bare = [a.option_strings or [a.dest] for a in parser._actions if not a.help]
        assert not bare, f"{command}: options without help: {bare}"
    if command == "export":
        assert (
            "default: onnx" in text
            and "--opset" in text
            and "20 here" in text.replace("\n", " ").replace("  ", " ")
            or "default: torch.onnx" in text
        )
