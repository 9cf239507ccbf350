"""Export a built, weighted classifier to ONNX, TorchScript or torch.export, and check the file against PyTorch.

The exported copy always runs the plain PyTorch path: the Triton fast path (a custom op) and the oneDNN fused
blocks of a folded model (``deploy.FusedMetaNeXtBlock``) would put non-standard ops in the graph. Each file is
written atomically and, with ``check``, reloaded from its temp file and compared with the model at a batch
size other than the traced one (which proves the batch dimension is really dynamic) before it replaces ``path``:
a file that fails its check is never left behind.
"""

import contextlib
import copy
import json
import os
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..checksum import seal_archive, seal_onnx
from ..model_file import portable_cfg
from ..models.fold import FusedMetaNeXtBlock
from ..utils.files import open_for_writing, write_atomically
from ..utils.text import first_line
from .levers import levers_metadata, levers_of

__all__ = ["FORMATS", "SUFFIXES", "ExportError", "ExportReport", "export_model", "check_export"]

FORMATS = ("onnx", "torchscript", "torch.export")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "torch.export": ".pt2"}
MIN_OPSET = 18  # the dynamo exporter's lowest opset
_INSTALL_HINT = 'pip install "inceptionnext[export]"'


class ExportError(RuntimeError):
    """An export or its check failed; the message names the format, the file and what went wrong."""


@dataclass
class ExportReport:
    format: str
    path: str
    batch_size: int  # batch of the example input the graph was traced with
    check_batch_size: Optional[int]  # batch the file was checked at (None: not checked)
    input_size: tuple  # (C, H, W)
    max_abs_diff: Optional[float]  # file vs PyTorch on the same random input
    checked_with: Optional[str]  # e.g. "onnxruntime 1.32.0 (CPUExecutionProvider)"
    file_bytes: int


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known formats: {', '.join(FORMATS)}")


def plain_copy(model: nn.Module) -> nn.Module:
    """An eval-mode CPU float32 deep copy that runs only standard PyTorch ops; `model` itself is untouched."""
    if not isinstance(model, nn.Module):
        raise ExportError(f"expected an nn.Module to export, got {type(model).__name__}")
    plain = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval().requires_grad_(False)
    for m in plain.modules():
        if hasattr(m, "fast_path"):
            m.fast_path = False  # the reference path, never the Triton custom op (even if the env var asks)
        if isinstance(m, FusedMetaNeXtBlock):
            m._fusable = False  # plain fc1/GELU/fc2, not torch.ops.mkldnn._convolution_pointwise
    return plain


def _import_onnx(check: bool):
    """onnx and onnxscript (needed by the exporter), and onnxruntime when the file is to be checked."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"onnx export needs onnx and onnxscript ({e}); {_INSTALL_HINT}") from e
    if check:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ExportError(
                f"checking an onnx file needs onnxruntime ({e}); {_INSTALL_HINT}, or pass check=False to skip the check"
            ) from e


@contextlib.contextmanager
def _quiet_tracing():
    """Silence what torch.jit.trace says that the batch check covers: TracerWarnings raised by this package's
    ops (shape checks on the fixed weights, frozen as constants) and the TorchScript deprecation notices.
    Tracer warnings from any other code still show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"inceptionnext\.")
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def _onnx_metadata(model: nn.Module) -> Dict[str, str]:
    """What a runtime needs beside the graph: the model's name and its preprocessing and class names (the
    pretrained config, as `inceptionnext.model_file` records it), as ONNX metadata properties."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    num_classes, in_chans = getattr(model, "num_classes", None), getattr(model, "in_chans", 3)
    out = {"inceptionnext.pretrained_cfg": json.dumps(portable_cfg(cfg, num_classes, in_chans))}
    if cfg.get("architecture"):
        out["inceptionnext.model"] = str(cfg["architecture"])
    out.update(levers_metadata(levers_of(model)))  # [] for the exact model: the file says which numerics it runs
    return out


def _export(plain: nn.Module, fmt: str, x: torch.Tensor, dynamic_batch: bool, opset: Optional[int]):
    """Trace `plain` on `x`; returns a function that saves the result to a given path."""
    dynamic = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    if fmt == "onnx":
        program = torch.onnx.export(
            plain,
            (x,),
            None,
            dynamo=True,
            verbose=False,
            input_names=["input"],
            output_names=["logits"],
            opset_version=opset,
            dynamic_shapes=dynamic,
        )
        program.model.metadata_props.update(_onnx_metadata(plain))
        return lambda tmp: program.save(tmp, external_data=False)  # one self-contained file
    if fmt == "torchscript":
        with _quiet_tracing():
            traced = torch.jit.trace(plain, (x,), check_trace=False)  # check_export runs a stronger check
        return lambda tmp: _jit_save(traced, tmp)
    program = torch.export.export(plain, (x,), dynamic_shapes=dynamic)
    return lambda tmp: _export_save(program, tmp)


def _export_save(program, path):
    with open_for_writing(path) as f:  # a file object: torch.export.save warns about a path not ending in .pt2
        torch.export.save(program, f)


def _jit_save(traced, path):
    with _quiet_tracing(), open_for_writing(path) as f:  # given a path, a full disk aborts the process (SIGABRT)
        torch.jit.save(traced, f)


def _run_file(path: str, fmt: str, x: torch.Tensor) -> Tuple[torch.Tensor, str]:
    """The saved file's output on `x`, and what ran it."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        return torch.from_numpy(out), f"onnxruntime {ort.__version__} (CPUExecutionProvider)"
    if fmt == "torchscript":
        with _quiet_tracing():
            loaded = torch.jit.load(str(path), map_location="cpu")
        return loaded(x), f"torch.jit.load (torch {torch.__version__})"
    with open(path, "rb") as f:  # as in _export_save
        loaded = torch.export.load(f)
    return loaded.module()(x), f"torch.export.load (torch {torch.__version__})"


