"""One small interface over the ways a classifier runs: PyTorch (eager or compiled, fp32 or bf16), ONNX Runtime
and OpenVINO. Each runtime gives a module that maps an NCHW float batch to logits and carries what a timm model
carries for preprocessing (``pretrained_cfg``, ``num_classes``, ``in_chans``), so `predict`, `validate` and the
benchmark take any of them without asking what file they came from.

    model = load_runtime("model_int8.xml")               # OpenVINO IR written by `inceptionnext quantize`
    model = load_runtime("model.onnx")                   # ONNX Runtime; runtime="openvino" runs it on OpenVINO
    model = load_runtime("w.safetensors", runtime="torch.compile", precision="bf16")

ONNX Runtime and OpenVINO are optional (extras ``export`` and ``openvino``); asking for one that is not installed
raises `RuntimeUnavailable` with the pip command.
"""

import contextlib
import functools
import json
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from ..checksum import seal_openvino, seal_openvino_files, verify_openvino_files, verify_runtime_model
from ..models.fold import is_folded, is_metanext_block, reparameterize_model
from ..utils.cpu import native_bf16  # AVX512_BF16 / AMX-BF16 flags: bf16 worth running (measured)
from ..utils.signal_stack import kept_signal_stack
from ..utils.text import excerpt

__all__ = [
    "RUNTIMES",
    "PRECISIONS",
    "RUNTIME_PRECISIONS",
    "RuntimeUnavailable",
    "FileModel",
    "OnnxRuntimeModel",
    "OpenVINOModel",
    "TorchRuntime",
    "load_runtime",
    "wrap_torch",
    "native_bf16",
    "available_runtimes",
    "read_file_metadata",
    "METADATA_KEYS",
    "RuntimeFileError",
    "read_runtime_model",
    "read_checked_runtime_model",
    "save_openvino_model",
    "openvino_core",
    "compile_openvino",
]

