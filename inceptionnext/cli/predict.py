"""`inceptionnext predict`: top-k classes of image files, preprocessed the way the weights expect.

inceptionnext predict inceptionnext_t cat.jpg dog.png                      # the pretrained weights
inceptionnext predict inceptionnext_t --weights inceptionnext_tiny.pth cat.jpg --top-k 3 --json
inceptionnext predict model_int8.xml photos/                               # a quantized or exported file
"""

import argparse
import json

from ..data.images import INTERPOLATIONS
from ..tasks.classification.infer import classify_files
from ..utils.device import resolve_device
from ..utils.text import escape_control
from .common import (
    add_model_args,
    add_runtime_args,
    floats,
    reports_errors,
    runnable_from_args,
    split_model_and_images,
    summary,
)


def build_parser(prog=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=summary(__doc__))
    add_model_args(p)
    add_runtime_args(p)
    p.add_argument(
        "images", nargs="*", metavar="IMAGE", help="image files (JPEG, PNG, or anything PIL reads), or folders of them"
    )
    p.add_argument(
        "--top-k", "--topk", dest="top_k", type=int, default=5, help="classes to show per image (default: 5)"
    )
    p.add_argument("--batch-size", "-b", type=int, default=16, help="images per forward pass (default: 16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--img-size", type=int, default=None, help="override the weights' input size")
    p.add_argument("--crop-pct", type=float, default=None, help="override the weights' center-crop fraction")
    p.add_argument(
        "--interpolation", default=None, choices=INTERPOLATIONS, help="override the weights' resize interpolation"
    )
    p.add_argument(
        "--mean",
        type=floats,
        default=None,
        help="override the normalization mean, one value per channel: '0.5,0.5,0.5'",
    )
    p.add_argument("--std", type=floats, default=None, help="override the normalization std, one value per channel")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@reports_errors()
def cli(argv=None, prog: str = "inceptionnext predict") -> int:
    a = build_parser(prog).parse_intermixed_args(argv)  # options may sit between the model and its images
    split_model_and_images(a, "predict")
    if a.top_k < 1 or a.batch_size < 1:
        raise ValueError("--top-k and --batch-size must be at least 1")
    device = resolve_device(a.device)
    model = runnable_from_args(a).to(device)
    a.model = a.model or model.pretrained_cfg.get("architecture")
    overrides = {k: getattr(a, k) for k in ("img_size", "crop_pct", "interpolation", "mean", "std")}
    results = classify_files(
        model,
        a.images,
        a.top_k,
        a.batch_size,
        device,
        {k: v for k, v in overrides.items() if v is not None},
        progress=not a.no_progress,
    )
    if a.json:
        print(
            json.dumps(
                {
                    "model": a.model,
                    "weights": a.weights or "pretrained",
                    "weights_loaded": model.weights_note,
                    "predictions": results,
                },
                indent=2,
            )
        )
        return 0
    for r in results:  # names come from files: control characters are shown escaped, never sent to the terminal
        print(escape_control(r["file"]))
        for t in r["top_k"]:
            print(f"  {100 * t['probability']:6.2f}%  {escape_control(t['label'])}  ({t['index']})")
    return 0
