"""Faults on the newer surfaces: two runs sharing a folder, a file changed under its checksum or swapped between
its check and its read, exported archives `verify` must know, and COCO data that breaks only when it is read
(malformed RLEs, 16-bit and truncated images, duplicate category names, absurd sizes and nesting), and `detect` /
`segment` runs racing for one output folder. One test per fault; each fails on the code before its fix."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from test_dense_faults import coco_files, files, flip_tail, png, run_cli, tiny_classifier  # noqa: F401
from test_train import REPO, make_folder

from inceptionnext import checksum

TRAIN_ARGS = [
    "--model",
    "_test_plain_net",
    "--img-size",
    "32",
    "--batch-size",
    "4",
    "--epochs",
    "2",
    "--warmup-epochs",
    "0",
    "--aa",
    "none",
    "--color-jitter",
    "0",
    "--workers",
    "0",
    "--progress",
    "false",
    "--plot",
    "false",
    "--experiment",
    "run",
]

# a run that, once its folder is chosen, waits until the other run has chosen its own: the two are then sure to
# have started together, whatever the machine's load
TOGETHER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, REPO_PATH)
    sys.path.insert(0, os.path.join(REPO_PATH, "tests"))
    import test_train  # noqa: F401  (registers its tiny models with timm)
    from inceptionnext.train import fit, parse_config
    from inceptionnext.train.engine import Trainer

    barrier, argv = sys.argv[1], sys.argv[2:]
    prepare = Trainer._prepare_run_folder
    def prepare_then_wait(self):
        prepare(self)
        open(os.path.join(barrier, str(os.getpid())), "w").close()
        deadline = time.time() + 240
        while len(os.listdir(barrier)) < 2 and time.time() < deadline:
            time.sleep(0.05)
    Trainer._prepare_run_folder = prepare_then_wait
    print("OUT", fit(parse_config(argv)).out_dir)
""")


def _run_folder_lr(folder):
    from inceptionnext.train.checkpoint import load_checkpoint_file

    lrs = {float(re.search(r"^lr: (.+)$", open(os.path.join(folder, "config.yaml")).read(), re.M).group(1))}
    for name in ("last.pth", "model_best.pth"):
        lrs.add(float(load_checkpoint_file(os.path.join(folder, name))["config"]["lr"]))
    return lrs


# ------------------------------------------------------------------------------------------ 1. one run, one folder


def test_two_runs_started_together_into_one_folder_each_keep_their_own_files(tmp_path):
    data = make_folder(tmp_path / "data", classes=2, train=4, val=2)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = tmp_path / "together.py"
    script.write_text(TOGETHER.replace("REPO_PATH", repr(REPO)))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(barrier), "--data-dir", str(data), "--output", str(tmp_path / "out")]
            + TRAIN_ARGS
            + ["--lr", lr],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
        for lr in ("0.001", "0.003")
    ]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    folders = [re.search(r"^OUT (.+)$", out, re.M).group(1) for out, _ in outs]
    assert sorted(os.path.basename(f) for f in folders) == ["run", "run-2"], folders
    assert "run is in use by another run (process " in "".join(out + err for out, err in outs)
    for folder, lr in zip(folders, (0.001, 0.003)):  # each folder holds one run's files, all of them
        assert _run_folder_lr(folder) == {lr}
        assert len(open(os.path.join(folder, "log.csv")).read().strip().splitlines()) == 3


KILLED_AFTER_EPOCH_1 = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, REPO_PATH)
    sys.path.insert(0, os.path.join(REPO_PATH, "tests"))
    import test_train  # noqa: F401
    from inceptionnext.train import fit, parse_config
    from inceptionnext.train.engine import Trainer
    save = Trainer._save
    def save_then_die(self, epoch, is_best):
        save(self, epoch, is_best)
        os.kill(os.getpid(), signal.SIGKILL)  # the lock is never released by the run itself
    Trainer._save = save_then_die
    fit(parse_config(sys.argv[1:]))
