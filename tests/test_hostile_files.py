"""Hostile weight files cost little and print nothing raw: decompression bombs are refused from the zip
directory, a record's fields are checked before a model is built, names are printed escaped, and torch's advice
to unpickle an untrusted file is never passed on."""

import os
import zipfile

import pytest
import timm
import torch
from PIL import Image

from inceptionnext.cli import main
from inceptionnext.model_file import load_model, save_model
from inceptionnext.train.checkpoint import load_checkpoint_file
from inceptionnext.weights import CheckpointError, read_weight_file
from inceptionnext.weights import CheckpointError as TrainCheckpointError  # one class now


@pytest.fixture(scope="module")
def model_pth(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "a.pth"
    save_model(
        timm.create_model("inceptionnext_a", num_classes=3),
        path,
        label_names=["cat", "\x1b[2J\x1b[31mfake\x1b[0m", "dog\rcat"],
    )
    return path


def test_a_compressed_record_that_expands_far_beyond_the_file_is_refused_before_reading(tmp_path):
    stored = tmp_path / "stored.pth"
    torch.save({"w": torch.zeros(2**25)}, stored)  # 128 MiB of zeros
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(stored) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    stored.unlink()
    assert bomb.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match=r"declare 128 MiB of data in a 0\.\d MiB file"):
        read_weight_file(bomb)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("num_classes", 10**9, "asks for 1000000000 classes"),
        ("num_classes", float("inf"), "model record is damaged"),
        ("in_chans", 10**6, "asks for 1000000 input channels"),
        ("in_chans", 1, "record says 1 input channels, its first conv has 3"),
        ("num_classes", 7, "record says 7 classes, its classifier has 3"),
        ("input_size", [3, 100000, 100000], r"input_size a list of 3 items is not \[C, H, W\]"),
    ],
)
def test_record_fields_are_checked_before_anything_is_built(model_pth, tmp_path, field, value, message):
    record = torch.load(model_pth, weights_only=True)
    if field == "input_size":
        record["pretrained_cfg"]["input_size"] = value
    else:
        record[field] = value
    path = tmp_path / "edited.pth"
    from inceptionnext.checksum import seal

    torch.save(seal(record), path)  # a whole file with a hostile record (an edited one fails its checksum)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_class_names_from_a_file_are_printed_escaped(model_pth, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    assert main(["predict", "inceptionnext_a", "--weights", str(model_pth), str(image), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    assert "\\x1b[2J\\x1b[31mfake\\x1b[0m" in out and "dog\\rcat" in out


def test_torchs_advice_to_unpickle_is_never_passed_on(tmp_path, capsys):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 1, "hook": os.getcwd}, path)
    messages = []
    for read in (read_weight_file, load_checkpoint_file):
        with pytest.raises((CheckpointError, TrainCheckpointError)) as info:
            read(str(path))
        messages.append(str(info.value))
    assert main(["predict", "inceptionnext_a", "--weights", str(path), str(path)]) == 1
    messages.append(capsys.readouterr().err)
    for text in messages:
        assert "posix.getcwd" in text or "os.getcwd" in text, text
        assert "weights_only" not in text and "trust" not in text and "\x1b" not in text, text
