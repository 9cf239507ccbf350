"""Segmentation, detection and deployment files get the guarantees classification has: damaged and unverifiable
files are told apart by every loading command, bad COCO data is refused before training, nothing is silently
overwritten or changed, and every failure is one line naming the file and what is wrong."""

import json
import math
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
from inceptionnext.deploy.runtimes import openvino_core
from inceptionnext.model_file import load_model, save_model
from inceptionnext.models.dense import create_any_model
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
    return timm.create_model(
        "inceptionnext_a",
        num_classes=num_classes,
        pretrained_cfg_overlay=dict(TINY_CFG, label_names=[f"c{i}" for i in range(num_classes)]),
    ).eval()


def png(path, size=(32, 32), seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 255, (size[1], size[0], 3)).astype(np.uint8)).save(path)
    return str(path)


def detection_checkpoint(path, class_names=("cat", "dog")):
    """A detection checkpoint as the engine writes it (sealed), for a tiny untrained RetinaNet."""
    from inceptionnext import checksum
    from inceptionnext.models.detection import create_detector

    record = dict(
        name="retinanet_inceptionnext_a_fpn",
        num_classes=len(class_names),
        fpn_channels=16,
        anchor_sizes=[8, 16, 32, 64, 128],
        kwargs=dict(min_size=[32], max_size=32, score_thresh=0.0),
    )
    torch.manual_seed(0)
    model = create_detector(
        record["name"],
        len(class_names),
        fpn_channels=16,
        anchor_sizes=record["anchor_sizes"],
        min_size=(32,),
        max_size=32,
        score_thresh=0.0,
    )
    obj = checksum.seal(
        dict(
            format="inceptionnext.train",
            epoch=1,
            state_dict=model.state_dict(),
            detector=record,
            class_names=list(class_names),
            task="detection",
        )
    )
    torch.save(obj, path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A converted classifier (.pth and .safetensors), an exported .onnx, a detection checkpoint, a converted
    segmentation model and a few images: each loading command is tried on damaged copies of them."""
    root = tmp_path_factory.mktemp("files")
    model = tiny_classifier()
    out = dict(
        root=root,
        pth=str(save_model(model, root / "cls.pth")),
        st=str(save_model(model, root / "cls.safetensors")),
        det=detection_checkpoint(root / "det.pth"),
        image=png(root / "img" / "a.png"),
    )
    from inceptionnext.deploy.export import export_model

    export_model(model, root / "cls.onnx", "onnx", input_size=(3, 32, 32))
    out["onnx"] = str(root / "cls.onnx")
    torch.manual_seed(0)
    seg = create_any_model("fpn_inceptionnext_a", num_classes=3, pretrained_cfg_overlay=dict(TINY_CFG))
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
    commands = [
        ["predict", "--weights", bad, files["image"]],
        ["validate", "--weights", bad, "--dataset", "digits", "--workers", "0"],
        ["convert", bad, tmp_path / "again.safetensors"],
        ["export", "--weights", bad, "--output", tmp_path / "again.onnx"],
        ["quantize", "--weights", bad, "--calibration", "digits", "--output", tmp_path / "q.onnx"],
    ]
    for argv in commands:
        code, _, err = run_cli(capsys, *argv)
        assert code == 1 and "does not match the checksum" in err and "Traceback" not in err, (argv, err)
        assert bad in err
    assert not os.path.exists(tmp_path / "again.safetensors") and not os.path.exists(tmp_path / "q.onnx")


def test_a_damaged_detection_segmentation_or_onnx_file_is_refused(files, tmp_path, capsys):
    code, out, err = run_cli(
        capsys, "detect", "--weights", damaged(files, tmp_path, "det"), files["image"], "--out-dir", tmp_path / "det"
    )
    assert code == 1 and "does not match the checksum" in err and "detections" not in out
    code, out, err = run_cli(
        capsys, "segment", "--weights", damaged(files, tmp_path, "seg"), files["image"], "-o", tmp_path / "seg"
    )
    assert code == 1 and "does not match the checksum" in err
    code, out, err = run_cli(capsys, "predict", damaged(files, tmp_path, "onnx"), files["image"])
    assert code == 1 and "cls.onnx" in err and ("does not match the checksum" in err or "not a readable ONNX" in err)
    assert len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------------------------ 3. COCO checks


def coco_files(root, images=((1, "a.png", 40, 30),), annotations=None, categories=None, make=True):
    """An image folder and a COCO file (root/img, root/ann.json)."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    if make:
        for _, name, w, h in images:
            Image.new("RGB", (w, h)).save(root / "img" / name)
    if annotations is None:
        annotations = [dict(id=1, image_id=1, category_id=1, bbox=[2, 2, 10, 10], area=100, iscrowd=0)]
    doc = dict(
        images=[dict(id=i, file_name=n, width=w, height=h) for i, n, w, h in images],
        annotations=annotations,
        categories=categories or [dict(id=1, name="cat")],
    )
    (root / "ann.json").write_text(json.dumps(doc))
    return str(root / "img"), str(root / "ann.json")


ANN = dict(id=1, image_id=1, category_id=1, bbox=[2, 2, 10, 10], area=100, iscrowd=0)
COCO_DEFECTS = {
    "duplicate image id": (
        dict(images=((1, "a.png", 40, 30), (1, "b.png", 40, 30))),
        r"image id 1 appears twice \(a.png and b.png\); ids must be unique",
    ),
    "NaN box": (
        dict(annotations=[dict(ANN, bbox=[2, 2, float("nan"), 10])]),
        r"a value is not finite or beyond 1e\+06",
    ),
    "inf box": (dict(annotations=[dict(ANN, bbox=[2, 2, float("inf"), 10])]), r"a value is not finite or beyond"),
    "huge box": (dict(annotations=[dict(ANN, bbox=[2, 2, 1e300, 10])]), r"a value is not finite or beyond"),
    "string box": (
        dict(annotations=[dict(ANN, bbox="2,2,10,10")]),
        r"annotation 1 \(image a.png\) has bbox '2,2,10,10'; expected \[x, y, w, h\] as four numbers",
    ),
    "odd polygon": (
        dict(annotations=[dict(ANN, segmentation=[[2, 2, 12, 2, 12]])]),
        r"has a polygon of 5 coordinates; a polygon is at least 3 \(x, y\) points",
    ),
    "polygon of strings": (
        dict(annotations=[dict(ANN, segmentation=[["2", "2", "9", "2", "9", "9"]])]),
        r"has a polygon that is not a list of numbers",
    ),
    "RLE of another size": (
        dict(annotations=[dict(ANN, segmentation=dict(size=[10, 10], counts=[100]))]),
        r"has an RLE of size 10x10 \(WxH\) for an image of 40x30",
    ),
    "RLE counts short": (
        dict(annotations=[dict(ANN, segmentation=dict(size=[30, 40], counts=[5, 10]))]),
        r"has RLE counts that do not cover its 1200 pixels",
    ),
    "category without id": (dict(categories=[dict(name="cat")]), r"category 0 \(a dict of 1 items\) has no integer"),
    "parent folder": (
        dict(images=((1, "../a.png", 40, 30),), make=False),
        r"image 1's file_name '../a.png' climbs out of the image folder",
    ),
    "absolute path": (
        dict(images=((1, "/etc/hostname", 40, 30),), make=False),
        r"image 1's file_name '/etc/hostname' is an absolute path",
    ),
    "duplicate annotation id": (dict(annotations=[ANN, ANN]), r"annotation 1: appears twice; ids must be unique"),
    "too many annotations": (
        dict(annotations=[dict(ANN, id=i) for i in range(2001)]),
        r"image a.png has more than 2000 annotations",
    ),
}


@pytest.mark.parametrize("case", list(COCO_DEFECTS))
def test_each_coco_defect_is_refused_up_front_in_one_line(tmp_path, case):
    from inceptionnext.tasks.detection.data import AnnotationError, CocoDetectionSet

    kwargs, message = COCO_DEFECTS[case]
    root, path = coco_files(tmp_path, **kwargs)
    if case == "parent folder":
        Image.new("RGB", (40, 30)).save(tmp_path / "a.png")  # the file exists, outside the image folder
    with pytest.raises(AnnotationError, match=message) as e:
        CocoDetectionSet(root, path, masks=False)
    assert "ann.json" in str(e.value) and len(str(e.value).splitlines()) == 1


def test_a_symlink_out_of_the_data_root_and_an_oversized_image_are_named(tmp_path, monkeypatch):
    from inceptionnext.tasks.detection.data import AnnotationError, CocoDetectionSet

    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (40, 30)).save(outside / "secret.png")
    root, path = coco_files(tmp_path / "data", images=((1, "link.png", 40, 30),), make=False)
    os.symlink(outside / "secret.png", os.path.join(root, "link.png"))
    with pytest.raises(AnnotationError, match=r"'link.png' resolves \(through a symlink\) to .*secret.png, outside"):
        CocoDetectionSet(root, path)
    root, path = coco_files(tmp_path / "big")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 40x30 image is then over the limit
    with pytest.raises(AnnotationError, match=r"a.png is 40x30 \(1200 pixels\), over the decompression limit of 1000"):
        CocoDetectionSet(root, path)


