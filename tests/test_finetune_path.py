"""A new user's fine-tuning route, end to end: fine-tune inceptionnext_a with the shipped fine-tune config on a
generated 3-class ImageFolder, then validate, predict, convert and export the best checkpoint, EMA on and off;
every tool must score the same file at the same top-1, and load the weights that training scored."""

import hashlib
import os
import stat

import numpy as np
import pytest
import timm
import torch
from test_cli import run
from test_train import make_folder
from timm.data import create_transform

from inceptionnext.model_file import load_model
from inceptionnext.train import fit, parse_config
from inceptionnext.train.checkpoint import load_checkpoint_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINETUNE = os.path.join(REPO, "configs", "finetune", "inceptionnext_t.yaml")


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("pets"), classes=3, train=8, val=4)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Stand-in for published ImageNet weights (nothing is downloaded): a 1000-class inceptionnext_a file."""
    path = tmp_path_factory.mktemp("w") / "inceptionnext_a_in1k.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("inceptionnext_a", num_classes=1000).state_dict(), path)
    return path


def finetune_args(data, pretrained, out, ema):
    return [
        "--config",
        FINETUNE,
        "--model",
        "inceptionnext_a",
        "--weights",
        str(pretrained),
        "--data-dir",
        str(data),
        "--output",
        str(out),
        "--img-size",
        "32",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--epochs",
        "2",
        "--warmup-epochs",
        "0",
        "--lr-batch",
        "8",
        "--lr",
        "2e-3",
        "--amp",
        "none",
        "--progress",
        "false",
        "--plot",
        "false",
        "--ema",
        str(ema).lower(),
        "--ema-decay",
        "0.5",
        "--seed",
        "0",
    ]


def top1_of_predictions(predictions):
    hits = [p["top_k"][0]["label"] == os.path.basename(os.path.dirname(p["file"])) for p in predictions]
    return 100.0 * sum(hits) / len(hits)


@pytest.mark.slow
@pytest.mark.parametrize("ema", [True, False], ids=["ema", "no-ema"])
def test_finetune_then_every_tool_reports_the_same_top1(ema, data, pretrained, tmp_path, capsys):
    import json

    out = tmp_path / "out"
    cfg = parse_config(finetune_args(data, pretrained, out, ema))
    res = fit(cfg)
    captured = capsys.readouterr().out
    # point 4: the folder is named after the model that ran, not the config's default model
    assert res.out_dir == str(out / "finetune_inceptionnext_a")
    best = res.best_checkpoint
    ckpt = load_checkpoint_file(best)
    scored = "state_dict_ema" if ema else "state_dict"
    assert ckpt["scored_weights"] == scored
    # point 5: the logged lr is the base lr (2e-3 at global batch 8), not the stem's layer-decayed one
    assert res.history[0]["lr"] == pytest.approx(2e-3)
    assert "lr 2e-03" in captured.replace("2.00e-03", "2e-03")
    key = "ema_val_top1" if ema else "val_top1"
    trained_top1 = res.best_top1
    assert trained_top1 == max(r[key] for r in res.history)
    if ema:  # the EMA copy and the model really differ, so loading the wrong one would show
        assert any(not torch.equal(ckpt["state_dict"][k], ckpt["state_dict_ema"][k]) for k in ckpt["state_dict"])

    # validate: no model name needed (the checkpoint records it), and it says which weights it loaded
    code, vout, verr = run(
        capsys, "validate", "--weights", best, "--data-dir", data / "val", "--workers", "0", "--no-progress", "--json"
    )
    assert code == 0, verr
    v = json.loads(vout)
    assert v["top1"] == pytest.approx(trained_top1) and v["count"] == 12
    assert ("EMA weights" if ema else "model weights") in verr and "scored best in training" in verr

    # predict: the same top-1 over the same images, class names from the checkpoint
    code, pout, perr = run(capsys, "predict", "--weights", best, data / "val", "--json", "--no-progress")
    assert code == 0, perr
    assert top1_of_predictions(json.loads(pout)["predictions"]) == pytest.approx(trained_top1)

    # timm's own route loads the same (scored) weights
    via_timm = timm.create_model(
        "inceptionnext_a", num_classes=3, pretrained=True, pretrained_cfg_overlay=dict(file=best, num_classes=3)
    )
    for k, t in via_timm.state_dict().items():
        assert torch.equal(t, ckpt[scored][k]), k

    # convert (folded and not): the files validate to the same top-1; both formats get an ordinary file mode
    files = [("ft.safetensors", ())] + ([("ft_folded.safetensors", ("--deploy",)), ("ft.pth", ())] if ema else [])
    for name, extra in files:
        code, _, cerr = run(capsys, "convert", best, tmp_path / name, *extra)
        assert code == 0, cerr
        code, vout, verr = run(
            capsys,
            "validate",
            "--weights",
            tmp_path / name,
            "--data-dir",
            data / "val",
            "--workers",
            "0",
            "--no-progress",
            "--json",
        )
        assert code == 0, verr
        assert json.loads(vout)["top1"] == pytest.approx(trained_top1), name
    if ema:  # point 6: safetensors and .pth get the same, ordinary mode (not 0600)
        modes = {stat.S_IMODE(os.stat(tmp_path / n).st_mode) for n in ("ft.safetensors", "ft.pth")}
        assert len(modes) == 1 and modes.pop() == 0o666 & ~_umask()

    # export to ONNX: onnxruntime on the same preprocessing gives the same top-1
    ort = pytest.importorskip("onnxruntime")
    code, _, eerr = run(capsys, "export", "--weights", tmp_path / "ft.safetensors", "--output", tmp_path / "ft.onnx")
    assert code == 0, eerr
    model = load_model(tmp_path / "ft.safetensors")
    tf = create_transform(
        **{k: model.pretrained_cfg[k] for k in ("input_size", "interpolation", "crop_pct", "mean", "std")},
        is_training=False,
    )
    session = ort.InferenceSession(str(tmp_path / "ft.onnx"), providers=["CPUExecutionProvider"])
    from PIL import Image

    names = model.pretrained_cfg["label_names"]
    files = sorted((data / "val").rglob("*.png"))
    x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files]).numpy()
    pred = session.run(None, {session.get_inputs()[0].name: x})[0].argmax(1)
    onnx_top1 = 100.0 * np.mean([names[p] == f.parent.name for p, f in zip(pred, files)])
    assert onnx_top1 == pytest.approx(trained_top1)

    # --no-ema / --use-ema pick the other weights, and say so
    if ema:
        code, vout, verr = run(
            capsys,
            "validate",
            "--weights",
            best,
            "--data-dir",
            data / "val",
            "--workers",
            "0",
            "--no-progress",
            "--no-ema",
            "--json",
        )
        assert code == 0 and "not the EMA weights scored best" in verr
        best_epoch = res.history[res.best_epoch - 1]
        assert json.loads(vout)["top1"] == pytest.approx(best_epoch["val_top1"])

    if ema:
        return
    # point 4: a second run of the same command never replaces the first run's files
    before = sha(best)
    res2 = fit(parse_config(finetune_args(data, pretrained, out, ema) + ["--epochs", "1"]))
    assert res2.out_dir == str(out / "finetune_inceptionnext_a-2") and sha(best) == before
    assert "holds an earlier run" in capsys.readouterr().out


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
