"""`inceptionnext detect`: boxes (and masks) with class names and scores, drawn on a PNG per image.

inceptionnext detect --weights output/demo_fasterrcnn_inceptionnext_a/model_best.pth img1.png img2.jpg
inceptionnext detect --weights model_best.pth images/ --score-thresh 0.3 --out-dir detections --json
"""

import argparse
import json

from ..data.images import check_dense_inputs
from ..tasks.detection.infer import detect_files, load_detector
from ..utils.device import resolve_device
from ..utils.text import escape_control
from .common import reports_errors, summary


def build_parser(prog=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog=prog, description=summary(__doc__))
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of them")
    p.add_argument(
        "--weights",
        "--checkpoint",
        dest="weights",
        required=True,
        metavar="FILE",
        help="a detection training checkpoint (model_best.pth / last.pth of a task: detection run)",
    )
    p.add_argument("--use-ema", action="store_true", help="the checkpoint's EMA weights")
    p.add_argument("--score-thresh", type=float, default=0.5, help="detections below this score are left out")
    p.add_argument("--out-dir", default="detections", help="where the <image>_detections.png files go")
    p.add_argument("--no-draw", action="store_true", help="write no pictures")
    p.add_argument("--overwrite", action="store_true", help="write over pictures already in --out-dir")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print the detections as JSON")
    return p


@reports_errors()
def cli(argv=None, prog: str = "inceptionnext detect") -> int:
    a = build_parser(prog).parse_args(argv)
    if not 0 <= a.score_thresh <= 1:
        raise ValueError(f"--score-thresh must be between 0 and 1, not {a.score_thresh}")
    check_dense_inputs(a.images)  # before the model is built: a refused image costs no memory
    model, names = load_detector(a.weights, use_ema=a.use_ema)
    results = detect_files(
        model,
        a.images,
        names,
        resolve_device(a.device),
        a.score_thresh,
        None if a.no_draw else a.out_dir,
        overwrite=a.overwrite,
    )
    if a.json:
        print(json.dumps({"weights": a.weights, "score_thresh": a.score_thresh, "images": results}, indent=2))
        return 0
    for r in results:  # names come from files: control characters are shown escaped, never sent to the terminal
        print(
            f"{escape_control(r['file'])}: {len(r['detections'])} detections"
            + (f" -> {escape_control(r['picture'])}" if "picture" in r else "")
        )
        for d in r["detections"]:
            print(f"  {escape_control(d['name']):>12s}  {d['score']:.2f}  box {d['box']}")
    return 0
