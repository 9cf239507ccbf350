"""Post-training static int8 quantization of a classifier, checked against the float model before it is kept.

The model is folded first (`deploy.reparameterize_model`: no BatchNorm or layer scale left to sit between
quantized ops), exported to ONNX, then quantized by the field's tools:

* ``openvino`` (default): NNCF's post-training quantization to an OpenVINO IR (.xml + .bin). Per-channel
  weights, symmetric activations (NNCF's performance preset), every conv in int8 including the depthwise
  ones where the plugin has an int8 kernel; GELU and the residual add stay fused into the int8 convs.
* ``onnxruntime``: ONNX Runtime's static QDQ quantization to an .onnx file, per-channel int8 weights, uint8
  activations, with Q/DQ only around ops that have int8 kernels (Conv, MatMul, Gemm), none around GELU.

Before the file replaces `output`, it runs on held-out images beside the float model: top-1 agreement and
logit SQNR (dB) must reach the floor (`QualityFloor`), else `AccuracyFloorError` and nothing is written
(``force=True`` writes it anyway). The file records the model name, its preprocessing and class names and
the check's figures, so `predict`/`validate` run it like any model (`runtimes.load_runtime`).

Speed levers (`deploy.levers`, e.g. ``fast-act``) are opt-in: the file is made from the model with the levers, but
checked against the EXACT folded fp32 model, so the floor guards every lever; the file and the report name them.
"""

import contextlib
import json
import logging
import math
import os
import random
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ..checksum import METADATA_KEY, seal_onnx
from ..data.digits import DigitsDataset
from ..data.images import data_config_for, expand_image_paths, load_image
from ..utils.signal_stack import kept_signal_stack
from .export import export_model
from .levers import apply_levers, lever_label, levers_of, parse_levers
from .runtimes import (
    INSTALL_HINTS,
    METADATA_KEYS,
    RuntimeUnavailable,
    folded_for_inference,
    load_runtime,
    openvino_core,
    read_runtime_model,
    save_openvino_model,
)

__all__ = [
    "BACKENDS",
    "QualityFloor",
    "QuantizeReport",
    "QuantizeError",
    "AccuracyFloorError",
    "ImageSet",
    "load_images",
    "quantize_model",
    "quantize_onnx",
    "compare_logits",
    "quantize_file",
]

BACKENDS = {"openvino": ".xml", "onnxruntime": ".onnx"}


class QuantizeError(ValueError):
    """Quantization cannot run as asked (bad calibration source, backend, output name)."""


class AccuracyFloorError(QuantizeError):
    """The quantized model fell below the accuracy floor; the file was not written."""


@dataclass
class QualityFloor:
    """What an int8 file must keep of the float model on held-out images.

    Args:
        min_agreement: fraction of images whose top-1 class is unchanged.
        min_sqnr_db: logit signal-to-quantization-noise ratio, in dB.
        min_check_images: the floor is never judged on fewer held-out images than this.
        max_top1_change: labelled images: int8 top-1 within this many points of fp32, either way.
    """

    min_agreement: float = 0.99  # fraction of images whose top-1 class is unchanged
    min_sqnr_db: float = 25.0  # logit signal-to-quantization-noise ratio
    min_check_images: int = 32  # the floor is never judged on fewer held-out images than this
    max_top1_change: float = 0.5  # labelled images: int8 top-1 within this many points of fp32, either way

    def admits(
        self, agreement: float, sqnr_db: float, float_top1: Optional[float] = None, int8_top1: Optional[float] = None
    ) -> bool:
        """Whether an int8 file's figures reach this floor (each bound inclusive). Top-1 may move neither down
        nor up by more than `max_top1_change` points: a large rise on held-out images means they no longer
        measure the model, not that int8 improved it.

        Args:
            agreement: fraction of images whose top-1 class is unchanged.
            sqnr_db: the logits' SQNR in dB.
            float_top1: fp32 top-1 in percent (labelled images); None when unknown.
            int8_top1: int8 top-1 in percent; None when unknown.

        Returns:
            True when every bound is met (the top-1 bound only when both top-1s are known).
        """
        top1_change = None if int8_top1 is None or float_top1 is None else abs(int8_top1 - float_top1)
        return (
            agreement >= self.min_agreement
            and sqnr_db >= self.min_sqnr_db
            and (top1_change is None or top1_change <= self.max_top1_change)
        )


