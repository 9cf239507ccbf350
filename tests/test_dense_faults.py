"""Segmentation, detection and deployment files get the guarantees classification has: damaged and unverifiable
files are told apart by every loading command, bad COCO data is refused before training, nothing is silently
overwritten or changed, and every failure is one line naming the file and what is wrong."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from inceptionnext.cli import main
from inceptionnext.model_file import load_model, save_model
from inceptionnext.weights import CheckpointError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CFG = dict(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0, interpolation="bilinear")


def run_cli(capsys, *argv):
    """`inceptionnext ARGV` in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def flip_zip_tensor(path, count=64):
    """Flip `count` bytes inside the largest tensor record of a torch zip file (not its zip structure)."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        start = info.header_offset + 30 + name_len + extra_len + info.file_size // 4
        f.seek(start)
        chunk = f.read(count)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in chunk))


def flip_tail(path, where=0.75, count=16):
    """Flip `count` bytes at `where` of a file (the tensor data of a safetensors file, an ONNX initializer)."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(int(size * where))
        chunk = f.read(count)
        f.seek(int(size * where))
        f.write(bytes(b ^ 0xFF for b in chunk))


def tiny_classifier(num_classes=3):
    torch.manual_seed(0)
    return timm.create_model("inceptionnext_a", num_classes=num_classes, pretrained_cfg_overlay=dict(
        TINY_CFG, label_names=[f"c{i}" for i in range(num_classes)])).eval()


def png(path, size=(32, 32), seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 255, (size[1], size[0], 3)).astype(np.uint8)).save(path)
    return str(path)


def detection_checkpoint(path, class_names=("cat", "dog")):
    """A detection checkpoint as the engine writes it (sealed), for a tiny untrained RetinaNet."""
    from inceptionnext import checksum
    from inceptionnext.models.detection import create_detector
    record = dict(name="retinanet_inceptionnext_a_fpn", num_classes=len(class_names), fpn_channels=16,
                  anchor_sizes=[8, 16, 32, 64, 128], kwargs=dict(min_size=[32], max_size=32, score_thresh=0.0))
    torch.manual_seed(0)
    model = create_detector(record["name"], len(class_names), fpn_channels=16, anchor_sizes=record["anchor_sizes"],
                            min_size=(32,), max_size=32, score_thresh=0.0)
    obj = checksum.seal(dict(format="inceptionnext.train", epoch=1, state_dict=model.state_dict(), detector=record,
                             class_names=list(class_names), task="detection"))
    torch.save(obj, path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A converted classifier (.pth and .safetensors), an exported .onnx, a detection checkpoint, a converted
    segmentation model and a few images: each loading command is tried on damaged copies of them."""
    root = tmp_path_factory.mktemp("files")
    model = tiny_classifier()
    out = dict(root=root, pth=str(save_model(model, root / "cls.pth")),
               st=str(save_model(model, root / "cls.safetensors")),
               det=detection_checkpoint(root / "det.pth"), image=png(root / "img" / "a.png"))
    from inceptionnext.export import export_model
    export_model(model, root / "cls.onnx", "onnx", input_size=(3, 32, 32))
    out["onnx"] = str(root / "cls.onnx")
    torch.manual_seed(0)
    seg = timm.create_model("fpn_inceptionnext_a", num_classes=3, pretrained_cfg_overlay=dict(TINY_CFG))
    out["seg"] = str(save_model(seg.eval(), root / "seg.pth"))
    plain = root / "plain.pth"  # a state dict from another tool: no checksum
    torch.save(model.state_dict(), plain)
    out["plain"] = str(plain)
    return out


def damaged(files, tmp_path, key):
    """A copy of files[key] with flipped bits inside its tensor data."""
    src = files[key]
    dst = tmp_path / ("damaged_" + os.path.basename(src))
    dst.write_bytes(open(src, "rb").read())
    if key in ("pth", "det", "seg"):
        flip_zip_tensor(dst)
    else:
        flip_tail(dst)
    return str(dst)


# ------------------------------------------------------------------------------------------------ 1. checksums

def test_converted_and_exported_files_carry_a_checksum_and_verify_tells_the_three_cases(files, tmp_path, capsys):
    for key in ("pth", "st", "onnx", "det", "seg"):
        code, out, _ = run_cli(capsys, "verify", files[key])
        assert code == 0 and "checksum verified" in out, (key, out)
    code, out, _ = run_cli(capsys, "verify", files["plain"])
    assert code == 2 and out.startswith("unchecked: ") and "no checksum to verify" in out
    assert run_cli(capsys, "verify", "--allow-unchecked", files["plain"])[0] == 0
    for key in ("pth", "st", "onnx", "det"):
        code, out, err = run_cli(capsys, "verify", damaged(files, tmp_path, key), files["pth"])
        assert code == 1 and err.startswith("damaged: ") and len(err.strip().splitlines()) == 1, (key, err)
        assert "damaged" in err and f"ok: {files['pth']}" in out


@pytest.mark.parametrize("key", ["pth", "st"])
def test_a_damaged_converted_file_is_refused_by_every_loading_command(files, tmp_path, capsys, key):
    bad = damaged(files, tmp_path, key)
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_model(bad)
    commands = [["predict", "--weights", bad, files["image"]],
                ["validate", "--weights", bad, "--dataset", "digits", "--workers", "0"],
                ["convert", bad, tmp_path / "again.safetensors"],
                ["export", "--weights", bad, "--output", tmp_path / "again.onnx"],
                ["quantize", "--weights", bad, "--calibration", "digits", "--output", tmp_path / "q.onnx"]]
    for argv in commands:
        code, _, err = run_cli(capsys, *argv)
        assert code == 1 and "does not match the checksum" in err and "Traceback" not in err, (argv, err)
        assert bad in err
    assert not os.path.exists(tmp_path / "again.safetensors") and not os.path.exists(tmp_path / "q.onnx")


def test_a_damaged_detection_segmentation_or_onnx_file_is_refused(files, tmp_path, capsys):
    code, out, err = run_cli(capsys, "detect", "--weights", damaged(files, tmp_path, "det"), files["image"],
                             "--out-dir", tmp_path / "det")
    assert code == 1 and "does not match the checksum" in err and "detections" not in out
    code, out, err = run_cli(capsys, "segment", "--weights", damaged(files, tmp_path, "seg"), files["image"],
                             "-o", tmp_path / "seg")
    assert code == 1 and "does not match the checksum" in err
    code, out, err = run_cli(capsys, "predict", damaged(files, tmp_path, "onnx"), files["image"])
    assert code == 1 and "cls.onnx" in err and ("does not match the checksum" in err or "not a readable ONNX" in err)
    assert len(err.strip().splitlines()) == 1, err