def _random_input(batch_size: int, input_size: Sequence[int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)  # a private generator: the caller's RNG stream is not advanced
    return torch.randn((batch_size, *input_size), generator=g)


def _check(path, fmt, plain, input_size, batch_size, atol, rtol, name=None) -> Tuple[float, str]:
    name = name or path
    if fmt == "onnx":
        _import_onnx(check=True)
    x = _random_input(batch_size, input_size, seed=1)
    try:
        with torch.no_grad():
            expected = plain(x)
            got, checked_with = _run_file(path, fmt, x)
    except Exception as e:
        raise ExportError(
            f"{fmt} file {name}: running it at batch {batch_size} failed ({type(e).__name__}: {first_line(e)})"
        ) from e
    if got.shape != expected.shape:
        raise ExportError(
            f"{fmt} file {name}: output shape {tuple(got.shape)} at batch {batch_size}, "
            f"PyTorch gives {tuple(expected.shape)}"
        )
    diff = (got.float() - expected).abs().max().item()
    if not torch.allclose(got.float(), expected, atol=atol, rtol=rtol):
        raise ExportError(
            f"{fmt} file {name} does not match the PyTorch model at batch {batch_size}: "
            f"max abs diff {diff:.3g} (atol {atol}, rtol {rtol}) on {checked_with}"
        )
    return diff, checked_with


def check_export(path, fmt, model, input_size=(3, 224, 224), batch_size=1, atol=1e-4, rtol=1e-3):
    """Load an exported file and compare its output with `model`'s on one random batch.

    Returns (max_abs_diff, checked_with); raises ExportError when they are not allclose(atol, rtol).
    """
    _check_format(fmt)
    return _check(str(path), fmt, plain_copy(model), tuple(input_size), batch_size, atol, rtol)


def _onnx_opset(path: str) -> Optional[int]:
    import onnx

    model = onnx.load(path, load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _root_cause(e: BaseException) -> BaseException:
    """The innermost cause: the exporters wrap the real error in banners of their own."""
    while e.__cause__ is not None and e.__cause__ is not e:
        e = e.__cause__
    return e


def export_model(
    model,
    path,
    fmt,
    input_size=(3, 224, 224),
    batch_size=2,
    dynamic_batch=True,
    opset=None,
    check=True,
    atol=1e-4,
    rtol=1e-3,
) -> ExportReport:
    """Export `model` (CPU, float32, eval mode, plain ops; the caller's model is not changed) to `path`.

    `fmt` is one of FORMATS; any file name is accepted (SUFFIXES has the usual ones). With `dynamic_batch`
    the batch dimension is symbolic; torch.export specializes a traced batch of 1, so a batch of at least 2
    is traced. `opset` (ONNX only) defaults to the exporter's own. With `check` the file is reloaded and
    compared with the model at another batch size (the same one when not `dynamic_batch`).
    """
    _check_format(fmt)
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) != 3 or min(input_size) < 1:
        raise ExportError(f"input_size must be (C, H, W) with positive sizes, got {input_size}")
    if batch_size < 1:
        raise ExportError(f"batch_size must be >= 1, got {batch_size}")
    if fmt == "onnx":
        _import_onnx(check)
    path = os.fspath(path)
    plain = plain_copy(model)
    trace_batch = max(batch_size, 2) if dynamic_batch else batch_size
    check_batch = (batch_size if batch_size != trace_batch else trace_batch + 1) if dynamic_batch else batch_size
    if fmt == "onnx" and opset is not None and opset < MIN_OPSET:
        raise ExportError(f"onnx opset {opset}: the exporter (torch.onnx, dynamo) writes opset {MIN_OPSET} or newer")
    example = _random_input(trace_batch, input_size, seed=0)
    try:  # run eagerly first: a model that cannot take this input fails here with PyTorch's own message
        with torch.no_grad():
            plain(example)
    except Exception as e:
        raise ExportError(
            f"{type(model).__name__} cannot run on a {tuple(example.shape)} input: {type(e).__name__}: {first_line(e)}"
        ) from e
    try:
        with torch.no_grad():
            save = _export(plain, fmt, example, dynamic_batch, opset)
    except Exception as e:
        root = _root_cause(e)
        raise ExportError(
            f"{fmt} export of {type(model).__name__} to {path} failed: {type(root).__name__}: {first_line(root)}"
        ) from e
    result = {}

    def write(tmp: str) -> None:
        try:
            save(tmp)
        except Exception as e:
            raise ExportError(f"writing the {fmt} file {path} failed: {type(e).__name__}: {first_line(e)}") from e
        if fmt == "onnx":  # carries its checksum, checked wherever it is loaded
            seal_onnx(tmp)
        else:  # a TorchScript or torch.export archive: an entry over all its others, which `verify` checks
            seal_archive(tmp)
        if fmt == "onnx" and opset is not None:
            written = _onnx_opset(tmp)
            if written != opset:
                raise ExportError(f"onnx file {path}: asked for opset {opset}, the exporter wrote {written}")
        if check:  # before the rename, so a file that fails is never left at `path`
            result["check"] = _check(tmp, fmt, plain, input_size, check_batch, atol, rtol, name=path)

    write_atomically(path, write)
    diff, checked_with = result.get("check", (None, None))
    return ExportReport(
        format=fmt,
        path=path,
        batch_size=trace_batch,
        check_batch_size=check_batch if check else None,
        input_size=input_size,
        max_abs_diff=diff,
        checked_with=checked_with,
        file_bytes=os.path.getsize(path),
    )
