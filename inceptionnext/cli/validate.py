"""`inceptionnext validate`: top-1 / top-5 of a model on an ImageFolder, preprocessed the way its weights expect.

    inceptionnext validate --model inceptionnext_t --checkpoint output/run/model_best.pth --data-dir /data/imagenet/val
    inceptionnext validate --model inceptionnext_a --checkpoint output/digits_inceptionnext_a/model_best.pth --dataset digits
"""
import argparse
import json
import sys

from ..safe_text import escape_control
from ..train import CheckpointError, DataError, TrainError
from ..train.evaluate import run_validation
from .common import floats


def build_parser(prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--model", required=True, help="model name, e.g. inceptionnext_t")
    p.add_argument("--checkpoint", default=None,
                   help="weight file: a training checkpoint of this engine, an official .pth, a timm state dict or "
                        ".safetensors; omitted: the model's pretrained weights")
    p.add_argument("--data-dir", default=None, help="ImageFolder root of the evaluation images (<class>/<image>)")
    p.add_argument("--dataset", default="folder", choices=("folder", "digits"))
    p.add_argument("--num-classes", type=int, default=None, help="default: read from the checkpoint")
    p.add_argument("--use-ema", action="store_true", help="evaluate the EMA weights of a training checkpoint")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--crop-pct", type=float, default=None)
    p.add_argument("--interpolation", default=None)
    p.add_argument("--mean", type=floats, default=None, help="e.g. '0.485,0.456,0.406'")
    p.add_argument("--std", type=floats, default=None)
    p.add_argument("--bad-images", default="fail", choices=("fail", "skip"))
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def cli(argv=None, prog: str = "inceptionnext validate") -> int:
    a = build_parser(prog).parse_args(argv)
    try:
        r = run_validation(a.model, a.checkpoint, a.data_dir, a.dataset, a.num_classes, a.use_ema, a.batch_size,
                           a.workers, a.amp, a.channels_last, a.device, a.img_size, a.crop_pct, a.interpolation,
                           a.mean, a.std, a.bad_images, progress=not a.no_progress)
    except (DataError, CheckpointError, TrainError, OSError, ValueError) as e:
        print(f"error: {escape_control(e, keep_newlines=True)}", file=sys.stderr, flush=True)
        return 1
    dc = r["data_config"]
    print(f"{a.model}: top-1 {r['top1']:.3f}  top-5 {r['top5']:.3f}  loss {r['loss']:.4f}  on {r['count']} images "
          f"({dc['input_size'][1]}px, crop_pct {dc['crop_pct']}, {dc['interpolation']}; {r['time_s']:.1f}s)"
          + (f"; skipped {r['skipped_images']} unreadable images" if r["skipped_images"] else ""), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0