""")


def test_a_live_run_holds_its_folder_and_a_killed_one_does_not(tmp_path):
    from test_train import run_script

    from inceptionnext.train import TrainError, fit, parse_config
    from inceptionnext.utils.folder_lock import try_lock_folder

    data = make_folder(tmp_path / "data", classes=2, train=4, val=2)
    argv = ["--data-dir", str(data), "--output", str(tmp_path / "out")] + TRAIN_ARGS
    p = run_script(tmp_path, KILLED_AFTER_EPOCH_1, *argv, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == -9, p.stderr[-2000:]
    folder = tmp_path / "out" / "run"
    last = folder / "last.pth"
    assert last.is_file() and (folder / ".lock").is_file()
    held = try_lock_folder(str(folder))  # this process plays a live run holding the folder
    assert held is not None  # the killed run's lock went with it
    with pytest.raises(
        TrainError, match=rf"{re.escape(str(folder))} is in use by another run \(process {os.getpid()} on"
    ):
        fit(parse_config(["--resume", str(last)]))
    with pytest.raises(TrainError, match=r"is in use by another run"):
        fit(parse_config(argv + ["--resume", "auto"]))
    held.release()
    assert fit(parse_config(["--resume", str(last)])).epochs_done == 2


# ----------------------------------------------------------------------------- 2. the checksum covers the whole IR


@pytest.fixture(scope="module")
def int8_ir(files, tmp_path_factory):  # noqa: F811  (the fixture imported above)
    """An int8 OpenVINO IR as `quantize` writes it."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from inceptionnext.cli import main

    out = tmp_path_factory.mktemp("ir") / "q.xml"
    argv = ["quantize", "--weights", files["pth"], "--calibration", "digits", "--output", str(out)]
    argv += ["--num-calibration", "8", "--num-check", "32", "--min-agreement", "0", "--min-sqnr", "-100"]
    assert main(argv) == 0
    return out


IR_EDITS = {  # what the fault probe changed; each leaves the graph's op types, shapes and constants as they were
    "FakeQuantize levels": (r'levels="256"', 'levels="254"'),
    "an epsilon": (r'(eps(?:ilon)?="[^"]+")', 'epsilon="0.5"'),
    "padding pairs": (r'pads_begin="1, 1"', 'pads_begin="2, 0"'),
    "GELU ERF -> TANH": (r'approximation_mode="ERF"', 'approximation_mode="TANH"'),
}


@pytest.mark.parametrize("edit", list(IR_EDITS))
def test_every_attribute_edit_of_a_sealed_ir_is_refused(int8_ir, tmp_path, capsys, edit):
    code, out, _ = run_cli(capsys, "verify", int8_ir)
    assert code == 0 and "checksum verified" in out
    pattern, replacement = IR_EDITS[edit]
    text = int8_ir.read_text()
    assert re.search(pattern, text), edit
    changed = tmp_path / "q.xml"
    changed.write_text(re.sub(pattern, replacement, text, count=1))
    shutil.copy(int8_ir.with_suffix(".bin"), tmp_path / "q.bin")
    code, _, err = run_cli(capsys, "verify", changed)
    assert code == 1 and "does not match the checksum" in err, (edit, err)
    image = png(tmp_path / "img.png")
    code, _, err = run_cli(capsys, "predict", changed, image)
    assert code == 1 and "does not match the checksum" in err and "Traceback" not in err


def test_a_changed_bin_or_checksum_record_is_refused(int8_ir, tmp_path, capsys):
    for name in ("bin", "record"):
        xml, weights = tmp_path / f"{name}.xml", tmp_path / f"{name}.bin"
        text = int8_ir.read_text()
        if name == "record":  # the record itself may not be moved or changed either
            text = re.sub(
                r"inceptionnext-ir-sha256:([0-9a-f])", lambda m: m.group(0)[:-1] + "f0"[m.group(1) == "f"], text
            )
        xml.write_text(text)
        shutil.copy(int8_ir.with_suffix(".bin"), weights)
        if name == "bin":
            flip_tail(weights, 0.5, 4)
        code, _, err = run_cli(capsys, "verify", xml)
        assert code == 1 and "does not match the checksum" in err, (name, err)


# --------------------------------------------------------------------- 3. read once, from the bytes that were checked


@pytest.fixture(scope="module")
def two_models(files, tmp_path_factory):  # noqa: F811
    """The fixture's classifier and another (its head's bias changed) as sealed .onnx files."""
    pytest.importorskip("openvino")
    from inceptionnext.deploy.export import export_model

    root = tmp_path_factory.mktemp("two")
    other = tiny_classifier()
    with torch.no_grad():
        other.get_classifier().bias.add_(torch.tensor([1.0, -1.0, 2.0]))
    shutil.copy(files["onnx"], root / "model.onnx")
    export_model(other, root / "other.onnx", "onnx", input_size=(3, 32, 32))
    return root, other