@dataclass
class ImageSet:
    """Preprocessed images (N, C, H, W) and their labels in the model's class indices (None: unlabelled).

    Args:
        images: the images, (N, C, H, W).
        labels: their class indices, (N,); None when unlabelled.
        source: where they came from, for the report.
    """

    images: torch.Tensor
    labels: Optional[torch.Tensor] = None
    source: str = ""


@dataclass
class QuantizeReport:
    """What `quantize_model` measured and wrote.

    Args:
        path: the int8 file.
        backend: 'openvino' or 'onnxruntime'.
        model: the model's name.
        calibration_images: images the quantizer calibrated on.
        check_images: held-out images the file was checked on.
        agreement: fraction of check images whose top-1 class is unchanged.
        sqnr_db: the logits' SQNR against the exact fp32 model, in dB.
        float_top1: fp32 top-1 in percent on labelled check images; None when unlabelled.
        int8_top1: int8 top-1 in percent; None when unlabelled.
        floor: the `QualityFloor` it was judged by, as a dict.
        passed: whether it reached the floor.
        written: whether the file was written.
        file_bytes: the file's size.
        levers: the levers applied before quantizing ([] = the exact model).
        lever_sqnr_db: the fp32 model with the levers vs the exact one (None: no levers).
    """

    path: str
    backend: str
    model: str
    calibration_images: int
    check_images: int
    agreement: float
    sqnr_db: float
    float_top1: Optional[float] = None
    int8_top1: Optional[float] = None
    floor: Dict[str, float] = field(default_factory=dict)
    passed: bool = True
    written: bool = True
    file_bytes: int = 0
    levers: List[str] = field(default_factory=list)  # [] = the exact model
    lever_sqnr_db: Optional[float] = None  # the fp32 model with the levers vs the exact one (None: no levers)

    def summary(self) -> str:
        """The report in one line, for the tools to print.

        Returns:
            Backend, levers, agreement, SQNR, image counts and (labelled images) both top-1s.
        """
        acc = (
            f"; top-1 fp32 {self.float_top1:.2f}% -> int8 {self.int8_top1:.2f}%" if self.float_top1 is not None else ""
        )
        lever = (
            f" with levers {lever_label(self.levers)} (fp32 lever model {self.lever_sqnr_db:.1f} dB from exact)"
            if self.levers
            else " (exact model, no levers)"
        )
        return (
            f"{self.backend} int8{lever}, vs the exact fp32 model: agreement {100 * self.agreement:.2f}%, "
            f"logit SQNR {self.sqnr_db:.1f} dB on "
            f"{self.check_images} held-out images ({self.calibration_images} calibrated){acc}"
        )


def compare_logits(reference: torch.Tensor, quantized: torch.Tensor) -> Tuple[float, float]:
    """(top-1 agreement, SQNR in dB) of `quantized` logits against `reference` ones.

    Args:
        reference: the float model's logits, (N, classes).
        quantized: the int8 model's logits, the same shape.

    Returns:
        The fraction of rows whose argmax agrees, and the SQNR in dB (inf when they are equal).
    """
    reference, quantized = reference.double(), quantized.double()
    agreement = reference.argmax(-1).eq(quantized.argmax(-1)).double().mean().item()
    noise = (reference - quantized).pow(2).sum().item()
    signal = reference.pow(2).sum().item()
    sqnr = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
    return agreement, sqnr


# --- calibration and check images ----------------------------------------------------------------------------


