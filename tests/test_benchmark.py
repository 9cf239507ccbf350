"""The benchmark (inceptionnext.benchmark; scripts/benchmark.py) on the CPU with a tiny config: rows, ratios,
JSON, plot, argument errors."""

import json
import os
import statistics
from types import SimpleNamespace

import pytest
import torch
from test_train import run_checkout_script

from inceptionnext.cli import benchmark as cli_bench

TINY = [
    "--batch-size",
    "2",
    "--img-size",
    "64",
    "--num-warm-iter",
    "1",
    "--num-bench-iter",
    "2",
    "--no-progress",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def bench():
    from inceptionnext.deploy.benchmark import models

    return models


def test_cli_end_to_end_writes_json_table_and_plot(tmp_path, monkeypatch, capsys):
    results, png = tmp_path / "bench.json", tmp_path / "fig1.png"
    argv = [
        "--model",
        "inceptionnext_a,inception_next_atto",
        "--bench",
        "both",
        "--channels-last",
        "--threads",
        "1",
        "--results-file",
        str(results),
        "--plot",
        str(png),
        *TINY,
    ]
    threads = torch.get_num_threads()  # --threads sets them for the process: this one's are given back
    try:
        code, out, err = run_checkout_script(monkeypatch, capsys, "benchmark.py", *argv)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err[-2000:]
    assert "| model | variant | bench |" in out and "torch " + torch.__version__ in out
    assert "Command: `python scripts/benchmark.py --model inceptionnext_a" in out

    data = json.loads(results.read_text())
    assert data["environment"]["torch"] == torch.__version__ and "timm" in data["environment"]
    rows = {(r["model"], r["variant"], r["bench"]): r for r in data["results"]}
    # no fused kernel on CPU: only the reference path runs, and the rows say so
    assert set(rows) == {
        ("inceptionnext_a", "ours ref", "inference"),
        ("inceptionnext_a", "ours ref folded", "inference"),
        ("inception_next_atto", "timm", "inference"),
        ("inceptionnext_a", "ours ref", "train"),
        ("inception_next_atto", "timm", "train"),
    }
    for r in rows.values():
        assert not r["error"], r["error"]
        assert r["img_per_s"] > 0 and len(r["ms_per_step_all"]) == 2
        assert r["setting"] == "fp32 cl eager"
        assert r["peak_mem_mib"] > 4.1e6 * 4 / 2**20  # parameters alone are ~16 MiB (4.2M floats)
        assert r["img_per_s"] == pytest.approx(2 / (statistics.median(r["ms_per_step_all"]) / 1e3))
    ours, timm_row = (
        rows[("inceptionnext_a", "ours ref folded", "inference")],
        rows[("inception_next_atto", "timm", "inference")],
    )
    assert "reference path" in ours["note"]
    assert ours["vs_timm"] == pytest.approx(ours["img_per_s"] / timm_row["img_per_s"])
    assert timm_row["vs_timm"] is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mixer_bench_times_the_first_token_mixer_over_repeats(bench):
    rows = cli_bench.main(
        ["--model", "inceptionnext_a,resnet50", "--bench", "mixer", "--repeats", "2", "--no-cpu-memory", *TINY]
    )
    by_model = {r.model: r for r in rows}
    mixer = by_model["inceptionnext_a"]
    assert len(mixer.img_per_s_rounds) == 2 and len(mixer.ms_per_step_all) == 4  # rounds pooled into one row
    assert mixer.img_per_s == pytest.approx(2 / (statistics.median(mixer.ms_per_step_all) / 1e3))
    assert "input (2, 40, 16, 16)" in by_model["inceptionnext_a"].note and "fwd+bwd" in by_model["inceptionnext_a"].note
    assert mixer.peak_mem_mib is None  # --no-cpu-memory
    assert by_model["resnet50"].error == "no MetaNeXt token mixer"


def test_variants(bench, monkeypatch):
    cpu = torch.device("cpu")
    everything = {"fast", "ref", "folded", "unfolded"}
    assert [v.label for v in bench.variants_for("resnet50", "inference", cpu, everything)] == ["timm"]
    assert [v.label for v in bench.variants_for("inceptionnext_a", "inference", cpu, everything)] == [
        "ours ref",
        "ours ref folded",
    ]
    monkeypatch.setattr(bench, "fast_path_available", lambda device: True)
    inference = bench.variants_for("inceptionnext_a", "inference", cpu, everything)
    assert [(v.label, v.fast, v.folded) for v in inference] == [
        ("ours fast", True, False),
        ("ours fast folded", True, True),
        ("ours ref", False, False),
        ("ours ref folded", False, True),
    ]
    assert [v.label for v in bench.variants_for("inceptionnext_a", "train", cpu, everything)] == [
        "ours fast",
        "ours ref",
    ]
    assert [v.label for v in bench.variants_for("inceptionnext_a", "inference", cpu, {"fast", "folded"})] == [
        "ours fast folded"
    ]
    assert [v.label for v in bench.variants_for("convnext_tiny_k3", "inference", cpu, everything)] == [
        "ours fast",
        "ours ref",
    ]  # LayerNorm: nothing to fold
    assert bench.timm_counterpart("convnext_tiny_k3_par1_2") == "convnext_tiny"
    assert bench.timm_counterpart("inceptionnext_base_384") == "inception_next_base"
    assert bench.timm_counterpart("resnet50") == ""


def test_the_kernel_choice_is_a_block_not_the_environment(bench, monkeypatch):
    from inceptionnext.ops import dispatch

    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    before = dict(os.environ)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(dispatch.default_choice())
            return x

    monkeypatch.setattr(bench, "build_model", lambda *a: seen.append(dispatch.default_choice()) or Spy())
    args = SimpleNamespace(batch_size=1, img_size=8, channels_last=False, amp_dtype="float32")
    step = bench.make_step(
        "inceptionnext_a", bench.Variant("ours ref", fast=False), "inference", args, torch.device("cpu")
    )
    assert dispatch.default_choice() is None
    step()
    assert seen == [False, False] and dict(os.environ) == before
    with dispatch.fast_path(True):
        assert dispatch.default_choice() is True
        with dispatch.fast_path(False):
            assert dispatch.default_choice() is False
        assert dispatch.default_choice() is True
    assert dispatch.default_choice() is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "no_such_model"], "unknown model"),
        (["--model", ","], "--model is empty"),
        (["--variants", "fastest"], "--variants"),
        (["--batch-size", "0"], "--batch-size"),
        (["--repeats", "0"], "--repeats"),
        (["--amp-dtype", "float16", "--device", "cpu"], "float16"),
    ],
)
def test_bad_arguments_are_named(bench, capsys, argv, message):
    with pytest.raises(SystemExit):
        cli_bench.parse_args(argv)
    assert message in capsys.readouterr().err