@pytest.mark.parametrize("path", ["onnx on onnxruntime", "onnx on openvino", "xml on openvino"])
def test_a_file_swapped_between_check_and_read_is_never_used(two_models, tmp_path, monkeypatch, path):
    from inceptionnext.deploy import runtimes

    root, other = two_models
    suffixes = (".onnx",) if path.startswith("onnx") else (".xml", ".bin")
    if path.startswith("xml"):  # the IRs as the library writes them
        for name in ("model", "other"):
            ir = runtimes.openvino_core().read_model(str(root / f"{name}.onnx"))
            runtimes.save_openvino_model(ir, str(root / f"{name}.xml"))
    for suffix in suffixes:
        shutil.copy(root / f"model{suffix}", tmp_path / f"model{suffix}")
    target = tmp_path / f"model{suffixes[0]}"
    check = "verify_runtime_model" if path.startswith("onnx") else "verify_openvino_files"
    original = getattr(runtimes, check)

    def check_then_swap(*args, **kwargs):
        result = original(*args, **kwargs)
        for suffix in suffixes:  # another process replaces the file right after it was checked
            shutil.copy(root / f"other{suffix}", tmp_path / f"model{suffix}")
        return result

    monkeypatch.setattr(runtimes, check, check_then_swap)
    model = runtimes.load_runtime(str(target), runtime=path.split(" on ")[1])
    assert target.read_bytes() == (root / f"other{suffixes[0]}").read_bytes()  # the swap happened
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want, swapped = tiny_classifier()(x), other(x)
    got = model(x)
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(got, swapped, atol=1e-2), path


# ------------------------------------------------------------------------------- 4. verify knows .pt and .pt2


def test_verify_knows_torchscript_and_torch_export_files(tmp_path, capsys):
    from inceptionnext.deploy.export import export_model

    model = tiny_classifier()
    for fmt, name, what in (
        ("torchscript", "m.pt", "a TorchScript module"),
        ("torch.export", "m.pt2", "a torch.export program"),
    ):
        path = tmp_path / name
        export_model(model, path, fmt, input_size=(3, 32, 32))
        code, out, err = run_cli(capsys, "verify", path)
        assert code == 0 and out == f"ok: {path}: {what}; checksum verified\n", err
        with zipfile.ZipFile(path) as zf:  # a copy without the checksum entry: another tool's file
            plain = tmp_path / ("plain_" + name)
            with zipfile.ZipFile(plain, "w") as out_zf:
                for info in zf.infolist():
                    if not info.filename.endswith(checksum.ARCHIVE_ENTRY):
                        out_zf.writestr(info, zf.read(info))
        code, out, err = run_cli(capsys, "verify", plain)
        assert code == 2 and out.startswith(f"unchecked: {plain}: {what}; readable"), err
        data = bytearray(path.read_bytes())  # bytes changed inside a stored entry
        with zipfile.ZipFile(path) as zf:
            info = max(zf.infolist(), key=lambda i: i.file_size)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2
        data[start : start + 8] = bytes(b ^ 0xFF for b in data[start : start + 8])
        (tmp_path / ("bad_" + name)).write_bytes(bytes(data))
        code, _, err = run_cli(capsys, "verify", tmp_path / ("bad_" + name))
        assert code == 1 and err.startswith("damaged: ") and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------------------------- 5. RLE masks


def _rle_larger_than_claimed():
    from pycocotools import mask as mask_utils

    mask = np.zeros((60, 80), np.uint8, order="F")
    mask[10:30, 20:50] = 1
    return mask_utils.encode(np.asfortranarray(mask))["counts"].decode()


@pytest.mark.parametrize("counts", ["a" * 2_000_000, "larger image"])
def test_a_malformed_rle_is_refused_up_front(tmp_path, counts):
    from inceptionnext.tasks.detection.data import AnnotationError, CocoDetectionSet

    counts = _rle_larger_than_claimed() if counts == "larger image" else counts
    ann = dict(id=1, image_id=1, category_id=1, bbox=[2, 2, 10, 10], segmentation=dict(size=[30, 40], counts=counts))
    root, path = coco_files(tmp_path, annotations=[ann])
    with pytest.raises(AnnotationError, match=r"annotation 1 \(image a.png\) has an RLE whose counts do not decode"):
        CocoDetectionSet(root, path, masks=True)


# ------------------------------------------------------------------------------------------------ 6. 16-bit images


def test_a_16_bit_coco_image_keeps_its_levels(tmp_path):
    from inceptionnext.tasks.detection.data import CocoDetectionSet

    root, path = coco_files(tmp_path)
    levels = (np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)  # 0 .. 59950
    Image.fromarray(levels).save(os.path.join(root, "a.png"))
    assert Image.open(os.path.join(root, "a.png")).mode.startswith("I")
    image, _ = CocoDetectionSet(root, path)[0]
    pixels = np.asarray(image)
    assert pixels.shape == (30, 40, 3) and len(np.unique(pixels)) > 200
    assert np.abs(pixels[..., 0].astype(float) - levels / 257.0).max() <= 1