# ------------------------------------------------------------------------------------------------ 2. other writers


def test_a_coco_file_without_optional_fields_reads_as_pycocotools_reads_it(tmp_path):
    from inceptionnext.tasks.detection.data import CocoDetectionSet

    root, path = coco_files(tmp_path, images=((7, "a.png", 40, 30), (8, "b.png", 24, 24)))
    doc = json.loads(open(path).read())
    for img in doc["images"]:  # no width/height, an extra field
        img.pop("width"), img.pop("height")
        img["license"] = 3
    doc["annotations"] = [
        dict(image_id=7, category_id=4, bbox=[2.5, 2, 10, 10], note="extra"),  # no id/iscrowd/area
        dict(image_id=8, category_id=9, bbox=[0, 0, 5, 6], iscrowd=0, segmentation=[]),
    ]
    doc["categories"] = [dict(id=9, name="dog", supercategory="animal"), dict(id=4, name="cat")]
    doc["info"] = {"year": 2024}
    open(path, "w").write(json.dumps(doc))
    ds = CocoDetectionSet(root, path, keep_crowd=True)
    assert ds.class_names == ["cat", "dog"] and ds.aspect_ratios() == [40 / 30, 1.0]
    image, target = ds[0]
    assert target["image_id"] == 7 and target["labels"].tolist() == [1] and target["iscrowd"].tolist() == [0]
    assert target["boxes"].tolist() == [[2.5, 2.0, 12.5, 12.0]]
    assert CocoDetectionSet(root, path)[1][1]["labels"].tolist() == [2]


def test_a_coco_file_written_by_globox_trains(tmp_path):
    globox = pytest.importorskip("globox")
    from inceptionnext.tasks.detection.data import CocoDetectionSet, collate

    (tmp_path / "img").mkdir()
    annotations = []
    for i, name in enumerate(("a.png", "b.png")):
        Image.new("RGB", (40, 30 + 10 * i)).save(tmp_path / "img" / name)
        box = globox.BoundingBox.create(label="cat" if i else "dog", coords=(2, 2, 12, 14))
        annotations.append(globox.Annotation(name, boxes=[box]))  # no image size: globox writes null width/height
    globox.AnnotationSet(annotations).save_coco(tmp_path / "ann.json", auto_ids=True)
    ds = CocoDetectionSet(str(tmp_path / "img"), str(tmp_path / "ann.json"))
    assert ds.aspect_ratios() == [40 / 30, 1.0]
    images, targets = collate([ds[0], ds[1]])
    assert [t["boxes"].tolist() for t in targets] == [[[2.0, 2.0, 12.0, 14.0]]] * 2
    assert images[1].size == (40, 40)