def _transform(model: nn.Module, overrides=None):
    from timm.data import create_transform

    cfg = data_config_for(model, overrides)
    return create_transform(**cfg, is_training=False), cfg


def load_images(
    source: str, model: nn.Module, limit: int, split: str = "train", seed: int = 0, skip: int = 0, overrides=None
) -> ImageSet:
    """Up to `limit` images preprocessed the way `model` expects, drawn (seeded) from `source`:

    * ``digits``: the embedded digits (split 'train' or 'val');
    * an ImageFolder (``<class>/<image>``): labelled when its class folders are the model's class names;
    * a folder of images (or one image file): unlabelled.

    `skip` leaves out the first images of the seeded order (calibration and check sets stay disjoint).

    Args:
        source: 'digits', an image folder or an image file.
        model: the model the images are preprocessed for (its data config and class names).
        limit: the most images to take.
        split: the digits split, 'train' or 'val'.
        seed: the seed of the order images are drawn in.
        skip: images of that order to leave out first.
        overrides: data-config overrides (as `data_config_for`).

    Returns:
        The images, with labels where the source has them for every image taken.

    Raises:
        QuantizeError: `source` does not exist, or no image is left after `skip`.
        ImageError: an image cannot be read.
    """
    transform, cfg = _transform(model, overrides)
    channels = cfg["input_size"][0]
    if source == "digits":
        ds = DigitsDataset(split, cfg["input_size"][-1])
        order = list(range(len(ds)))
        random.Random(seed).shuffle(order)
        order = order[skip : skip + limit]
        if not order:
            raise QuantizeError(f"the digits {split} split has only {len(ds)} images; nothing left after {skip}")
        imgs = [transform(ds.images[i] if channels == 3 else ds.images[i].convert("L")) for i in order]
        return ImageSet(torch.stack(imgs), torch.tensor([ds.targets[i] for i in order]), f"digits/{split}")
    path = Path(source)
    if not path.exists():
        raise QuantizeError(f"calibration source {source}: no such file or folder (or 'digits')")
    files = expand_image_paths([path])
    labels: Optional[List[int]] = None
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    classes = sorted(d.name for d in path.iterdir() if d.is_dir()) if path.is_dir() else []
    if classes and names and set(classes) <= set(names):
        index = {n: i for i, n in enumerate(names)}
        labels = [index[f.relative_to(path).parts[0]] if len(f.relative_to(path).parts) > 1 else -1 for f in files]
    order = list(range(len(files)))
    random.Random(seed).shuffle(order)
    order = order[skip : skip + limit]
    if not order:
        raise QuantizeError(f"{source}: {len(files)} images, none left for this set after the first {skip}")
    images = torch.stack([transform(load_image(files[i], channels)) for i in order])
    if labels is not None and all(labels[i] >= 0 for i in order):
        return ImageSet(images, torch.tensor([labels[i] for i in order]), str(source))
    return ImageSet(images, None, str(source))


# --- the quantizers ------------------------------------------------------------------------------------------


def _batches(images: torch.Tensor, batch_size: int):
    return [images[i : i + batch_size].numpy() for i in range(0, len(images), batch_size)]


