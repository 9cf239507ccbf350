"""`inceptionnext validate`: top-1 / top-5 of a model on an ImageFolder, preprocessed the way its weights expect.

    inceptionnext validate inceptionnext_t --weights output/run/model_best.pth --data-dir /data/imagenet/val
    inceptionnext validate --weights output/digits_inceptionnext_a/model_best.pth --dataset digits
"""
import argparse
import json
import sys

from ..train import CheckpointError, DataError, TrainError
from ..train.evaluate import run_validation
from ..runtimes import PRECISIONS, RUNTIMES
from .common import add_ema_args, floats, say_weights, summary
from .predict import INTERPOLATIONS


def build_parser(prog=None):
    p = argparse.ArgumentParser(prog=prog, description=summary(__doc__))
    p.add_argument("model", nargs="?", default=None,
                   help="model name, e.g. inceptionnext_t, or an .onnx / OpenVINO .xml file; optional "
                        "when the weight file records it")
    p.add_argument("--model", dest="model_flag", default=None, metavar="MODEL", help="the model name as a flag")
    p.add_argument("--weights", "--checkpoint", dest="weights", default=None, metavar="FILE",
                   help="weight file: a training checkpoint of this engine, a converted file, an official .pth, a "
                        "timm state dict or .safetensors; omitted: the model's pretrained weights")
    p.add_argument("--data-dir", default=None,
                   help="the evaluation split itself, <class>/<image> below it (e.g. /data/imagenet/val)")
    p.add_argument("--dataset", default="folder", choices=("folder", "digits"),
                   help="folder: an ImageFolder at --data-dir; digits: the built-in digits' validation split")
    p.add_argument("--num-classes", type=int, default=None, help="default: read from the weight file")
    add_ema_args(p)
    p.add_argument("--batch-size", "-b", type=int, default=128, help="images per forward pass")
    p.add_argument("--workers", type=int, default=4, help="data loader processes")
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="autocast dtype (fp16: CUDA only)")
    p.add_argument("--channels-last", action="store_true", help="run in channels_last memory format")
    p.add_argument("--runtime", default=None, choices=RUNTIMES,
                   help="torch (default for weights), torch.compile, onnxruntime (default for .onnx), openvino")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="fp32 (default), bf16, int8 (a file from `inceptionnext quantize`)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run")
    p.add_argument("--img-size", type=int, default=None, help="override the weights' input size")
    p.add_argument("--crop-pct", type=float, default=None, help="override the weights' center-crop fraction")
    p.add_argument("--interpolation", default=None, choices=INTERPOLATIONS,
                   help="override the weights' resize interpolation")
    p.add_argument("--mean", type=floats, default=None, help="override the normalization mean: '0.485,0.456,0.406'")
    p.add_argument("--std", type=floats, default=None, help="override the normalization std, one value per channel")
    p.add_argument("--bad-images", default="fail", choices=("fail", "skip"),
                   help="unreadable images: stop naming the file, or skip and count them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="print the results as JSON (as predict --json does), or write them to FILE")
    return p


def cli(argv=None, prog: str = "inceptionnext validate") -> int:
    a = build_parser(prog).parse_args(argv)
    try:
        if a.model and a.model_flag and a.model != a.model_flag:
            raise ValueError(f"two model names given: {a.model} and --model {a.model_flag}")
        model = a.model or a.model_flag
        if model is None and a.weights is None:
            raise ValueError("name the model (inceptionnext validate MODEL ...) or give --weights FILE that records it")
        r = run_validation(model, a.weights, a.data_dir, a.dataset, a.num_classes, a.use_ema, a.batch_size,
                           a.workers, a.amp, a.channels_last, a.device, a.img_size, a.crop_pct, a.interpolation,
                           a.mean, a.std, a.bad_images, progress=not a.no_progress, runtime=a.runtime,
                           precision=a.precision)
    except (DataError, CheckpointError, TrainError, OSError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    say_weights(argparse.Namespace(weights_note=r["weights"]))
    if a.json == "-":
        print(json.dumps(r, indent=2, default=list))
        return 0
    dc = r["data_config"]
    print(f"{r['model']} ({r['runtime']} {r['precision']}): top-1 {r['top1']:.3f}  top-5 {r['top5']:.3f}  loss {r['loss']:.4f}  on {r['count']} images "
          f"({dc['input_size'][1]}px, crop_pct {dc['crop_pct']}, {dc['interpolation']}; {r['time_s']:.1f}s)"
          + (f"; skipped {r['skipped_images']} unreadable images" if r["skipped_images"] else ""), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2, default=list)
    return 0