def test_a_bad_mask_in_the_validation_split_is_found_before_training(tmp_path):
    from inceptionnext.train import DataError, fit, make_config

    rng = np.random.RandomState(0)
    for split in ("train", "val"):
        for i in range(2):
            png(tmp_path / "d" / "images" / split / f"{i}.png", (32, 32), seed=i)
            os.makedirs(tmp_path / "d" / "masks" / split, exist_ok=True)
            Image.fromarray(rng.randint(0, 3, (32, 32)).astype(np.uint8)).save(
                tmp_path / "d" / "masks" / split / f"{i}.png"
            )
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(tmp_path / "d" / "masks" / "val" / "1.png")
    cfg = make_config(
        **dict(
            task="segmentation",
            model="fpn_inceptionnext_a",
            head_channels=16,
            dataset="masks",
            num_classes=3,
            data_dir=str(tmp_path / "d"),
            img_size=32,
            crop_size=32,
            seg_scale=None,
            cat_max_ratio=1.0,
            hflip=0.0,
            photometric=0.0,
            device="cpu",
            workers=0,
            batch_size=2,
            iters=2,
            eval_interval=2,
            warmup_iters=0,
            output=str(tmp_path / "out"),
            experiment="seg",
            progress=False,
            plot=False,
            overlays=0,
        ),
    )
    from inceptionnext.train import Trainer
    from inceptionnext.train.distributed import DistEnv

    with pytest.raises(DataError, match=r"mask .*masks/val/1.png holds label 9, outside the 3 classes"):
        Trainer(cfg, DistEnv())  # while the run is set up, not at its first validation
    with pytest.raises(DataError, match=r"masks/val/1.png holds label 9"):
        fit(cfg)
    assert not os.path.exists(tmp_path / "out" / "seg" / "last.pth")


# ------------------------------------------------------------------------------------------------ 6. escapes

HOSTILE = "\x1b[2J\x1b[31mfake\x1b[0m"


def assert_escaped(text):
    assert "\x1b" not in text and "\r" not in text and "\\x1b[2J" in text, text


def test_names_from_files_are_escaped_in_detect_segment_and_segmentation_validate(tmp_path, capsys):
    image = png(tmp_path / f"img{HOSTILE}" / f"{HOSTILE}.png")
    det = detection_checkpoint(tmp_path / "det.pth", class_names=(HOSTILE + "a", "dog\r" + HOSTILE))
    code, out, err = run_cli(
        capsys, "detect", "--weights", det, image, "--score-thresh", "0", "--out-dir", tmp_path / "det"
    )
    assert code == 0, err
    assert_escaped(out + err)
    assert "\\x1b[2J\\x1b[31mfake" in out.split("\n", 1)[1]  # a class name, not only the file name
    torch.manual_seed(0)
    seg = create_any_model(
        "fpn_inceptionnext_a", num_classes=3, pretrained_cfg_overlay=dict(TINY_CFG, label_names=[HOSTILE, "b\rc", "d"])
    )
    weights = str(save_model(seg.eval(), tmp_path / "seg.pth"))
    code, out, err = run_cli(capsys, "segment", "--weights", weights, image, "-o", tmp_path / "seg")
    assert code == 0, err
    assert_escaped(out + err)
    data = tmp_path / "masks"
    for split in ("train", "val"):
        png(data / "images" / split / "0.png")
        os.makedirs(data / "masks" / split)
        Image.fromarray(np.arange(32 * 32).reshape(32, 32).astype(np.uint8) % 3).save(data / "masks" / split / "0.png")
    (data / "classes.txt").write_text(f"{HOSTILE}\nb\x07c\nd\n")
    code, out, err = run_cli(
        capsys,
        "validate",
        "fpn_inceptionnext_a",
        "--weights",
        weights,
        "--dataset",
        "masks",
        "--data-dir",
        data,
        "--workers",
        "0",
        "--no-progress",
    )
    assert code == 0, err
    assert_escaped(out + err)


# ------------------------------------------------------------------------------------------------ 8. runtime files


