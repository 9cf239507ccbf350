"""`inceptionnext export`: the model as an ONNX, TorchScript or torch.export file with a dynamic batch,
checked against PyTorch's own outputs (onnxruntime for ONNX) before it is kept.

    inceptionnext export inceptionnext_t --weights inceptionnext_t.safetensors --format onnx --output model.onnx
    inceptionnext export inceptionnext_t --weights inceptionnext_t.safetensors --format torch.export --deploy
    inceptionnext export inceptionnext_t --weights inceptionnext_t.safetensors --deploy --lever fast-act
"""

import argparse

from ..deploy.export import FORMATS, MIN_OPSET, SUFFIXES, ExportError, export_model
from ..deploy.levers import apply_levers, lever_label, parse_levers
from ..models.fold import is_folded, reparameterize_model
from ..models.model_api import check_img_size
from .common import add_lever_args, add_model_args, model_from_args, reports_errors, summary


def _default_opset() -> str:
    try:
        from torch.onnx._constants import ONNX_DEFAULT_OPSET

        return str(ONNX_DEFAULT_OPSET)
    except ImportError:  # a private module: its name may change
        return "its version's"


def build_parser(prog=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog=prog, description=summary(__doc__))
    add_model_args(p)
    p.add_argument("--format", default="onnx", choices=FORMATS, help="file type to write (default: onnx)")
    p.add_argument(
        "--output",
        "-o",
        default=None,
        help="output file; default <model><suffix> (" + ", ".join(f"{k}: {v}" for k, v in SUFFIXES.items()) + ")",
    )
    p.add_argument("--deploy", action="store_true", help="fold BatchNorm and layer scale first (inference form)")
    add_lever_args(p, "with --deploy: ")
    p.add_argument("--img-size", type=int, default=None, help="example input size; default: the weights' input size")
    p.add_argument("--batch-size", "-b", type=int, default=2, help="batch of the example input (default: 2)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size instead of a dynamic one")
    p.add_argument(
        "--opset",
        type=int,
        default=None,
        help=f"ONNX opset, {MIN_OPSET} or newer (default: torch.onnx's own, {_default_opset()} here)",
    )
    p.add_argument(
        "--no-check", dest="check", action="store_false", help="skip reloading the file and comparing it with PyTorch"
    )
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of the check (default: 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance of the check (default: 1e-3)")
    return p


@reports_errors(ExportError)
def cli(argv=None, prog: str = "inceptionnext export") -> int:
    p = build_parser(prog)
    a = p.parse_args(argv)
    try:
        levers = parse_levers(",".join(a.levers))
    except ValueError as e:
        p.error(str(e))
    if levers and not a.deploy:
        p.error("--lever changes the folded inference model: pass --deploy too")
    model = model_from_args(a)
    if a.deploy and not is_folded(model):
        model = reparameterize_model(model, inplace=True)
    if levers:
        model = apply_levers(model, levers)
    check_img_size(model, a.img_size, "--img-size")
    _, height, width = model.pretrained_cfg.get("input_size") or (3, 224, 224)
    size = (model.in_chans, a.img_size or height, a.img_size or width)
    name = a.model or model.pretrained_cfg.get("architecture")
    tag = ("_deploy" if a.deploy else "") + ("_" + lever_label(levers).replace("+", "_") if levers else "")
    output = a.output or f"{name}{tag}{SUFFIXES[a.format]}"
    report = export_model(
        model,
        output,
        a.format,
        input_size=size,
        batch_size=a.batch_size,
        dynamic_batch=not a.static_batch,
        opset=a.opset,
        check=a.check,
        atol=a.atol,
        rtol=a.rtol,
    )
    line = (
        f"wrote {report.path} ({a.format}, {lever_label(levers)}, {report.file_bytes / 2**20:.1f} MiB, input "
        f"{'N' if not a.static_batch else a.batch_size}x{'x'.join(map(str, size))})"
    )
    if report.checked_with:
        line += (
            f"; checked with {report.checked_with} at batch {report.check_batch_size}: max abs diff "
            f"{report.max_abs_diff:.2e}"
        )
    print(line)
    return 0
