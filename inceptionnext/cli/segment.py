"""`inceptionnext segment`: a colour-overlay PNG and a raw class-index mask PNG for each image file.

inceptionnext segment fpn_inceptionnext_a --weights output/segmentation_demo/.../model_best.pth scene.png -o seg/
inceptionnext segment upernet_inceptionnext_t --weights ade.pth room.jpg --base-size 2048,512 --json
"""

import argparse
import json
from pathlib import Path

from ..data.images import check_dense_inputs
from ..model_file import read_model_file
from ..models.segmentation import is_segmentation_model
from ..tasks.segmentation.evaluate import seg_architecture
from ..tasks.segmentation.infer import segment_files
from ..train.checkpoint import training_config
from ..utils.device import resolve_device
from ..utils.text import escape_control
from .common import add_model_args, floats, model_from_args, reports_errors, split_model_and_images, summary


def build_parser(prog=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog=prog, description=summary(__doc__))
    add_model_args(p)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files, or folders of them")
    p.add_argument("--output", "-o", default="segmentation", help="folder for the PNGs (default: ./segmentation)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--base-size", type=floats, default=None, help="keep-ratio resize first, e.g. '2048,512'")
    p.add_argument("--test-mode", default="whole", choices=("whole", "slide"))
    p.add_argument("--crop-size", type=int, default=512, help="sliding-window size")
    p.add_argument("--stride", type=int, default=None, help="sliding-window stride (default 2/3 of the crop)")
    p.add_argument("--scales", type=floats, default=(1.0,), help="multi-scale ratios, e.g. '0.75,1.0,1.25'")
    p.add_argument("--flip", action="store_true", help="also average the horizontally flipped image")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours")
    p.add_argument("--json", action="store_true", help="print each image's per-class pixel shares as JSON")
    p.add_argument("--overwrite", action="store_true", help="write over PNGs already in the output folder")
    return p


@reports_errors()
def cli(argv=None, prog: str = "inceptionnext segment") -> int:
    a = build_parser(prog).parse_intermixed_args(argv)  # options may sit between the model and its images
    split_model_and_images(a, "segment")
    if a.weights and not Path(a.weights).is_file():
        raise ValueError(f"weight file not found: {a.weights}")
    trained = training_config(a.weights) if a.weights else {}
    if not a.model and a.weights and not trained:  # a converted file records its model (read, and checked, here)
        a.model = read_model_file(a.weights).model_name
    a.model = a.model or trained.get("model")
    if not is_segmentation_model(a.model):
        raise ValueError(
            f"{a.model!r} is not a segmentation model (upernet_ or fpn_ before a zoo name, e.g. fpn_inceptionnext_t)"
        )
    check_dense_inputs(a.images)  # before the model is built: a refused image costs no memory
    device = resolve_device(a.device)
    model = model_from_args(a, **seg_architecture(trained, a.model))
    model = model.to(device)
    results = segment_files(
        model,
        a.images,
        a.output,
        device,
        tuple(int(v) for v in a.base_size) if a.base_size else None,
        a.test_mode,
        a.crop_size,
        a.stride,
        a.scales,
        a.flip,
        a.alpha,
        overwrite=a.overwrite,
    )
    if a.json:
        print(json.dumps({"model": a.model, "weights": a.weights or "pretrained", "images": results}, indent=2))
        return 0
    for r in results:  # names come from files: control characters are shown escaped, never sent to the terminal
        top = ", ".join(f"{escape_control(c['label'])} {c['share']:.1f}%" for c in r["classes"][:5])
        print(
            f"{escape_control(r['file'])}: {top}\n  overlay {escape_control(r['overlay'])}\n"
            f"  mask    {escape_control(r['mask'])}"
        )
    return 0