@contextlib.contextmanager
def _quiet_cpp_extension():
    """NNCF imports torch.utils.cpp_extension, whose import logs "No CUDA runtime is found, using CUDA_HOME=..."
    on a machine without CUDA: a note about building CUDA extensions, which quantizing never does."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        if "torch.utils.cpp_extension" not in sys.modules:
            import torch.utils.cpp_extension  # noqa: F401  (imported once here, quietly)
        yield
    finally:
        log.setLevel(level)


def _quantize_openvino(onnx_path: str, out_xml: str, calibration: torch.Tensor, metadata: Dict[str, str]) -> None:
    with _quiet_cpp_extension():
        _quantize_openvino_quietly(onnx_path, out_xml, calibration, metadata)


def _quantize_openvino_quietly(
    onnx_path: str, out_xml: str, calibration: torch.Tensor, metadata: Dict[str, str]
) -> None:
    try:
        import nncf
        import openvino  # noqa: F401  (installed, or the hint below)
    except ImportError as e:
        raise RuntimeUnavailable(
            f"openvino quantization needs openvino and nncf ({e}); {INSTALL_HINTS['openvino']}"
        ) from e
    model = openvino_core().read_model(onnx_path)
    batches = _batches(calibration, 1)
    # NNCF compiles on Cores of its own (each swaps the thread's signal stack); its progress bars go to stderr
    with kept_signal_stack(), contextlib.redirect_stdout(sys.stderr):
        quantized = nncf.quantize(
            model, nncf.Dataset(batches), subset_size=len(batches), preset=nncf.QuantizationPreset.PERFORMANCE
        )
    for key, value in metadata.items():
        quantized.set_rt_info(value, key.split("."))
    save_openvino_model(quantized, out_xml)  # the int8 file's own checksum (never the float file's)


def _quantize_onnxruntime(onnx_path: str, out_onnx: str, calibration: torch.Tensor, metadata: Dict[str, str]) -> None:
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quant_pre_process,
            quantize_static,
        )
    except ImportError as e:
        raise RuntimeUnavailable(
            f"onnxruntime quantization needs onnxruntime ({e}); {INSTALL_HINTS['onnxruntime']}"
        ) from e
    batches = _batches(calibration, 1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"input": x}

    pre = out_onnx + ".pre.onnx"
    quant_pre_process(onnx_path, pre, skip_symbolic_shape=True)
    quantize_static(
        pre,
        out_onnx,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
    )
    model = onnx.load(out_onnx)
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]  # a float file's checksum is not this file's
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, out_onnx)
    seal_onnx(out_onnx)  # the int8 file's own checksum


def quantize_onnx(
    onnx_path: str,
    output: str,
    calibration: torch.Tensor,
    backend: str = "openvino",
    metadata: Optional[Dict[str, str]] = None,
) -> str:
    """Quantize an fp32 .onnx file with `calibration` images (no check, no atomic write: the building block).

    Args:
        onnx_path: the fp32 ONNX file.
        output: the file to write: an OpenVINO .xml (openvino) or an .onnx (onnxruntime).
        calibration: preprocessed images, (N, C, H, W).
        backend: 'openvino' (NNCF) or 'onnxruntime'.
        metadata: properties to carry into the int8 file (its quantization record is added).

    Returns:
        `output`.

    Raises:
        QuantizeError: `backend` is unknown.
        RuntimeUnavailable: the backend's packages are not installed (the message gives the extra to install).
    """
    if backend not in BACKENDS:
        raise QuantizeError(f"unknown quantization backend {backend!r}; backends: {', '.join(BACKENDS)}")
    meta = dict(metadata or {})
    quant = json.loads(meta.get(METADATA_KEYS["quantization"], "{}"))
    quant.update(precision="int8", backend=backend)
    meta[METADATA_KEYS["quantization"]] = json.dumps(quant)
    (_quantize_openvino if backend == "openvino" else _quantize_onnxruntime)(onnx_path, output, calibration, meta)
    return output


def _float_onnx(model: nn.Module, path: str, input_size) -> Dict[str, str]:
    """The folded model as an fp32 ONNX file; returns its metadata properties."""
    import onnx

    export_model(model, path, "onnx", input_size=tuple(input_size), check=False)
    proto = onnx.load(path)  # the float file's checksum is not the int8 file's: dropped before it is carried over
    keep = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.save(proto, path)
    return {p.key: p.value for p in keep}


def _install(tmp_dir: str, tmp_out: str, output: Path) -> None:
    """Move the finished file(s) over `output`: an IR's .bin first, its .xml last (the .xml names the pair)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".xml":
        os.replace(str(Path(tmp_out).with_suffix(".bin")), str(output.with_suffix(".bin")))
    os.replace(tmp_out, str(output))


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    output,
    calibration: ImageSet,
    check: ImageSet,
    backend: Optional[str] = None,
    floor: Optional[QualityFloor] = None,
    force: bool = False,
    levers=None,
) -> QuantizeReport:
    """Fold `model`, apply `levers`, quantize it to int8 and check it against the exact folded fp32 model.

    Args:
        model: the float model (folded or not).
        output: the file to write: `.xml` (OpenVINO IR through NNCF) or `.onnx` (ONNX Runtime QDQ).
        calibration: the images the quantizer calibrates on.
        check: held-out images the int8 file is judged on.
        backend: `"openvino"` or `"onnxruntime"`; None picks it from the output suffix.
        floor: what the int8 file must keep (top-1 agreement, logit SQNR, top-1 change on labelled images);
            `QualityFloor()` by default.
        force: write the file even when it is below the floor.
        levers: opt-in speed levers (`inceptionnext.deploy.levers`), e.g. `["fast-act"]`; none by default.

    Returns:
        The report: agreement, SQNR, top-1 before and after, the file written.

    Raises:
        AccuracyFloorError: the int8 file is below `floor` (nothing is written) and `force` is not set.
        QuantizeError: too few check images (fewer than the floor's `min_check_images`), an output the backend
            does not write, or a quantizer failure (the message says which).
        RuntimeUnavailable: the backend's packages are not installed (the message has the pip command).
    """
    output = Path(os.fspath(output))
    backend = backend or {v: k for k, v in BACKENDS.items()}.get(output.suffix.lower())
    if backend not in BACKENDS:
        raise QuantizeError(
            f"{output}: name an OpenVINO .xml or an .onnx output (or pass a backend: {', '.join(BACKENDS)})"
        )
    if output.suffix.lower() != BACKENDS[backend]:
        raise QuantizeError(f"{output}: the {backend} backend writes a {BACKENDS[backend]} file")
    if output.is_dir():
        raise QuantizeError(f"{output}: is a folder")
    if len(calibration.images) == 0 or len(check.images) == 0:
        raise QuantizeError("need at least one calibration image and one check image")
    floor = floor or QualityFloor()
    if len(check.images) < floor.min_check_images:
        raise QuantizeError(
            f"only {len(check.images)} held-out images to judge the accuracy floor on; at least "
            f"{floor.min_check_images} are needed (raise --num-check or use a larger image source; "
            "--min-check-images sets the minimum)"
        )
    try:
        levers = parse_levers(levers)
    except ValueError as e:
        raise QuantizeError(str(e)) from None
    if levers_of(model):
        raise QuantizeError(
            f"the model already runs levers {lever_label(levers_of(model))}: pass the exact model and "
            "name the levers, so the file is checked against the exact model"
        )
    exact = folded_for_inference(model)
    folded = apply_levers(exact, levers) if levers else exact
    name = (getattr(folded, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    input_size = tuple(check.images.shape[1:])
    expected = exact(check.images).float()  # the floor is judged against the exact model, whatever the levers
    lever_sqnr = compare_logits(expected, folded(check.images).float())[1] if levers else None
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=output.parent if output.parent.exists() else None) as tmp:
        metadata = _float_onnx(folded, os.path.join(tmp, "float.onnx"), input_size)
        tmp_out = os.path.join(tmp, "int8" + output.suffix)
        quantize_onnx(os.path.join(tmp, "float.onnx"), tmp_out, calibration.images, backend, metadata)
        got = load_runtime(tmp_out)(check.images)
        agreement, sqnr = compare_logits(expected, got)
        report = QuantizeReport(
            str(output),
            backend,
            name,
            len(calibration.images),
            len(check.images),
            agreement,
            sqnr,
            floor=asdict(floor),
            levers=list(levers),
            lever_sqnr_db=lever_sqnr,
        )
        if check.labels is not None:
            report.float_top1 = 100 * expected.argmax(-1).eq(check.labels).double().mean().item()
            report.int8_top1 = 100 * got.argmax(-1).eq(check.labels).double().mean().item()
        report.passed = floor.admits(agreement, sqnr, report.float_top1, report.int8_top1)
        if not report.passed and not force:
            raise AccuracyFloorError(
                f"not written: {report.summary()}; the floor is {100 * floor.min_agreement:.1f}% agreement, "
                f"{floor.min_sqnr_db:.1f} dB and top-1 within {floor.max_top1_change:g} points of fp32 (check the "
                "calibration images, or override the floor)"
            )
        _record_report(tmp_out, report)
        _install(tmp, tmp_out, output)
    report.file_bytes = output.stat().st_size + (
        output.with_suffix(".bin").stat().st_size if output.suffix == ".xml" else 0
    )
    return report


def _record_report(path: str, report: QuantizeReport) -> None:
    """Add the check's figures to the file's quantization record."""
    key = METADATA_KEYS["quantization"]
    figures = dict(
        agreement=report.agreement,
        sqnr_db=report.sqnr_db,
        check_images=report.check_images,
        calibration_images=report.calibration_images,
        float_top1=report.float_top1,
        int8_top1=report.int8_top1,
        passed_floor=report.passed,
        levers=report.levers,
        lever_sqnr_db=report.lever_sqnr_db,
        reference="exact fp32",
    )
    if path.endswith(".xml"):
        model = read_runtime_model(path)
        record = json.loads(model.get_rt_info(key.split(".")).astype(str))
        record.update(figures)
        model.set_rt_info(json.dumps(record), key.split("."))
        tmp = path + ".tmp.xml"
        save_openvino_model(model, tmp)
        os.replace(tmp, path)
        os.replace(tmp[:-4] + ".bin", path[:-4] + ".bin")
        return
    import onnx

    model = onnx.load(path)
    prop = next(p for p in model.metadata_props if p.key == key)
    record = json.loads(prop.value)
    record.update(figures)
    prop.value = json.dumps(record)
    onnx.save(model, path)
    seal_onnx(path)


def quantize_file(
    model: nn.Module,
    output,
    source: str = "digits",
    num_calibration: int = 128,
    num_check: int = 256,
    backend: Optional[str] = None,
    floor: Optional[QualityFloor] = None,
    force: bool = False,
    seed: int = 0,
    overrides=None,
    levers=None,
) -> QuantizeReport:
    """`quantize_model` with calibration and check images drawn from one source.

    The digits use their train split to calibrate and their val split to check; other sources give two
    disjoint seeded draws.

    Args:
        model: the float model.
        output: the file to write (`.xml` or `.onnx`).
        source: `"digits"`, an ImageFolder (labelled when its class folders are the model's class names) or a
            folder of images (see `load_images`).
        num_calibration: how many images to calibrate on.
        num_check: how many held-out images to judge the floor on.
        backend: as in `quantize_model`.
        floor: as in `quantize_model`.
        force: as in `quantize_model`.
        seed: the seed of the draws.
        overrides: preprocessing settings that replace the model's own (input size, crop_pct, ...).
        levers: as in `quantize_model`.

    Returns:
        The report of `quantize_model`.

    Raises:
        QuantizeError: a count below 1, or a source with too few images.
        AccuracyFloorError: as in `quantize_model`.
    """
    if num_calibration < 1 or num_check < 1:
        raise QuantizeError("num_calibration and num_check must be at least 1")
    calibration = load_images(source, model, num_calibration, "train", seed, overrides=overrides)
    if source == "digits":
        check = load_images(source, model, num_check, "val", seed, overrides=overrides)
    else:
        check = load_images(source, model, num_check, "train", seed, skip=num_calibration, overrides=overrides)
    return quantize_model(model, output, calibration, check, backend, floor, force, levers)
