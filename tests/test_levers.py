"""Deploy levers (issue 19): each lever against the exact model, the files that record them, quantize's floor
judged against the exact fp32 model (a lever that breaks it is refused), and the bf16 rule from the CPU flags."""

import json
import math

import pytest
import torch
import torch.nn as nn
from test_quantize import digits_model

from inceptionnext.deploy import levers as levers_mod
from inceptionnext.deploy.levers import (
    LEVERS,
    Lever,
    activation_error,
    apply_levers,
    lever_label,
    levers_of,
    parse_levers,
)
from inceptionnext.deploy.quantize import AccuracyFloorError, QualityFloor, QuantizeError, load_images, quantize_model
from inceptionnext.deploy.runtimes import load_runtime, read_file_metadata
from inceptionnext.models.fold import FusedMetaNeXtBlock
from inceptionnext.utils.cpu import cpu_flags, native_bf16

NO_FLOOR = QualityFloor(0.0, -math.inf, max_top1_change=math.inf)


@pytest.fixture(scope="module")
def model():
    return digits_model()


def test_fast_act_error_bound_over_the_range_that_matters():
    assert activation_error() == pytest.approx(0.0647, abs=5e-4)  # [-8, 8]: where trained pre-activations lie
    assert activation_error(-3, 3) <= activation_error() + 1e-9  # the worst error sits near the knees, |x| < 2
    assert activation_error(8, 100) < 1e-12  # exact beyond the knees: x * 1 and 0 * x


def test_fast_act_model_matches_the_exact_one_within_its_bound(model):
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    exact, fast = apply_levers(model, None), apply_levers(model, "fast-act")
    assert levers_of(exact) == () and levers_of(fast) == ("fast-act",) and levers_of(model) == ()
    with torch.no_grad():
        ref, got = model(x), fast(x)
        torch.testing.assert_close(exact(x), ref, atol=1e-4, rtol=1e-4)  # folding stays exact
    err = (got - ref).abs().max().item()
    assert 0 < err < 0.1 * ref.abs().max().item()  # the lever changes numerics, by a bounded amount
    blocks = [m for m in fast.modules() if isinstance(m, FusedMetaNeXtBlock)]
    assert blocks and all(isinstance(b.mlp.act, nn.Hardswish) and b._fusable for b in blocks)
    plain = apply_levers(model, "fast-act")
    for b in plain.modules():
        if isinstance(b, FusedMetaNeXtBlock):
            b._fusable = False
    with torch.no_grad():  # oneDNN's fused hardswish computes what the plain modules compute
        torch.testing.assert_close(plain(x), got, atol=1e-5, rtol=1e-4)


def test_lever_names_are_checked():
    assert (
        parse_levers("") == ()
        and parse_levers("exact") == ()
        and parse_levers(["fast-act", "fast-act"]) == ("fast-act",)
    )
    with pytest.raises(ValueError, match="unknown lever.*nope.*levers: fast-act"):
        parse_levers("fast-act,nope")
    assert lever_label(()) == "exact" and lever_label(("fast-act",)) == "fast-act"


def test_export_records_the_levers(model, tmp_path):
    pytest.importorskip("onnxruntime")
    from inceptionnext.cli import main
    from inceptionnext.model_file import save_model

    weights = tmp_path / "a.safetensors"
    save_model(model, weights)
    out = tmp_path / "a_fast.onnx"
    assert (
        main(
            [
                "export",
                "inceptionnext_a",
                "--weights",
                str(weights),
                "--deploy",
                "--lever",
                "fast-act",
                "--output",
                str(out),
                "--img-size",
                "32",
            ]
        )
        == 0
    )
    assert read_file_metadata(out)["levers"] == ["fast-act"] and load_runtime(out).deploy_levers == ("fast-act",)
    exact = tmp_path / "a.onnx"
    assert (
        main(
            [
                "export",
                "inceptionnext_a",
                "--weights",
                str(weights),
                "--deploy",
                "--output",
                str(exact),
                "--img-size",
                "32",
            ]
        )
        == 0
    )
    assert read_file_metadata(exact)["levers"] == []
    with pytest.raises(SystemExit):
        main(["export", "inceptionnext_a", "--weights", str(weights), "--lever", "fast-act"])  # needs --deploy


@pytest.fixture(scope="module")
def images(model):
    return load_images("digits", model, 16, "train"), load_images("digits", model, 48, "val")


def test_quantize_checks_a_lever_against_the_exact_model_and_records_it(model, images, tmp_path):
    pytest.importorskip("onnxruntime")
    calibration, check = images
    out = tmp_path / "fast.onnx"
    report = quantize_model(model, out, calibration, check, floor=NO_FLOOR, levers="fast-act")
    assert report.levers == ["fast-act"] and report.lever_sqnr_db is not None and "fast-act" in report.summary()
    record = read_file_metadata(out)
    assert record["levers"] == ["fast-act"] and record["quantization"]["levers"] == ["fast-act"]
    assert record["quantization"]["reference"] == "exact fp32"
    from inceptionnext.deploy.quantize import compare_logits

    with torch.no_grad():  # the report's figures are against the exact model, not the lever's own fp32 model
        agreement, sqnr = compare_logits(model(check.images), load_runtime(out)(check.images))
    assert sqnr == pytest.approx(report.sqnr_db, abs=0.5)
    with pytest.raises(QuantizeError, match="already runs levers"):
        quantize_model(apply_levers(model, "fast-act"), tmp_path / "x.onnx", calibration, check, floor=NO_FLOOR)
    with pytest.raises(QuantizeError, match="unknown lever"):
        quantize_model(model, tmp_path / "x.onnx", calibration, check, levers="fastest")


