"""Export to ONNX / TorchScript / torch.export: the files reload, run at another batch size and match the model,
folded models export with plain ops only, the caller's model is untouched, and failures are ExportErrors."""

import copy
import json
import sys

import pytest
import timm
import torch
import torch.nn as nn

from inceptionnext.deploy.export import FORMATS, SUFFIXES, ExportError, check_export, export_model
from inceptionnext.models.fold import FusedMetaNeXtBlock, reparameterize_model

INPUT_SIZE = (3, 64, 64)
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")


def randomized_model() -> nn.Module:
    """inceptionnext_a with BN statistics and layer scales far from their init, so folding is not a no-op."""
    torch.manual_seed(0)
    model = timm.create_model("inceptionnext_a", num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.3, 3.0)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
            if isinstance(getattr(m, "gamma", None), nn.Parameter):
                m.gamma.normal_(0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return randomized_model()


@pytest.fixture(scope="module")
def folded(model):
    folded = reparameterize_model(model)
    assert any(isinstance(m, FusedMetaNeXtBlock) and m._fusable for m in folded.modules())
    return folded


@pytest.fixture(scope="module")
def batch3():
    return torch.randn(3, *INPUT_SIZE, generator=torch.Generator().manual_seed(3))


def run_file(path, fmt, x):
    """The exported file's output, loaded and run the way a deployment would (not through check_export)."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])
    if fmt == "torchscript":
        return torch.jit.load(str(path))(x)
    return torch.export.load(str(path)).module()(x)


def graph_ops(path, fmt):
    """(domain, op) of every node of the exported graph."""
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(path))
        nodes = list(proto.graph.node) + [n for f in proto.functions for n in f.node]
        return {(n.domain, n.op_type) for n in nodes}
    if fmt == "torchscript":
        return {("", n.kind()) for n in torch.jit.load(str(path)).inlined_graph.nodes()}
    program = torch.export.load(str(path))
    return {("", str(n.target)) for n in program.graph.nodes if n.op == "call_function"}


def assert_close_rel(got, expected, tol):
    err = ((got - expected).abs().max() / expected.abs().max()).item()
    assert err < tol, f"relative error {err:.3g} >= {tol}"


@pytest.fixture(scope="module", params=FORMATS)
def exported(request, model, folded, tmp_path_factory):
    """Each format: the unfolded and the folded model exported once, with their reports."""
    fmt, out = request.param, tmp_path_factory.mktemp(request.param.replace(".", "_"))
    files = {}
    for name, m in (("plain", model), ("folded", folded)):
        path = out / "nested" / f"{name}{SUFFIXES[fmt]}"  # directory does not exist yet
        files[name] = (path, export_model(m, path, fmt, input_size=INPUT_SIZE, batch_size=2))
    return fmt, files


def test_export_reloads_and_matches_at_another_batch(exported, model, batch3):
    fmt, files = exported
    path, report = files["plain"]
    assert report.format == fmt and report.path == str(path) and report.file_bytes == path.stat().st_size > 0
    assert (report.batch_size, report.check_batch_size, report.input_size) == (2, 3, INPUT_SIZE)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4 and report.checked_with
    with torch.no_grad():
        torch.testing.assert_close(run_file(path, fmt, batch3), model(batch3), atol=1e-4, rtol=1e-3)
        assert run_file(path, fmt, batch3[:1]).shape == (1, 10)


def test_folded_export_matches_unfolded_model(exported, model, batch3):
    fmt, files = exported
    path, report = files["folded"]
    assert report.max_abs_diff < 1e-4
    with torch.no_grad():
        assert_close_rel(run_file(path, fmt, batch3), model(batch3), 1e-4)


def test_exported_graphs_hold_only_standard_ops(exported):
    fmt, files = exported
    for path, _ in files.values():
        ops = graph_ops(path, fmt)
        assert not [op for op in ops if "mkldnn" in op[1].lower() or "inceptionnext" in op[1].lower()], ops
        if fmt == "onnx":
            assert {domain for domain, _ in ops} <= {"", "ai.onnx"}, ops
            assert ("", "Conv") in ops
            assert_onnx_io(path)


def assert_onnx_io(path):
    """Input "input", output "logits", both with a symbolic batch dimension."""
    import onnx

    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    for value in (graph.input[0], graph.output[0]):
        batch = value.type.tensor_type.shape.dim[0]
        assert batch.dim_param and not batch.HasField("dim_value")
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]] == list(INPUT_SIZE)


def test_static_batch_checks_at_export_batch(tmp_path):
    tiny = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    report = export_model(
        tiny, tmp_path / "m.pt", "torchscript", input_size=(3, 8, 8), batch_size=2, dynamic_batch=False
    )
    assert report.batch_size == report.check_batch_size == 2


def test_callers_model_is_unchanged(folded, tmp_path, batch3):
    model = copy.deepcopy(folded).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fused = [m._fusable for m in model.modules() if isinstance(m, FusedMetaNeXtBlock)]
    export_model(model, tmp_path / "m.pt", "torchscript", input_size=INPUT_SIZE, check=False)
    assert all(m.training for m in model.modules())
    assert fused == [m._fusable for m in model.modules() if isinstance(m, FusedMetaNeXtBlock)] and all(fused)
    after = model.state_dict()
    assert state.keys() == after.keys() and all(torch.equal(state[k], after[k]) for k in state)
    with torch.no_grad():  # exported in eval mode although the caller's model is in train mode
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "m.pt"))(batch3), folded(batch3), atol=1e-4, rtol=1e-3)


def test_unknown_format_is_refused(model, tmp_path):
    with pytest.raises(ExportError, match="'tflite'.*onnx, torchscript, torch.export"):
        export_model(model, tmp_path / "m.tflite", "tflite")
    assert not (tmp_path / "m.tflite").exists()


class BatchFrozen(nn.Module):
    """Python control flow on the batch size: a trace freezes the branch taken at the traced batch."""

    def forward(self, x):
        return x.flatten(1) * (1.0 if x.shape[0] == 2 else 2.0)


def test_a_trace_that_does_not_generalize_fails_the_check(tmp_path):
    path = tmp_path / "frozen.pt"
    with pytest.warns(torch.jit.TracerWarning):  # warnings from code outside this package still show
        with pytest.raises(
            ExportError,
            match=r"torchscript file .*frozen\.pt does not match .* batch 3: "
            r"max abs diff [0-9.e+-]+ \(atol",
        ):
            export_model(BatchFrozen(), path, "torchscript", input_size=(1, 2, 2), batch_size=2)
    assert not path.exists() and list(tmp_path.iterdir()) == []  # no file, no temp file left


def test_check_export_names_the_diff_for_another_model(model, tmp_path):
    path = tmp_path / "m.pt"
    export_model(model, path, "torchscript", input_size=INPUT_SIZE, check=False)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head.fc2.bias.add_(1.0)
    diff, checked_with = check_export(path, "torchscript", model, INPUT_SIZE, 3, 1e-4, 1e-3)
    assert diff < 1e-4 and checked_with.startswith("torch.jit.load")
    with pytest.raises(ExportError, match=r"torchscript file .*m\.pt does not match .* batch 3: max abs diff 1"):
        check_export(path, "torchscript", other, INPUT_SIZE, 3, 1e-4, 1e-3)


def test_tracing_a_folded_model_directly_records_plain_ops(folded, batch3):
    """deploy.FusedMetaNeXtBlock steps aside under torch.jit.trace, even with autograd off (where it fuses)."""
    with torch.no_grad(), pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(folded, (batch3,), check_trace=False)
        assert "mkldnn" not in str(traced.inlined_graph)
        torch.testing.assert_close(traced(batch3[:2]), folded(batch3[:2]), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("missing,hint", [("onnxscript", "onnx and onnxscript"), ("onnxruntime", "check=False")])
def test_missing_onnx_packages_say_what_to_install(model, tmp_path, monkeypatch, missing, hint):
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    with pytest.raises(ExportError, match=rf"{hint}.*inceptionnext\[export\]|inceptionnext\[export\].*{hint}"):
        export_model(model, tmp_path / "m.onnx", "onnx", input_size=INPUT_SIZE)
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_file_carries_the_preprocessing_and_model_name(model, tmp_path):
    import onnx

    export_model(model, tmp_path / "m.onnx", "onnx", input_size=(3, 32, 32), check=False)
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    cfg = json.loads(props["inceptionnext.pretrained_cfg"])
    assert props["inceptionnext.model"] == "inceptionnext_a"
    assert cfg["num_classes"] == 10 and cfg["input_size"] == [3, 224, 224] and cfg["crop_pct"] == 0.875
    assert cfg["mean"] == [0.485, 0.456, 0.406] and cfg["interpolation"] == "bicubic" and "url" not in cfg
