"""`inceptionnext quantize`: a post-training static int8 file of a model, folded first, calibrated on your images and
checked against the float model on held-out ones before it is kept.

    inceptionnext quantize inceptionnext_a --weights output/digits_inceptionnext_a/model_best.pth \
        --calibration digits --output digits_int8.xml                      # OpenVINO IR (NNCF)
    inceptionnext quantize inceptionnext_t --weights t.safetensors --calibration /data/val --output t_int8.onnx
    inceptionnext quantize inceptionnext_t --weights t.safetensors --calibration /data/val --output t_fast.xml \
        --lever fast-act                             # opt-in speed lever, still checked against the exact model
"""

import argparse
import json

from ..deploy.quantize import BACKENDS, AccuracyFloorError, QualityFloor, QuantizeError, quantize_file
from .common import add_lever_args, add_model_args, model_from_args, reports_errors, summary


def build_parser(prog=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog=prog, description=summary(__doc__))
    add_model_args(p)
    p.add_argument(
        "--calibration",
        "--calib",
        required=True,
        metavar="SOURCE",
        help="'digits' (the embedded digits), an ImageFolder (<class>/<image>: also gives top-1), or a "
        "folder of images",
    )
    p.add_argument(
        "--output",
        "-o",
        required=True,
        help="the int8 file: .xml (OpenVINO IR + .bin, NNCF) or .onnx (ONNX Runtime QDQ)",
    )
    p.add_argument("--backend", default=None, choices=list(BACKENDS), help="default: from the output suffix")
    p.add_argument("--num-calibration", type=int, default=128, help="images to calibrate on")
    p.add_argument("--num-check", type=int, default=256, help="held-out images to check the file on")
    p.add_argument(
        "--min-agreement",
        type=float,
        default=QualityFloor.min_agreement,
        help="floor: fraction of held-out images whose top-1 class must not change",
    )
    p.add_argument("--min-sqnr", type=float, default=QualityFloor.min_sqnr_db, help="floor: logit SQNR in dB")
    p.add_argument(
        "--max-top1-change",
        type=float,
        default=QualityFloor.max_top1_change,
        help="floor: on labelled images, int8 top-1 within this many points of fp32 (either way)",
    )
    p.add_argument(
        "--min-check-images",
        type=int,
        default=QualityFloor.min_check_images,
        help="floor: the fewest held-out images it is judged on (fewer: refused, nothing written)",
    )
    add_lever_args(p, "")
    p.add_argument("--force", action="store_true", help="write the file even below the floor")
    p.add_argument("--img-size", type=int, default=None, help="override the weights' input size")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


@reports_errors(QuantizeError, ImportError)
def cli(argv=None, prog: str = "inceptionnext quantize") -> int:
    a = build_parser(prog).parse_args(argv)
    model = model_from_args(a)
    overrides = {"img_size": a.img_size} if a.img_size else None
    try:
        floor = QualityFloor(a.min_agreement, a.min_sqnr, a.min_check_images, a.max_top1_change)
        report = quantize_file(
            model,
            a.output,
            a.calibration,
            a.num_calibration,
            a.num_check,
            a.backend,
            floor,
            a.force,
            overrides=overrides,
            levers=",".join(a.levers),
        )
    except AccuracyFloorError as e:
        print(f"error: {e}; --force writes it anyway")
        return 3
    if a.json:
        print(json.dumps(vars(report), indent=2))
    else:
        print(
            f"wrote {report.path} ({report.file_bytes / 2**20:.1f} MiB): {report.summary()}"
            + ("" if report.passed else "  [below the floor: written because of --force]")
        )
    return 0