# ---------------------------------------------------------------------------------------------- 7. size bounds


def test_an_absurd_image_size_is_refused_before_anything_is_built():
    from inceptionnext.models.model_api import check_img_size
    from inceptionnext.train import ConfigError, parse_config

    with pytest.raises(
        ConfigError, match=r"'img_size' in the command line: 1000000 is not allowed; it must be in \[0, 8192\]"
    ):
        parse_config(["--img-size", "1000000", "--dataset", "digits"])
    assert parse_config(["--img-size", "8192"]).img_size == 8192
    with pytest.raises(ValueError, match=r"--img-size 1000000 is too large: at most 8192 px"):
        check_img_size(tiny_classifier(), 1000000, "--img-size")


# ---------------------------------------------------------------------------------------------- 8. JSON nesting


def test_deeply_nested_annotations_are_one_named_error(tmp_path):
    from inceptionnext.tasks.detection.data import AnnotationError, CocoDetectionSet

    root, path = coco_files(tmp_path)
    text = open(path).read()  # a valid COCO file with one more key, nested 100000 lists deep
    open(path, "w").write(text[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(AnnotationError, match=r"ann.json: its JSON is nested deeper than can be read"):
        CocoDetectionSet(root, path)


# ----------------------------------------------------------------------------------- 9. detect/segment races


@pytest.mark.parametrize("command", ["detect", "segment"])
def test_racing_detect_or_segment_runs_never_overwrite_outputs(files, tmp_path, capsys, monkeypatch, command):  # noqa: F811
    from inceptionnext.data import images
    from inceptionnext.tasks.detection import infer as detection_infer
    from inceptionnext.tasks.segmentation import infer as segmentation_infer

    image = png(tmp_path / "img.png", seed=4)
    out = tmp_path / "out"
    theirs = b"the other run's picture"
    written = []

    def check_then_other_run_writes(targets, overwrite):  # the other run writes after this run's check
        images.refuse_existing(targets, overwrite)
        for target in targets:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "wb").write(theirs)
            written.append(str(target))

    module = detection_infer if command == "detect" else segmentation_infer
    monkeypatch.setattr(module, "refuse_existing", check_then_other_run_writes)
    weights = files["det"] if command == "detect" else files["seg"]
    argv = [command, "--weights", weights, image] + (["--out-dir", out] if command == "detect" else ["-o", out])
    code, _, err = run_cli(capsys, *argv)
    assert written and code == 1, err
    assert re.search(r"cannot write .*img_\w+\.png: it was created meanwhile by another process, and is kept", err)
    assert all(open(t, "rb").read() == theirs for t in written)
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


# ------------------------------------------------------------------------------------------- 10. truncated images


def test_a_truncated_coco_image_is_named_when_read(tmp_path):
    from inceptionnext.tasks.detection.data import CocoDetectionSet
    from inceptionnext.train import DataError

    root, path = coco_files(tmp_path)
    png(os.path.join(root, "a.png"), size=(40, 30), seed=5)
    data = open(os.path.join(root, "a.png"), "rb").read()
    open(os.path.join(root, "a.png"), "wb").write(data[: len(data) // 2])
    ds = CocoDetectionSet(root, path)  # the header is whole: the set is built
    with pytest.raises(DataError, match=r"img/a.png: cannot be read as an image .*truncated"):
        ds[0]


# ------------------------------------------------------------------------------------ 11. duplicate categories


def test_categories_sharing_a_name_are_kept_apart_with_a_warning(tmp_path):
    from inceptionnext.tasks.detection.data import CocoDetectionSet

    anns = [dict(id=i, image_id=1, category_id=i, bbox=[2, 2, 10, 10]) for i in (1, 2, 3)]
    cats = [dict(id=1, name="cat"), dict(id=2, name="cat"), dict(id=3, name="dog")]
    root, path = coco_files(tmp_path, annotations=anns, categories=cats)
    with pytest.warns(UserWarning, match=r"ann.json: categories share a name \('cat': ids 1, 2\); they are kept apart"):
        ds = CocoDetectionSet(root, path)
    assert ds.class_names == ["cat (id 1)", "cat (id 2)", "dog"]
    assert ds[0][1]["labels"].tolist() == [1, 2, 3]