def test_paper_top1_covers_the_default_models(bench):
    for name in bench.DEFAULT_MODELS.split(","):
        assert bench.paper_top1(name) is not None, name
    assert bench.paper_top1("inceptionnext_t") == bench.paper_top1("inception_next_tiny") == 82.3
    assert bench.paper_top1("convnext_tiny") == 82.1 and bench.paper_top1("convnext_tiny_k3") == 81.5
    assert bench.paper_top1("no_such_model") is None


def test_interleaved_rounds_time_every_model_each_step(bench):
    rows = cli_bench.main(
        [
            "--model",
            "inceptionnext_a,inception_next_atto",
            "--bench",
            "inference",
            "--interleave",
            "--repeats",
            "2",
            "--variants",
            "folded",
            "--no-cpu-memory",
            *TINY,
        ]
    )
    assert [(r.model, r.variant) for r in rows] == [
        ("inceptionnext_a", "ours ref folded"),
        ("inception_next_atto", "timm"),
    ]
    for r in rows:
        assert not r.error and len(r.img_per_s_rounds) == 2 and len(r.ms_per_step_all) == 4
    assert rows[0].vs_timm == pytest.approx(rows[0].img_per_s / rows[1].img_per_s)


def test_runtime_paths_end_to_end(bench, tmp_path, capsys):
    """--runtime/--precision: every model on every path it runs, ratios on the same path, JSON and plot."""
    pytest.importorskip("onnxruntime")
    results, png = tmp_path / "paths.json", tmp_path / "paths.png"
    rows = cli_bench.main(
        [
            "--runtime",
            "torch,onnxruntime",
            "--precision",
            "fp32,int8",
            "--model",
            "inceptionnext_a,inception_next_atto",
            "--img-size",
            "32",
            "--results-file",
            str(results),
            "--plot",
            str(png),
            "--batch-size",
            "2",
            "--num-warm-iter",
            "1",
            "--num-bench-iter",
            "2",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    paths = {(r.model, r.path) for r in rows}
    # torch has no int8 path (quantized files run on onnxruntime/openvino): three paths per model
    assert paths == {
        (m, p)
        for m in ("inceptionnext_a", "inception_next_atto")
        for p in ("torch fp32", "onnxruntime fp32", "onnxruntime int8")
    }
    for r in rows:
        assert not r.error, r.error
        assert r.img_per_s > 0 and len(r.img_per_s_rounds) == 2
    by = {(r.model, r.path): r for r in rows}
    ours, theirs = by[("inceptionnext_a", "onnxruntime int8")], by[("inception_next_atto", "onnxruntime int8")]
    assert ours.vs_timm == pytest.approx(ours.img_per_s / theirs.img_per_s) and theirs.vs_timm is None
    assert "random calibration" in ours.note
    out = capsys.readouterr().out
    assert "| path | model | levers | batch |" in out and "Best path per model" in out and "onnxruntime 1." in out
    data = json.loads(results.read_text())
    assert {r["path"] for r in data["results"]} == {"torch fp32", "onnxruntime fp32", "onnxruntime int8"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runtime_paths_reject_unknown_names(bench, capsys):
    with pytest.raises(SystemExit):
        cli_bench.main(["--runtime", "tensorrt", "--model", "resnet18", "--device", "cpu"])
    assert "--runtime takes" in capsys.readouterr().err


def test_runtime_paths_batch_list_levers_and_profile(bench, tmp_path, capsys):
    """--batch-size 1,2 and --levers fast-act: every path at both sizes, ours once exact and once with the lever
    (named in the table); --profile prints OpenVINO's per-layer breakdown by category."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    tiny = [
        "--model",
        "inceptionnext_a,inception_next_atto",
        "--img-size",
        "32",
        "--batch-size",
        "1,2",
        "--num-warm-iter",
        "1",
        "--num-bench-iter",
        "1",
        "--no-progress",
        "--device",
        "cpu",
        "--levers",
        "fast-act",
    ]
    rows = cli_bench.main(["--runtime", "torch,openvino", "--precision", "fp32,int8", *tiny])
    got = {(r.model, r.levers, r.path, r.batch_size) for r in rows}
    assert got == {
        (m, lv, p, b)
        for m, lv in (("inceptionnext_a", "exact"), ("inceptionnext_a", "fast-act"), ("inception_next_atto", "exact"))
        for p in ("torch fp32", "openvino fp32", "openvino int8")
        for b in (1, 2)
    }
    assert all(not r.error and r.img_per_s > 0 for r in rows), [r.error for r in rows]
    lever = next(r for r in rows if r.levers == "fast-act" and r.path == "openvino int8" and r.batch_size == 1)
    timm_row = next(
        r for r in rows if r.model == "inception_next_atto" and r.path == "openvino int8" and r.batch_size == 1
    )
    assert lever.vs_timm == pytest.approx(lever.img_per_s / timm_row.img_per_s)
    out = capsys.readouterr().out
    assert "| path | model | levers | batch |" in out and "inceptionnext_a+fast-act" in out and "CPU flags:" in out
    breakdowns = cli_bench.main(
        ["--runtime", "openvino", "--precision", "int8", "--profile", "--profile-iters", "2", *tiny]
    )
    assert {(b.label, b.batch_size) for b in breakdowns} == {
        (m, n) for m in ("inceptionnext_a", "inceptionnext_a+fast-act", "inception_next_atto") for n in (1, 2)
    }
    ours = breakdowns[0]
    assert ours.ms_by_category["conv 1x1 s3"] > 0 and ours.ms_by_category["depthwise conv"] > 0
    assert ours.fused_act > 0 and ours.fused_add > 0
    out = capsys.readouterr().out
    assert "OpenVINO int8, batch 1" in out and "| split/concat |" in out and "| conv 1x1 s1 |" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--runtime", "torch", "--levers", "nope"], "unknown lever"),
        (["--levers", "fast-act"], "go with --runtime"),
        (["--runtime", "torch", "--profile"], "--runtime openvino"),
        (["--runtime", "torch", "--batch-size", "1,x"], "whole numbers"),
    ],
)
def test_lever_and_profile_arguments_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit):
        cli_bench.parse_args(argv + ["--device", "cpu"])
    assert message in capsys.readouterr().err