RUNTIMES = ("torch", "torch.compile", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
# what each runtime runs: int8 needs a file written by `inceptionnext quantize` (or the benchmark's quantizer)
RUNTIME_PRECISIONS = {
    "torch": ("fp32", "bf16"),
    "torch.compile": ("fp32", "bf16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
INSTALL_HINTS = {
    "onnxruntime": 'pip install "inceptionnext[export]"',
    "openvino": 'pip install "inceptionnext[openvino]"',
}
# keys under which a file records the model (ONNX metadata properties, OpenVINO rt_info)
METADATA_KEYS = {
    "model": "inceptionnext.model",
    "pretrained_cfg": "inceptionnext.pretrained_cfg",
    "quantization": "inceptionnext.quantization",
    "levers": "inceptionnext.levers",
}
FILE_SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino"}


class RuntimeUnavailable(ImportError):
    """The runtime asked for is not installed; the message carries the pip command."""


def _import(runtime: str):
    try:
        if runtime == "onnxruntime":
            import onnxruntime

            return onnxruntime
        import openvino

        return openvino
    except ImportError as e:
        raise RuntimeUnavailable(f"the {runtime} runtime is not installed ({e}); {INSTALL_HINTS[runtime]}") from e


def openvino_core():
    """The one `openvino.Core` of this process, which compiles every OpenVINO model of the library.

    Each Core loads a CPU plugin that swaps the thread's signal stack; Cores released in another order than
    they were made leave the thread on freed memory. Compile your own OpenVINO models on this Core too.

    Returns:
        The shared `openvino.Core`.

    Raises:
        RuntimeUnavailable: OpenVINO is not installed (the message has the pip command).
    """
    return _core_of(_import("openvino"))


@functools.lru_cache(maxsize=None)
def _core_of(openvino):
    return openvino.Core()


def compile_openvino(model, config: Dict[str, Any]):
    """`model` (an ov.Model or a file path) compiled for the CPU on the process's Core, with the thread's signal
    stack kept as it was.

    Args:
        model: an `openvino.Model` or a file path.
        config: OpenVINO CPU properties (`INFERENCE_PRECISION_HINT`, `INFERENCE_NUM_THREADS`, ...).

    Returns:
        The `openvino.CompiledModel`.

    Raises:
        RuntimeUnavailable: OpenVINO is not installed.
    """
    with kept_signal_stack():
        return openvino_core().compile_model(model, "CPU", config)


def available_runtimes():
    """The runtimes that can run here (the PyTorch ones always).

    Returns:
        'torch', 'torch.compile', then 'onnxruntime' and 'openvino' where installed.
    """
    out = ["torch", "torch.compile"]
    for name in ("onnxruntime", "openvino"):
        try:
            _import(name)
            out.append(name)
        except RuntimeUnavailable:
            pass
    return out


def _check_precision(runtime: str, precision: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; runtimes: {', '.join(RUNTIMES)}")
    if precision not in RUNTIME_PRECISIONS[runtime]:
        hint = (
            "; int8 runs a quantized file (`inceptionnext quantize`) on onnxruntime or openvino"
            if precision == "int8"
            else ""
        )
        raise ValueError(
            f"runtime {runtime} does not run precision {precision!r} (it runs "
            f"{', '.join(RUNTIME_PRECISIONS[runtime])}){hint}"
        )


class FileModel(nn.Module):
    """A classifier in a file run by an external runtime, shaped like a timm model for preprocessing and
    class names. Its forward takes a float NCHW batch (any device) and returns float32 CPU logits.

    Args:
        path: the file.
        metadata: the record it carries (`read_file_metadata`).
        precision: the precision it runs at: 'fp32', 'bf16' or 'int8'.
    """

    runtime = ""

    def __init__(self, path: str, metadata: Dict[str, Any], precision: str):
        super().__init__()
        self.path = str(path)
        self.precision = precision
        cfg = dict(metadata.get("pretrained_cfg") or {})
        self.model_name = metadata.get("model") or cfg.get("architecture") or Path(path).stem
        cfg.setdefault("architecture", self.model_name)
        self.pretrained_cfg = self.default_cfg = cfg
        self.quantization = metadata.get("quantization")
        self.deploy_levers = tuple(metadata.get("levers") or ())  # () for the exact model (or an older file)
        self.num_classes = int(cfg.get("num_classes") or 0)
        self.in_chans = int((cfg.get("input_size") or [3])[0])

    def _run(self, x):  # numpy float32 NCHW -> numpy logits
        raise NotImplementedError

    input_shape: tuple = ()  # (C, H, W) the file takes, None where symbolic

    def check_input(self, shape) -> None:
        """A RuntimeFileError saying which input size the file takes when `shape` (N, C, H, W) is not it.

        Args:
            shape: the batch's shape.

        Raises:
            RuntimeFileError: the file takes another (C, H, W).
        """
        want = self.input_shape
        if want and (len(shape) != 4 or any(w is not None and w != g for w, g in zip(want, shape[1:]))):
            size = "x".join("?" if v is None else str(v) for v in want)
            raise RuntimeFileError(
                f"{self.path}: the file takes {size} (CxHxW) inputs, not "
                f"{'x'.join(str(v) for v in shape[1:])}; drop the size override or export the "
                "model at that size"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(tuple(x.shape))
        out = self._run(x.detach().to("cpu", torch.float32).contiguous().numpy())
        out = torch.from_numpy(out)
        if not self.num_classes:
            self.num_classes = int(out.shape[-1])
        return out

    def describe(self) -> str:
        """What runs, for the tools to print.

        Returns:
            Runtime, precision, levers and the file.
        """
        levers = f" +{'+'.join(self.deploy_levers)}" if self.deploy_levers else ""
        return f"{self.runtime} {self.precision}{levers} ({self.path})"

    @property
    def weights_note(self) -> str:
        """Which file runs where, as `load_model`'s note says which weights were loaded."""
        levers = f" +{'+'.join(self.deploy_levers)}" if self.deploy_levers else ""
        return f"{self.path} on {self.runtime} ({self.precision}{levers})"


def _onnx_metadata(path: str) -> Dict[str, Any]:
    import onnx

    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    return _parse_metadata(props)


def _parse_metadata(props: Dict[str, str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for short, key in METADATA_KEYS.items():
        if props.get(key):
            out[short] = props[key] if short == "model" else json.loads(props[key])
    return out


def _openvino_metadata(model) -> Dict[str, Any]:
    props = {}
    for key in METADATA_KEYS.values():
        if model.has_rt_info(key.split(".")):
            props[key] = model.get_rt_info(key.split(".")).astype(str)
    return _parse_metadata(props)


def read_file_metadata(path) -> Dict[str, Any]:
    """The record an .onnx or OpenVINO .xml file carries (model name, pretrained config, quantization report).

    Args:
        path: an .onnx file or an OpenVINO .xml.

    Returns:
        {'model', 'pretrained_cfg', 'quantization', ...}: the entries the file has.

    Raises:
        FileNotFoundError: an .xml that does not exist.
        RuntimeFileError: an .xml that cannot be read, or whose .bin is missing.
        ChecksumError: an .xml whose content does not match its checksum.
        RuntimeUnavailable: OpenVINO is not installed (an .xml).
    """
    path = str(path)
    if path.endswith(".xml"):
        return _openvino_metadata(read_runtime_model(path))
    return _onnx_metadata(path)


class RuntimeFileError(ValueError):
    """An .onnx or OpenVINO IR that cannot be run: missing or damaged, or not fitting its input."""


def _first_message(e: BaseException) -> str:
    """The line of a runtime's error that says what is wrong (OpenVINO puts 'Exception from src/...' first)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return excerpt((useful or lines or [type(e).__name__])[0], 200)


def read_checked_runtime_model(path) -> Tuple[Any, bool]:
    """An .onnx file as an ONNX ModelProto, an .xml as an OpenVINO model (its .bin beside it), and whether a
    checksum was verified (False: the file carries none). Each file is read once, into memory, and the model is
    built from the very bytes that were checked: a file replaced meanwhile is never used. One-line
    RuntimeFileErrors name the file and what is wrong; a ChecksumError says it does not match.

    Args:
        path: an .onnx file or an OpenVINO .xml.

    Returns:
        The model (`onnx.ModelProto` or `openvino.Model`) and whether a checksum was verified.

    Raises:
        FileNotFoundError: no file at `path`.
        RuntimeFileError: the .bin is missing, or the file cannot be read as an IR or an ONNX model.
        ChecksumError: the content does not match its checksum.
        RuntimeUnavailable: the runtime that reads it is not installed.
    """
    path = os.fspath(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.lower().endswith(".xml"):
        core = openvino_core()  # installed, or RuntimeUnavailable with the pip command
        weights = Path(path).with_suffix(".bin")
        if not weights.is_file():
            raise RuntimeFileError(
                f"{path}: its weights file {weights} is missing (an OpenVINO IR is the .xml and the .bin beside it)"
            )
        xml, weight_bytes = Path(path).read_bytes(), weights.read_bytes()
        checked = verify_openvino_files(xml, weight_bytes, path)
        try:
            model = core.read_model(xml, weight_bytes)
        except Exception as e:
            raise RuntimeFileError(
                f"{path}: cannot be read as an OpenVINO IR with {weights.name} "
                f"({len(weight_bytes)} bytes): {_first_message(e)}; is the .bin complete "
                "and the one written with this .xml?"
            ) from None
        if checked is None:  # no whole-file record: an earlier file's op record, or none
            checked = verify_runtime_model(model, path)
        return model, checked
    _import("onnxruntime")
    try:
        import onnx
    except ImportError as e:
        raise RuntimeUnavailable(f"reading .onnx files needs onnx ({e}); {INSTALL_HINTS['onnxruntime']}") from e
    data = Path(path).read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:
        raise RuntimeFileError(f"{path}: not a readable ONNX file ({type(e).__name__}: {_first_message(e)})") from None
    if not model.graph.input:
        raise RuntimeFileError(f"{path}: not an ONNX model (its graph has no input)")
    return model, verify_runtime_model(model, path)


def read_runtime_model(path):
    """`read_checked_runtime_model`'s model alone.

    Args:
        path: an .onnx file or an OpenVINO .xml.

    Returns:
        The `onnx.ModelProto` or `openvino.Model`.

    Raises:
        FileNotFoundError: no file at `path`.
        RuntimeFileError: the file cannot be read.
        ChecksumError: the content does not match its checksum.
        RuntimeUnavailable: the runtime that reads it is not installed.
    """
    return read_checked_runtime_model(path)[0]


def save_openvino_model(model, xml_path: str) -> None:
    """`ov.save_model` (fp32 weights kept) with the IR's checksum over the .xml and .bin as written.

    Args:
        model: the `openvino.Model`.
        xml_path: the .xml to write; the .bin goes beside it.
    """
    import openvino as ov

    seal_openvino(model)
    ov.save_model(model, xml_path, compress_to_fp16=False)
    seal_openvino_files(xml_path)


def _input_shape(dims) -> tuple:
    """An input's (C, H, W), None where a dimension is symbolic."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in list(dims)[1:])


def _threads(threads: Optional[int]) -> int:
    return int(threads or torch.get_num_threads())


class OnnxRuntimeModel(FileModel):
    """An .onnx file (fp32 export, or int8 QDQ from `inceptionnext quantize`) on ONNX Runtime's CPU provider.

    Args:
        path: the .onnx file.
        threads: intra-op threads; None takes torch's thread count.

    Raises:
        RuntimeUnavailable: onnxruntime or onnx is not installed.
        FileNotFoundError: no file at `path`.
        RuntimeFileError: the file cannot be read or ONNX Runtime cannot load it.
        ChecksumError: the content does not match its checksum.
    """

    runtime = "onnxruntime"

    def __init__(self, path, threads: Optional[int] = None):
        ort = _import("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads(threads)
        options.inter_op_num_threads = 1
        # no busy-waiting between runs: a spinning pool would steal the cores of whatever runs next (the benchmark
        # interleaves runtimes in one process)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        proto = read_runtime_model(path)
        try:
            self_session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise RuntimeFileError(f"{path}: ONNX Runtime cannot load it ({_first_message(e)})") from None
        props = self_session.get_modelmeta().custom_metadata_map
        metadata = _parse_metadata(props)
        super().__init__(path, metadata, (metadata.get("quantization") or {}).get("precision", "fp32"))
        self._session, self._input = self_session, self_session.get_inputs()[0].name
        self.input_shape = _input_shape(self_session.get_inputs()[0].shape)

    def _run(self, x):
        return self._session.run(None, {self._input: x})[0]


class OpenVINOModel(FileModel):
    """An OpenVINO IR (.xml + .bin) or an .onnx file compiled by OpenVINO's CPU plugin. `precision` 'fp32' sets
    the f32 inference hint (the plugin otherwise uses bf16 where the CPU has it), 'bf16' asks for bf16; an int8
    IR runs int8 whatever the hint.

    Args:
        path: an OpenVINO .xml (its .bin beside it) or an .onnx file.
        precision: 'fp32', 'bf16' or 'int8'; None takes the file's ('int8' for a quantized file, else 'fp32').
        threads: inference threads; None takes torch's thread count.

    Raises:
        RuntimeUnavailable: OpenVINO is not installed.
        FileNotFoundError: no file at `path`.
        RuntimeFileError: the file cannot be read.
        ChecksumError: the content does not match its checksum.
        ValueError: 'int8' is asked of a file that is not quantized.
    """

    runtime = "openvino"

    def __init__(self, path, precision: Optional[str] = None, threads: Optional[int] = None):
        core = openvino_core()
        if str(path).endswith(".xml"):
            model = read_runtime_model(path)
            metadata = _openvino_metadata(model)
        else:  # built from the checked proto, never from the file read again
            proto = read_runtime_model(path)
            metadata = _parse_metadata({p.key: p.value for p in proto.metadata_props})
            try:
                model = core.read_model(proto.SerializeToString())
            except Exception as e:
                raise RuntimeFileError(f"{path}: OpenVINO cannot read it ({_first_message(e)})") from None
        quantized = (metadata.get("quantization") or {}).get("precision") == "int8"
        precision = precision or ("int8" if quantized else "fp32")
        if precision == "int8" and not quantized:
            raise ValueError(f"{path}: not an int8 file; quantize it first (`inceptionnext quantize`)")
        if precision == "bf16" and not native_bf16():
            warnings.warn("this CPU has no native bf16 (avx512_bf16/amx_bf16): OpenVINO runs f32 instead", stacklevel=3)
        super().__init__(path, metadata, precision)
        hint = "bf16" if precision == "bf16" else "f32"
        self._compiled = compile_openvino(
            model,
            {
                "INFERENCE_PRECISION_HINT": hint,
                "INFERENCE_NUM_THREADS": _threads(threads),
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        self._request = self._compiled.create_infer_request()
        shape = model.inputs[0].get_partial_shape()
        self.input_shape = tuple(d.get_length() if d.is_static else None for d in list(shape)[1:])

    def _run(self, x):
        return self._request.infer({0: x})[0].copy()


class TorchRuntime(nn.Module):
    """A PyTorch model run the deployment way: eval, folded where it can be, channels_last, bf16 autocast and/or
    torch.compile with Inductor freezing (weights become constants, so conv+BN/bias chains are folded in).

    Args:
        model: the PyTorch model.
        precision: 'fp32' or 'bf16' (autocast).
        compiled: run it through torch.compile.
        fold: fold its BatchNorms and layer scales first (a copy); False only puts it in eval mode.

    Raises:
        ValueError: the runtime does not run `precision`.
    """

    def __init__(self, model: nn.Module, precision: str = "fp32", compiled: bool = False, fold: bool = True):
        super().__init__()
        _check_precision("torch.compile" if compiled else "torch", precision)
        model = folded_for_inference(model) if fold else model.eval()
        self.model = model.to(memory_format=torch.channels_last)
        self.precision, self.compiled = precision, compiled
        self.runtime = "torch.compile" if compiled else "torch"
        if precision == "bf16" and not native_bf16():
            warnings.warn(
                "this CPU has no native bf16 (avx512_bf16/amx_bf16): bf16 is emulated and slower than fp32",
                stacklevel=3,
            )
        self._forward = _compile_frozen(self.model) if compiled else self.model
        for key in ("pretrained_cfg", "default_cfg", "num_classes", "in_chans", "weights_note"):
            if hasattr(model, key):
                setattr(self, key, getattr(model, key))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        amp = (
            torch.autocast(device.type, dtype=torch.bfloat16) if self.precision == "bf16" else contextlib.nullcontext()
        )
        with torch.inference_mode(), amp:
            return self._forward(x).float()

    def describe(self) -> str:
        """What runs, for the tools to print.

        Returns:
            Runtime and precision.
        """
        return f"{self.runtime} {self.precision}"


def folded_for_inference(model: nn.Module) -> nn.Module:
    """The eval-mode model with its BatchNorm and layer scale folded (a copy) when it has MetaNeXt blocks to fold."""
    model = model.eval()
    if any(is_metanext_block(m) for m in model.modules()) and not is_folded(model):
        return reparameterize_model(model)
    return model


def _compile_frozen(model: nn.Module):
    """torch.compile with Inductor's freezing, set for this compile only."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model)

    def run(x):
        with inductor_config.patch(freezing=True):
            return compiled(x)

    return run


def wrap_torch(model: nn.Module, runtime: str = "torch", precision: str = "fp32") -> nn.Module:
    """`model` as the given PyTorch runtime and precision.

    Args:
        model: a float model.
        runtime: `"torch"` (eager) or `"torch.compile"` (the folded channels_last model compiled by Inductor
            with freezing).
        precision: `"fp32"` or `"bf16"` (CPU autocast; it warns where the CPU lacks bf16 instructions).

    Returns:
        A module that maps a batch to logits; eager fp32 returns `model` as it is.

    Raises:
        ValueError: a runtime or precision PyTorch does not run.
    """
    _check_precision(runtime, precision)
    if runtime == "torch" and precision == "fp32":
        return model.eval()
    return TorchRuntime(model, precision, compiled=runtime == "torch.compile")


def load_runtime(
    path, runtime: Optional[str] = None, precision: Optional[str] = None, threads: Optional[int] = None
) -> FileModel:
    """An exported or quantized file as a model that maps a batch to logits.

    Weight files go through `model_file.load_model` and `wrap_torch` instead.

    Args:
        path: an `.onnx` file (ONNX Runtime, or OpenVINO with `runtime="openvino"`) or an OpenVINO `.xml`
            (its `.bin` beside it).
        runtime: `"onnxruntime"` or `"openvino"`; None picks it from the suffix.
        precision: `"fp32"`, `"bf16"` (OpenVINO) or `"int8"` (a quantized file); None runs the file as it was
            written (int8 for a quantized file, fp32 otherwise).
        threads: CPU threads for the runtime; None takes PyTorch's thread count.

    Returns:
        A module carrying the file's preprocessing config, class names and metadata.

    Raises:
        ValueError: not an `.onnx` / `.xml` file, or a runtime or precision that cannot run it.
        FileNotFoundError: no such file.
        RuntimeFileError: the file is damaged or unreadable (the message names it).
        RuntimeUnavailable: the runtime is not installed (the message has the pip command).
    """
    path = os.fspath(path)
    suffix = Path(path).suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise ValueError(f"{path}: not a runtime file (.onnx or OpenVINO .xml); weight files load with load_model")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    runtime = runtime or FILE_SUFFIXES[suffix]
    if runtime not in ("onnxruntime", "openvino") or (suffix == ".xml" and runtime != "openvino"):
        raise ValueError(
            f"{path}: a {suffix} file runs on "
            + ("openvino" if suffix == ".xml" else "onnxruntime or openvino")
            + f", not {runtime}"
        )
    if runtime == "onnxruntime":
        model = OnnxRuntimeModel(path, threads)
        if precision and precision != model.precision:
            raise ValueError(f"{path} is a {model.precision} file; onnxruntime cannot run it as {precision}")
        return model
    return OpenVINOModel(path, precision, threads)


def is_runtime_file(path) -> bool:
    return Path(os.fspath(path)).suffix.lower() in FILE_SUFFIXES