def test_runtime_files_and_mismatched_models_are_one_line_errors(files, tmp_path, capsys):
    import shutil

    import openvino as ov

    xml = tmp_path / "cls.xml"
    ov.save_model(openvino_core().read_model(files["onnx"]), str(xml), compress_to_fp16=False)
    shutil.copy(xml, tmp_path / "nobin.xml")
    (tmp_path / "cut.xml").write_bytes(xml.read_bytes())
    (tmp_path / "cut.bin").write_bytes((tmp_path / "cls.bin").read_bytes()[:1000])
    (tmp_path / "garbage.onnx").write_bytes(os.urandom(4000))
    cases = [
        (["predict", tmp_path / "nobin.xml", files["image"]], r"nobin.xml: its weights file .*nobin.bin is missing"),
        (
            ["predict", tmp_path / "cut.xml", files["image"]],
            r"cut.xml: cannot be read as an OpenVINO IR with cut.bin \(1000 bytes\)",
        ),
        (["predict", tmp_path / "garbage.onnx", files["image"]], r"garbage.onnx: not a readable ONNX file"),
        (
            ["predict", files["onnx"], files["image"], "--img-size", "48"],
            r"cls.onnx: the file takes 3x32x32 \(CxHxW\) inputs, not 3x48x48",
        ),
        (
            ["validate", files["onnx"], "--dataset", "digits", "--workers", "0", "--img-size", "48", "--no-progress"],
            r"cls.onnx: the file takes 3x32x32 \(CxHxW\) inputs, not 3x48x48",
        ),
        (
            ["validate", "--weights", files["pth"], "--dataset", "digits", "--workers", "0", "--no-progress"],
            r"cls.pth: the model predicts 3 classes, the dataset digits has 10",
        ),
    ]
    import re

    for argv, message in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 1 and re.search(message, err), (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


# ------------------------------------------------------------------------------------------------ 5. outputs


def test_detect_and_segment_keep_same_named_images_apart_and_never_write_over_outputs(files, tmp_path, capsys):
    a, b = png(tmp_path / "a" / "x.png", seed=1), png(tmp_path / "b" / "x.png", seed=2)
    out = tmp_path / "det"
    code, stdout, err = run_cli(
        capsys,
        "detect",
        "--weights",
        files["det"],
        tmp_path / "a",
        tmp_path / "b",
        "--score-thresh",
        "0",
        "--out-dir",
        out,
        "--json",
    )
    assert code == 0, err
    pictures = [r["picture"] for r in json.loads(stdout)["images"]]
    assert pictures == [str(out / "a" / "x_detections.png"), str(out / "b" / "x_detections.png")]
    assert open(pictures[0], "rb").read() != open(pictures[1], "rb").read()
    before = open(pictures[0], "rb").read()
    code, _, err = run_cli(capsys, "detect", "--weights", files["det"], tmp_path / "a", "--out-dir", out)
    assert code == 1 and "a/x_detections.png exists; pass --overwrite" in err
    assert open(pictures[0], "rb").read() == before
    assert run_cli(capsys, "detect", "--weights", files["det"], tmp_path / "a", "--out-dir", out, "--overwrite")[0] == 0
    png(tmp_path / "a" / "x.jpg", seed=3)
    code, _, err = run_cli(capsys, "detect", "--weights", files["det"], tmp_path / "a", "--out-dir", tmp_path / "n")
    assert code == 1 and "x.jpg and" in err and "would write the same outputs" in err
    assert not os.path.exists(tmp_path / "n")
    code, stdout, err = run_cli(capsys, "segment", "--weights", files["seg"], a, b, "-o", tmp_path / "seg")
    assert code == 1 and f"{a} and {b} would write the same outputs (x_*)" in err
    code, stdout, err = run_cli(capsys, "segment", "--weights", files["seg"], tmp_path / "b", "-o", tmp_path / "seg")
    assert code == 0 and os.path.isfile(tmp_path / "seg" / "b" / "x_mask.png"), err
    code, _, err = run_cli(capsys, "segment", "--weights", files["seg"], tmp_path / "b", "-o", tmp_path / "seg")
    assert code == 1 and "b/x_mask.png exists" in err


# ------------------------------------------------------------------------------------------------ 4. resume


def test_resume_with_a_changed_schedule_is_refused_and_config_yaml_keeps_what_trained(tmp_path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_train import make_folder, toy_cfg  # noqa: F401  (registers its tiny models)

    from inceptionnext.train import CheckpointError as TrainCheckpointError
    from inceptionnext.train import fit, parse_config

    data = make_folder(tmp_path / "data", classes=2, train=4, val=2)
    res = fit(toy_cfg(tmp_path, data, model="_test_plain_net", epochs=2, stop_after_epoch=1, plot=False))
    recorded = open(res.config_path).read()
    for argv, message in (
        (["--lr", "0.5"], r"lr 0.5 \(the run has 0.002\)"),
        (["--epochs", "4"], r"epochs 4 \(the run has 2\)"),
    ):
        with pytest.raises(TrainCheckpointError, match=r"cannot resume .*last.pth with a changed schedule: " + message):
            fit(parse_config(["--resume", res.last_checkpoint] + argv))
        assert open(res.config_path).read() == recorded
    resumed = fit(parse_config(["--resume", res.last_checkpoint]))
    assert resumed.epochs_done == 2 and "lr: 0.002" in open(res.config_path).read()


# ------------------------------------------------------------------------------------------------ 10. floor


def test_quantize_refuses_to_judge_the_floor_on_too_few_images_and_seals_what_it_writes(files, tmp_path, capsys):
    """Too few check images are refused before anything is written, whatever the floor; on enough, the file is
    written with a checksum that verify reads and predict holds it to. The quality floors are all off (top-1
    change included): which images of an untrained model flip in int8 differs between CPUs."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "q.onnx"
    base = [
        "quantize",
        "--weights",
        files["pth"],
        "--calibration",
        "digits",
        "--output",
        out,
        "--num-calibration",
        "8",
        "--min-agreement",
        "0",
        "--min-sqnr",
        "-100",
        "--max-top1-change",
        "100",
    ]
    code, _, err = run_cli(capsys, *base, "--num-check", "1")
    assert code == 1 and "only 1 held-out images to judge the accuracy floor on; at least 32 are needed" in err
    assert not out.exists()
    code, _, err = run_cli(capsys, *base, "--num-check", "32")
    assert code == 0 and out.exists(), err
    code, stdout, _ = run_cli(capsys, "verify", out)
    assert code == 0 and "checksum verified" in stdout
    flip_tail(out, 0.6)
    code, _, err = run_cli(capsys, "predict", out, files["image"])
    assert code == 1 and "q.onnx" in err and ("does not match the checksum" in err or "not a readable ONNX" in err)


# ------------------------------------------------------------------------------------------------ 7. workers, Ctrl-C


def _train_cmd(tmp_path, data, *extra):
    return [
        sys.executable,
        "-c",
        "import sys; sys.path.insert(0, 'tests'); import test_train; "
        "from inceptionnext.cli import main; sys.exit(main(sys.argv[1:]))",
        "train",
        "--model",
        "_test_plain_net",
        "--data-dir",
        str(data),
        "--img-size",
        "32",
        "--batch-size",
        "4",
        "--warmup-epochs",
        "0",
        "--aa",
        "none",
        "--color-jitter",
        "0",
        "--output",
        str(tmp_path / "out"),
        "--experiment",
        "run",
        "--progress",
        "false",
        "--plot",
        "false",
        *extra,
    ]


def test_a_data_error_in_a_loader_worker_is_one_line(tmp_path, capfd):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_train import make_folder

    data = make_folder(tmp_path / "data", classes=2, train=4, val=2)
    (data / "train" / "class_0" / "9.png").write_bytes(b"not a png at all")
    # in this process (the loader worker is a process of its own all the same); capfd also takes what the
    # worker would write to the standard error
    capfd.readouterr()
    code = main(_train_cmd(tmp_path, data, "--workers", "1", "--epochs", "1")[3:])
    err = capfd.readouterr().err
    assert code == 1, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "9.png" in errors[0], err[-3000:]
    assert "Traceback" not in err and "DataLoader worker" not in err


def test_ctrl_c_exits_130_with_one_line_saying_how_to_resume(tmp_path):
    import signal
    import time

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_train import make_folder

    data = make_folder(tmp_path / "data", classes=2, train=4, val=2)
    proc = subprocess.Popen(
        _train_cmd(tmp_path, data, "--workers", "0", "--epochs", "10000"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        # Ctrl-C as a terminal delivers it, even where pytest itself was started in the background by a shell
        # (which ignores SIGINT there, and a process inherits an ignored signal)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    last = tmp_path / "out" / "run" / "last.pth"
    deadline = time.time() + 180
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"interrupted: resume with: inceptionnext train --resume {last}"
    )


# ------------------------------------------------------------------------------------------------ 9. memory


def test_a_huge_image_is_refused_from_its_header_with_memory_bounded(files, tmp_path):
    # a 10000 x 10000 PNG (a few hundred KB on disk, 300 MB decoded, gigabytes as class probabilities): segment
    # and detect refuse it, naming the limit, in a process whose peak RSS stays far below its decoded size
    big = tmp_path / "big.png"
    Image.new("L", (10000, 10000)).save(big, optimize=False)
    # the peak is the process's own (VmHWM, which starts afresh at exec): ru_maxrss would keep the high-water mark
    # of the forked copy of this test process, which grows with the tests that ran before in the same worker
    script = (
        "import sys; from inceptionnext.cli import main; rc = main(sys.argv[1:]); "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]; "
        "print('RSS', hwm); sys.exit(rc)"
    )
    for argv in (
        ["segment", "--weights", files["seg"], str(big), "-o", str(tmp_path / "seg")],
        ["detect", "--weights", files["det"], str(big), "--out-dir", str(tmp_path / "det")],
    ):
        p = subprocess.run(
            [sys.executable, "-c", script, *argv],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=REPO,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
        assert p.returncode == 1 and "big.png: 10000x10000 is 100000000 pixels, over the limit of 16777216" in p.stderr
        rss_mb = int(p.stdout.split("RSS")[-1]) / 1024
        # the libraries alone take 1.4-2.0 GB; decoded, it took 4.6-6 GB
        assert rss_mb < 2500, rss_mb


# ------------------------------------------------------------------------------- 12. COCO checks, message by message


def _checked(tmp_path, masks=None, files=(("a.png", 40, 30),), **doc):
    """check_annotations on a COCO document over tmp_path/img (one 40x30 image, one box, one category unless
    `doc` says otherwise): (the checked document, the annotation file's path, the image folder)."""
    from inceptionnext.tasks.detection.data import check_annotations

    root = tmp_path / "img"
    root.mkdir(exist_ok=True)
    for name, w, h in files:
        Image.new("RGB", (w, h)).save(root / name)
    doc = dict(
        dict(
            images=[dict(id=1, file_name="a.png", width=40, height=30)],
            annotations=[dict(ANN)],
            categories=[dict(id=1, name="cat")],
        ),
        **doc,
    )
    path = str(tmp_path / "ann.json")
    kwargs = {} if masks is None else dict(masks=masks)
    return check_annotations(doc, path, str(root), **kwargs), path, str(root)


def _rle_string(height, width):
    from pycocotools import mask as mask_utils

    mask = np.zeros((height, width), np.uint8, order="F")
    mask[height // 4 : height // 2, width // 4 : width // 2] = 1
    return mask_utils.encode(np.asfortranarray(mask))["counts"].decode()


SEG = "{path}: annotation 1 (image a.png) "
SEGMENTATION_DEFECTS = {
    "two points": ([[2, 2, 12, 2]], "has a polygon of 4 coordinates; a polygon is at least 3 (x, y) points"),
    "odd": ([[2, 2, 12, 2, 12, 12, 2]], "has a polygon of 7 coordinates; a polygon is at least 3 (x, y) points"),
    "beyond 1e6": ([[2, 2, 12, 2, 12, 1000001]], "has a polygon coordinate that is not finite or beyond 1e6"),
    "strings": ([["2", "2", "12", "2", "12", "12"]], "has a polygon that is not a list of numbers"),
    "RLE size of floats": (dict(size=[30.0, 40.0], counts=[1200]), "has an RLE whose size a list of 2 items is not"),
    "RLE size of three": (dict(size=[30, 40, 1], counts=[1200]), "has an RLE whose size a list of 3 items is not"),
    "RLE size zero": (dict(size=[0, 40], counts=[0]), "has an RLE whose size a list of 2 items is not"),
    "RLE size text": (dict(size="30x40", counts=[1200]), "has an RLE whose size '30x40' is not"),
    "RLE of another size": (dict(size=[10, 20], counts=[200]), "has an RLE of size 20x10 (WxH) for an image of 40x30"),
    "RLE counts of floats": (dict(size=[30, 40], counts=[600.0, 600.0]), "has RLE counts that do not cover its 1200"),
    "RLE counts negative": (dict(size=[30, 40], counts=[1300, -100]), "has RLE counts that do not cover its 1200"),
    "RLE counts short": (dict(size=[30, 40], counts=[600, 599]), "has RLE counts that do not cover its 1200"),
    "RLE counts a number": (dict(size=[30, 40], counts=1200), "has RLE counts that are neither a string nor a list"),
    "RLE counts empty": (dict(size=[30, 40], counts=""), "has RLE counts that are neither a string nor a list"),
    "RLE of a larger image": (dict(size=[30, 40], counts=_rle_string(60, 80)), "has an RLE whose counts do not decode"),
    "text": ("polygon", "has a segmentation that is 'polygon', neither polygons nor an RLE"),
}
SEGMENTATION_ENDS = {
    "has an RLE whose size": " [height, width]",
    "do not cover its 1200": " pixels",
    "neither a string nor a list": " of run lengths",
    "do not decode": " to a 40x30 (WxH) mask",
}


@pytest.mark.parametrize("case", list(SEGMENTATION_DEFECTS))
def test_each_malformed_segmentation_is_named_in_full(tmp_path, case):
    from inceptionnext.tasks.detection.data import AnnotationError

    seg, why = SEGMENTATION_DEFECTS[case]
    why += next((end for start, end in SEGMENTATION_ENDS.items() if start in why), "")
    with pytest.raises(AnnotationError) as e:
        _checked(tmp_path, masks=True, annotations=[dict(ANN, segmentation=seg)])
    assert str(e.value) == (SEG + why).format(path=tmp_path / "ann.json")


def test_well_formed_polygons_and_rles_are_read_as_masks(tmp_path):
    segmentations = [
        [[2, 2, 12, 2, 12, 12]],  # the smallest polygon, 3 points
        [[2, 2, 12, 2, 12, 12, 2, 12], [20, 20, 30, 20, 25, 1e6]],  # 4 points; a coordinate at the bound
        dict(size=[30, 40], counts=[0, 600, 600]),  # run lengths, the first pixel set
        dict(size=[30, 40], counts=[1200]),
        dict(size=[30, 40], counts=_rle_string(30, 40)),
    ]
    anns = [dict(ANN, id=i + 1, segmentation=s) for i, s in enumerate(segmentations)]
    anns.append(dict(ANN, id=9, image_id=2, bbox=[0, 0, 10, 1], segmentation=dict(size=[1, 40], counts=[5, 35])))
    images = [dict(id=1, file_name="a.png"), dict(id=2, file_name="row.png")]
    doc, _, _ = _checked(tmp_path, True, (("a.png", 40, 30), ("row.png", 40, 1)), images=images, annotations=anns)
    assert [a["segmentation"] for a in doc["annotations"]] == segmentations + [anns[-1]["segmentation"]]


@pytest.fixture
def coco_cases():
    many = [dict(id=i, name=f"c{i}") for i in range(1, 26)]
    return {
        "no images": (dict(images=[]), "{path}: the image list is empty"),
        "no categories": (dict(categories=[]), "{path}: the category list is empty"),
        "category twice": (
            dict(categories=[dict(id=1, name="cat"), dict(id=1, name="dog")]),
            "{path}: category id 1 appears twice",
        ),
        "image without file name": (
            dict(images=[dict(id=1, width=40, height=30)]),
            "{path}: image entry 0 lacks an integer 'id' or a 'file_name'",
        ),
        "image id text": (
            dict(images=[dict(id="1", file_name="a.png")]),
            "{path}: image entry 0 lacks an integer 'id' or a 'file_name'",
        ),
        "wrong width": (
            dict(images=[dict(id=1, file_name="a.png", width=41, height=30)]),
            "{path}: image a.png is 40x30, but the annotations say 41x30",
        ),
        "wrong height": (
            dict(images=[dict(id=1, file_name="a.png", width=40, height=29)]),
            "{path}: image a.png is 40x30, but the annotations say 40x29",
        ),
        "height only, wrong": (
            dict(images=[dict(id=1, file_name="a.png", height="30")]),
            "{path}: image a.png is 40x30, but the annotations say Nonex'30'",
        ),
        "two missing": (
            dict(images=[dict(id=i, file_name=n) for i, n in enumerate(("a.png", "b.png", "c.png"))]),
            "{path}: image file {root}/b.png is missing (and 1 more)",
        ),
        "annotation not an object": (dict(annotations=["box"]), "{path}: annotation entry 0 is 'box', not an object"),
        "annotation id text": (
            dict(annotations=[dict(ANN, id="a1")]),
            "{path}: annotation 'a1': its id is not an integer",
        ),
        "unknown image": (
            dict(annotations=[dict(ANN, image_id=99)]),
            "{path}: annotation 1 refers to image id 99, which is not in 'images'",
        ),
        "unknown category": (
            dict(annotations=[dict(ANN, category_id=99)], categories=many),
            "{path}: annotation 1 (image a.png) has category id 99, which is not among the categories "
            + str(list(range(1, 21))),
        ),
        "2001 annotations": (
            dict(annotations=[dict(ANN, id=i) for i in range(2001)]),
            "{path}: image a.png has more than 2000 annotations (the limit per image, "
            "inceptionnext.tasks.detection.data.MAX_ANNOTATIONS_PER_IMAGE)",
        ),
        "bbox of three": (
            dict(annotations=[dict(ANN, bbox=[2, 2, 10])]),
            "{path}: annotation 1 (image a.png) has bbox a list of 3 items; expected [x, y, w, h] as four numbers",
        ),
        "bbox of text": (
            dict(annotations=[dict(ANN, bbox=["2", "2", "10", "10"])]),
            "{path}: annotation 1 (image a.png) has bbox a list of 4 items; expected [x, y, w, h] as four numbers",
        ),
        "left": (dict(annotations=[dict(ANN, bbox=[-1.5, 2, 10, 10])]), "[-1.5, 2, 10, 10] lies outside"),
        "top": (dict(annotations=[dict(ANN, bbox=[2, -1.5, 10, 10])]), "[2, -1.5, 10, 10] lies outside"),
        "right": (dict(annotations=[dict(ANN, bbox=[31.5, 2, 10, 10])]), "[31.5, 2, 10, 10] lies outside"),
        "bottom": (dict(annotations=[dict(ANN, bbox=[2, 25, 10, 10])]), "[2, 25, 10, 10] lies outside"),
        "at the size bound": (
            dict(annotations=[dict(ANN, bbox=[0, 0, 1e6, 10])]),
            "[0, 0, 1000000.0, 10] lies outside",
        ),
        "iscrowd 2": (
            dict(annotations=[dict(ANN, iscrowd=2)]),
            "{path}: annotation 1 (image a.png) has iscrowd 2; expected 0 or 1",
        ),
        "area inf": (
            dict(annotations=[dict(ANN, area=math.inf)]),
            "{path}: annotation 1 (image a.png) has area inf; expected a finite number >= 0",
        ),
        "area text": (
            dict(annotations=[dict(ANN, area="100")]),
            "{path}: annotation 1 (image a.png) has area '100'; expected a finite number >= 0",
        ),
    }


COCO_CASES = [
    "no images", "no categories", "category twice", "image without file name", "image id text", "wrong width",
    "wrong height", "height only, wrong", "two missing", "annotation not an object", "annotation id text",
    "unknown image", "unknown category", "2001 annotations", "bbox of three", "bbox of text", "left", "top", "right",
    "bottom", "at the size bound", "iscrowd 2", "area inf", "area text",
]  # fmt: skip


@pytest.mark.parametrize("case", COCO_CASES)
def test_each_coco_refusal_names_the_file_the_entry_and_the_fault_in_full(tmp_path, coco_cases, case):
    from inceptionnext.tasks.detection.data import AnnotationError

    doc, message = coco_cases[case]
    if message.endswith("lies outside"):
        message = "{path}: annotation 1: box [x, y, w, h] = " + message + " its image a.png (40x30)"
    with pytest.raises(AnnotationError) as e:
        _checked(tmp_path, **doc)
    assert str(e.value) == message.format(path=tmp_path / "ann.json", root=tmp_path / "img")


def test_an_unreadable_or_oversized_image_is_named_with_its_path(tmp_path, monkeypatch):
    from inceptionnext.tasks.detection.data import AnnotationError

    name = "x" * 150 + ".png"  # PIL's message names the file: long enough to be cut at 150 characters
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / name).write_bytes(b"not an image")
    with pytest.raises(AnnotationError) as e:
        _checked(tmp_path, files=(), images=[dict(id=1, file_name=name)])
    path, image = tmp_path / "ann.json", tmp_path / "img" / name
    reason = f"cannot identify image file {str(image)!r}"[:150]
    assert str(e.value) == f"{path}: image {image} cannot be read (UnidentifiedImageError: {reason}...)"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1200)  # a 40x30 image is at the limit: read
    assert _checked(tmp_path)[0]["images"][0]["width"] == 40
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1199)
    with pytest.raises(AnnotationError) as e:
        _checked(tmp_path)
    assert str(e.value) == (
        f"{path}: image {tmp_path / 'img' / 'a.png'} is 40x30 (1200 pixels), over the decompression limit of 1199 pixels"
    )


def test_the_checked_document_holds_cocos_defaults_and_what_the_file_had(tmp_path):
    from inceptionnext.tasks.detection.data import AnnotationError

    anns = [
        dict(image_id=1, category_id=7, bbox=[2, 2, 10, 5], segmentation=[]),  # no id, iscrowd, area
        dict(id=7, image_id=1, category_id=3, bbox=[-1, -1, 42, 32], iscrowd=True, area=0),  # on the tolerance
        dict(image_id=1, category_id=3, bbox=[0, 0, 4, 4], iscrowd=1, segmentation={}, extra="kept"),
    ]
    categories = [dict(id=7), dict(id=3, name=5, supercategory="animal")]
    images = [dict(id=1, file_name="a.png", license=2)]
    doc, path, _ = _checked(tmp_path, images=images, annotations=anns, categories=categories, info=dict(year=2024))
    assert doc["annotations"] == [
        dict(id=8, image_id=1, category_id=7, bbox=[2, 2, 10, 5], iscrowd=0, area=50.0),
        dict(id=7, image_id=1, category_id=3, bbox=[-1, -1, 42, 32], iscrowd=1, area=0),
        dict(id=9, image_id=1, category_id=3, bbox=[0, 0, 4, 4], iscrowd=1, area=16.0, extra="kept"),
    ]
    assert all(type(a["iscrowd"]) is int for a in doc["annotations"])
    assert doc["categories"] == [dict(id=7, name="7"), dict(id=3, name="5", supercategory="animal")]
    assert doc["images"] == [dict(id=1, file_name="a.png", license=2, width=40, height=30)]
    assert doc["info"] == dict(year=2024)  # pycocotools' COCO.info() reads it
    anns = [dict(image_id=1, category_id=1, bbox=[2, 2, 10, 10]) for _ in range(2000)]  # the limit is inclusive
    assert [a["id"] for a in _checked(tmp_path, annotations=anns)[0]["annotations"]] == list(range(1, 2001))
    assert _checked(tmp_path)[0]["annotations"] == [ANN]  # boxes only unless masks are asked for
    with pytest.raises(AnnotationError) as e:
        _checked(tmp_path, masks=True, annotations=[dict(ANN, segmentation=[])])
    assert str(e.value) == f"{path}: masks were asked for, but annotation 1 has no 'segmentation'"


def test_absolute_file_names_in_the_annotation_files_folder_are_read(tmp_path):
    from inceptionnext.tasks.detection.data import AnnotationError, check_annotations

    bundle = tmp_path / "bundle"
    (bundle / "assets").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(bundle / "assets" / "a.png")
    image = str(bundle / "assets" / "a.png")
    doc = dict(images=[dict(id=1, file_name=image)], annotations=[ANN], categories=[dict(id=1, name="cat")])
    (tmp_path / "img").mkdir()
    assert check_annotations(doc, str(bundle / "ann.json"), str(tmp_path / "img"))["images"][0]["width"] == 40
    with pytest.raises(AnnotationError, match=r"is an absolute path .* and the annotation file's folder .*/elsewhere"):
        check_annotations(doc, str(tmp_path / "elsewhere" / "ann.json"), str(tmp_path / "img"))


# ----------------------------------------------------------------------------- 13. mask folders, message by message


def _mask_pairs(root, pairs, split="train"):
    """root/images/<split>/<name>.png (an 8x6 RGB picture) and root/masks/<split>/<name>.png for each
    (name, mask array); a mask of None is left out."""
    for name, mask in pairs:
        png(root / "images" / split / f"{name}.png", (8, 6))
        os.makedirs(root / "masks" / split, exist_ok=True)
        if mask is not None:
            Image.fromarray(mask).save(root / "masks" / split / f"{name}.png")
    return str(root)


def test_a_mask_folder_pairs_images_and_masks_or_names_what_is_missing(tmp_path):
    from inceptionnext.data.folders import DataError
    from inceptionnext.tasks.segmentation.data import MaskFolderDataset

    labels = np.zeros((6, 8), np.uint8)
    root = _mask_pairs(tmp_path / "d", [("b", labels), ("a", labels + 1)])
    ds = MaskFolderDataset(root, "train", 3)
    assert ds.samples == [(f"{root}/images/train/{n}.png", f"{root}/masks/train/{n}.png") for n in "ab"]
    assert ds.class_names == ["0", "1", "2"] and len(ds) == 2
    assert MaskFolderDataset(root, "train", 3, class_names=("x", "y", "z")).class_names == ["x", "y", "z"]
    Image.new("L", (8, 6), 77).save(f"{root}/images/train/a.png")  # a grey picture is read as RGB
    image, mask = ds[0]  # a.png: label 1 everywhere
    assert image.dtype == torch.uint8 and image.tolist() == [[[77] * 8] * 6] * 3 and mask.dtype == torch.int64
    assert mask.tolist() == [[1] * 8] * 6
    assert MaskFolderDataset(root, "train", 3, transform=lambda i, m: (i.shape, m.sum()))[1] == ((3, 6, 8), 0)
    cases = [
        (dict(root=str(tmp_path / "none")), f"segmentation data directory not found: {tmp_path / 'none'}"),
        (dict(root=""), "segmentation data directory not found: "),
        (
            dict(split="val"),
            f"split 'val' has no images folder {root}/images/val (found in {root}/images: ['train']); expected "
            f"{root}/images/<split>/ and {root}/masks/<split>/",
        ),
        (
            dict(mask_dir="labels"),
            f"split 'train' has no masks folder {root}/labels/train (found in {root}/labels: nothing); expected "
            f"{root}/images/<split>/ and {root}/labels/<split>/",
        ),
    ]
    for kwargs, message in cases + [(dict(split="empty"), f"no images found in {root}/images/empty")]:
        if kwargs.get("split") == "empty":
            os.makedirs(tmp_path / "d" / "masks" / "empty")
            os.makedirs(tmp_path / "d" / "images" / "empty")
        with pytest.raises(DataError) as e:
            MaskFolderDataset(**dict(dict(root=root, split="train", num_classes=3), **kwargs))
        assert str(e.value) == message
    _mask_pairs(tmp_path / "d", [("c", None)])  # an image without a mask
    with pytest.raises(DataError) as e:
        MaskFolderDataset(root, "train", 3)
    assert str(e.value) == (
        f"1 files without a partner in split 'train', e.g. {root}/images/train/c.png has no mask in {root}/masks/train"
    )
    os.remove(f"{root}/images/train/c.png")
    for name in ("d", "e"):  # masks without an image
        Image.fromarray(labels).save(f"{root}/masks/train/{name}.png")
    with pytest.raises(DataError) as e:
        MaskFolderDataset(root, "train", 3)
    assert str(e.value) == (
        f"2 files without a partner in split 'train', e.g. {root}/masks/train/d.png has no image in {root}/images/train"
    )


def test_mask_labels_are_checked_against_the_classes_in_every_mode(tmp_path):
    from inceptionnext.data.folders import DataError
    from inceptionnext.tasks.segmentation.data import MaskFolderDataset

    wide = np.zeros((6, 8), np.uint16)
    wide[0, :3] = (299, 255, 12)  # a 16-bit mask of 300 classes, 255 ignored
    palette_mask = Image.fromarray(np.full((6, 8), 2, np.uint8)).convert("P")
    ade = np.array([[0, 1, 150, 2] * 2] * 6, np.uint8)
    root = _mask_pairs(tmp_path / "d", [("a", wide), ("b", np.full((6, 8), 255, np.uint8)), ("c", ade)])
    palette_mask.save(f"{root}/masks/train/b.png")
    ds = MaskFolderDataset(root, "train", 300)
    ds.check_files()
    assert ds.read_mask(f"{root}/masks/train/a.png")[0, :4].tolist() == [299, 255, 12, 0]
    assert ds.read_mask(f"{root}/masks/train/b.png").tolist() == [[2] * 8] * 6
    reduced = MaskFolderDataset(root, "train", 150, reduce_zero_label=True)
    assert reduced.read_mask(f"{root}/masks/train/c.png")[0, :4].tolist() == [255, 0, 149, 1]
    cases = [
        (
            MaskFolderDataset(root, "train", 299),
            "a",
            "299, outside the 299 classes (0..298, or 255 for ignored pixels)",
        ),
        (
            MaskFolderDataset(root, "train", 150),
            "c",
            "150, outside the 150 classes (0..149, or 255 for ignored pixels)",
        ),
        (MaskFolderDataset(root, "train", 149, reduce_zero_label=True), "c", "149, outside the 149 classes"),
    ]
    for ds, name, says in cases:
        with pytest.raises(DataError) as e:
            ds.read_mask(f"{root}/masks/train/{name}.png")
        hint = "" if ds.reduce_zero_label else "; is this ADE20K without reduce_zero_label?"
        tail = "" if "(0.." in says else " (0..148, or 255 for ignored pixels)"
        assert str(e.value) == f"mask {root}/masks/train/{name}.png holds label {says}{tail}{hint}"
    png(f"{root}/masks/train/a.png", (8, 6))  # a colour picture where a mask should be
    with pytest.raises(DataError) as e:
        MaskFolderDataset(root, "train", 300).read_mask(f"{root}/masks/train/a.png")
    assert str(e.value) == (
        f"mask {root}/masks/train/a.png is a RGB image; masks are single-channel PNGs of class indices"
    )


def test_every_pair_of_a_mask_folder_is_checked_before_training(tmp_path, monkeypatch):
    from inceptionnext.data.folders import DataError
    from inceptionnext.tasks.segmentation.data import MaskFolderDataset

    labels = np.zeros((6, 8), np.uint8)
    root = _mask_pairs(tmp_path / "d", [("a", labels), ("b", labels), ("c", labels)])
    image, mask = f"{root}/images/train/c.png", f"{root}/masks/train/c.png"

    def refusal(ds=None):
        with pytest.raises(DataError) as e:
            (ds or MaskFolderDataset(root, "train", 3)).check_files()
        return str(e.value)

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 48)  # an 8x6 image is at the limit: read
    MaskFolderDataset(root, "train", 3).check_files()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 47)
    assert refusal() == (
        f"image {root}/images/train/a.png is 8x6 (48 pixels), over the decompression limit of 47 pixels"
    )
    monkeypatch.undo()
    Image.fromarray(np.zeros((4, 8), np.uint8)).save(mask)  # the last pair: a mask of another size
    assert refusal() == f"mask {mask} is 8x4 but its image {image} is 8x6"
    with pytest.raises(DataError) as e:
        MaskFolderDataset(root, "train", 3)[2]
    assert str(e.value) == f"mask {mask} is 8x4 but its image {image} is 8x6"
    Image.fromarray(np.full((6, 8), 3, np.uint8)).save(mask)
    assert refusal() == f"mask {mask} holds label 3, outside the 3 classes (0..2, or 255 for ignored pixels)" + (
        "; is this ADE20K without reduce_zero_label?"
    )
    open(mask, "wb").write(b"not a picture")
    assert refusal() == f"cannot read mask {mask}: UnidentifiedImageError: cannot identify image file {mask!r}"
    Image.fromarray(labels).save(mask)
    open(image, "wb").write(b"not a picture")
    assert refusal() == f"cannot read image {image}: UnidentifiedImageError: cannot identify image file {image!r}"
    with pytest.raises(DataError) as e:
        MaskFolderDataset(root, "train", 3)[2]
    assert str(e.value) == f"cannot read image {image}: cannot identify image file {image!r}"


def test_class_names_of_a_mask_folder_come_from_classes_txt_or_the_indices(tmp_path):
    from inceptionnext.data.folders import DataError
    from inceptionnext.tasks.segmentation.data import read_class_names

    path = tmp_path / "classes.txt"
    assert read_class_names(str(tmp_path), 3) == ["0", "1", "2"]
    with pytest.raises(DataError) as e:
        read_class_names(str(tmp_path), None)
    assert str(e.value) == f"set num_classes for the mask folder {tmp_path}, or list the class names in {path}"
    path.write_text("road\n\n  sky \nsea lion\n")  # blank lines skipped, names stripped
    assert read_class_names(str(tmp_path), None) == read_class_names(str(tmp_path), 3) == ["road", "sky", "sea lion"]
    with pytest.raises(DataError) as e:
        read_class_names(str(tmp_path), 4)
    assert str(e.value) == f"{path} names 3 classes but num_classes is 4"