def test_quantize_refuses_a_lever_that_breaks_the_floor(model, images, tmp_path, monkeypatch):
    """The ReLU bound (max |err| 0.17) as a lever: its file passes a floor judged against itself but not the
    floor judged against the exact model, so it is refused and nothing is written."""
    pytest.importorskip("onnxruntime")

    def relu(m):
        for mlp in m.modules():
            if isinstance(getattr(mlp, "act", None), nn.GELU) and hasattr(mlp, "fc1"):
                mlp.act = nn.ReLU()
        for b in m.modules():
            if isinstance(b, FusedMetaNeXtBlock):
                b._fusable = False

    monkeypatch.setitem(LEVERS, "relu-bound", Lever("relu-bound", "speed bound only", relu))
    calibration, check = images
    exact = quantize_model(model, tmp_path / "exact.onnx", calibration, check, floor=NO_FLOOR)
    floor = QualityFloor(0.0, exact.sqnr_db - 3, max_top1_change=math.inf)
    out = tmp_path / "relu.onnx"
    with pytest.raises(AccuracyFloorError, match="not written.*relu-bound"):
        quantize_model(model, out, calibration, check, floor=floor, levers="relu-bound")
    assert not out.exists()


def test_cpu_flags_decide_bf16(tmp_path):
    def info(flags):
        p = tmp_path / "cpuinfo"
        p.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
        return str(p)

    assert native_bf16(info("fpu avx2 avx512f avx512_vnni avx512_bf16"))  # Zen 4/5, Cooper Lake: no AMX, pays
    assert native_bf16(info("avx512f amx_tile amx_bf16 amx_int8"))  # Sapphire Rapids
    assert not native_bf16(info("avx2 avx512f avx512bw avx512_vnni"))  # Cascade Lake: oneDNN runs bf16, emulated
    assert not native_bf16(info("avx2 fma avx_vnni"))  # AVX2-only
    assert not native_bf16(str(tmp_path / "missing")) and cpu_flags(str(tmp_path / "missing")) is None
    assert (
        levers_mod.LEVERS_KEY == "inceptionnext.levers"
        and json.loads(levers_mod.levers_metadata([])[levers_mod.LEVERS_KEY]) == []
    )


def test_cli_quantize_with_a_lever_then_validate_and_predict_report_the_same_top1(model, tmp_path, capsys):
    """The file `quantize --lever` writes is the one validate and predict then run: validate's top-1 matches the
    report's int8 top-1 and names the lever. It does not judge int8 quality (test_levers' API tests do): the model is
    untrained, at chance, where a few images flip between fp32 and int8, and which ones differs between CPUs (VNNI and
    AVX2 int8 kernels round differently), so every floor is off, top-1 change included."""
    pytest.importorskip("onnxruntime")
    from inceptionnext.cli import main
    from inceptionnext.data.digits import DigitsDataset
    from inceptionnext.model_file import save_model

    weights = tmp_path / "a.safetensors"
    save_model(model, weights)
    out = tmp_path / "a_fast.onnx"
    assert (
        main(
            [
                "quantize",
                "inceptionnext_a",
                "--weights",
                str(weights),
                "--calibration",
                "digits",
                "--output",
                str(out),
                "--num-calibration",
                "16",
                "--num-check",
                "400",
                "--lever",
                "fast-act",
                "--min-agreement",
                "0",
                "--min-sqnr",
                "-100",
                "--max-top1-change",
                "100",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["levers"] == ["fast-act"] and report["check_images"] == 359  # the whole digits val split
    assert (
        main(
            [
                "validate",
                "--model",
                str(out),
                "--dataset",
                "digits",
                "--workers",
                "0",
                "--no-progress",
                "--batch-size",
                "64",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    line = captured.out
    top1 = float(line.split("top-1 ")[1].split()[0])
    # same images and file; this untrained model sits at chance, where validate's own image pipeline flips ~2 of 359
    # (on the trained digits atto both say 99.164)
    assert abs(top1 - report["int8_top1"]) <= 1.0 and "on 359 images" in line
    assert "+fast-act" in captured.out + captured.err  # the run names the lever the file uses
    ds = DigitsDataset("val", 32)
    for i in range(2):
        ds.images[i].save(tmp_path / f"img{i}.png")
    assert (
        main(["predict", str(out), str(tmp_path / "img0.png"), str(tmp_path / "img1.png"), "--json", "--no-progress"])
        == 0
    )
    preds = json.loads(capsys.readouterr().out)["predictions"]
    with torch.no_grad():  # predict runs the file: its classes are the file's own on the same images
        x = load_images("digits", model, 2, "val").images
    assert len(preds) == 2 and all(p["top_k"][0]["index"] in range(10) for p in preds)
    del x
