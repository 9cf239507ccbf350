"""`inceptionnext validate`: top-1 / top-5 of a model on an ImageFolder (mIoU for segmentation models), preprocessed the way its weights expect.

    inceptionnext validate inceptionnext_t --weights output/run/model_best.pth --data-dir /data/imagenet/val
    inceptionnext validate --weights output/digits_inceptionnext_a/model_best.pth --dataset digits
    inceptionnext validate upernet_inceptionnext_t --weights run/model_best.pth --dataset ade20k \
        --data-dir /data/ADEChallengeData2016 --scales 0.5,0.75,1.0,1.25,1.5,1.75 --flip --plot iou.png
"""

import argparse
import json
import sys

from ..data.images import INTERPOLATIONS
from ..deploy.runtimes import PRECISIONS, RUNTIMES
from ..models.segmentation import is_segmentation_model
from ..tasks.classification.evaluate import run_validation
from ..tasks.classification.per_class import format_per_class
from ..tasks.segmentation.draw import plot_per_class
from ..tasks.segmentation.evaluate import format_table, run_seg_validation
from ..train import CheckpointError, DataError, TrainError
from ..train.checkpoint import training_config
from ..utils.text import error_message, escape_control
from ..utils.threads import command_threads
from ..utils.workers import loader_workers
from .common import add_ema_args, floats, say_weights, summary


def build_parser(prog=None):
    p = argparse.ArgumentParser(allow_abbrev=False, prog=prog, description=summary(__doc__))
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="model name, e.g. inceptionnext_t, or an .onnx / OpenVINO .xml file; optional "
        "when the weight file records it",
    )
    p.add_argument("--model", dest="model_flag", default=None, metavar="MODEL", help="the model name as a flag")
    p.add_argument(
        "--weights",
        "--checkpoint",
        dest="weights",
        default=None,
        metavar="FILE",
        help="weight file: a training checkpoint of this engine, a converted file, an official .pth, a "
        "timm state dict or .safetensors; omitted: the model's pretrained weights",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="the evaluation split itself, <class>/<image> below it (e.g. /data/imagenet/val)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        choices=("folder", "digits", "ade20k", "masks", "digit_scenes"),
        help="folder (default): an ImageFolder at --data-dir; digits: the built-in digits' validation "
        "split; segmentation: ade20k, masks or digit_scenes (default: the checkpoint's own)",
    )
    p.add_argument("--num-classes", type=int, default=None, help="default: read from the weight file")
    add_ema_args(p)
    p.add_argument(
        "--batch-size", "-b", type=int, default=None, help="images per forward pass (default 128; segmentation 8)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data loader processes (default: this machine's cores, at most 8; more are capped to them)",
    )
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="autocast dtype (fp16: CUDA only)")
    p.add_argument("--channels-last", action="store_true", help="run in channels_last memory format")
    p.add_argument(
        "--runtime",
        default=None,
        choices=RUNTIMES,
        help="torch (default for weights), torch.compile, onnxruntime (default for .onnx), openvino",
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="fp32 (default), bf16, int8 (a file from `inceptionnext quantize`)",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run")
    p.add_argument("--img-size", type=int, default=None, help="override the weights' input size")
    p.add_argument("--crop-pct", type=float, default=None, help="override the weights' center-crop fraction")
    p.add_argument(
        "--interpolation", default=None, choices=INTERPOLATIONS, help="override the weights' resize interpolation"
    )
    p.add_argument("--mean", type=floats, default=None, help="override the normalization mean: '0.485,0.456,0.406'")
    p.add_argument("--std", type=floats, default=None, help="override the normalization std, one value per channel")
    p.add_argument(
        "--bad-images",
        default="fail",
        choices=("fail", "skip"),
        help="unreadable images: stop naming the file, or skip and count them",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="FILE",
        help="print the results as JSON (as predict --json does), or write them to FILE",
    )
    seg = p.add_argument_group("segmentation models (defaults: the checkpoint's training config)")
    seg.add_argument(
        "--test-mode",
        default=None,
        choices=("whole", "slide"),
        help="segmentation: whole-image or sliding-window inference (default: the checkpoint's)",
    )
    seg.add_argument("--crop-size", type=int, default=None, help="sliding-window size")
    seg.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: 2/3 of the crop)")
    seg.add_argument("--base-size", type=floats, default=None, help="keep-ratio test resize, e.g. '2048,512'")
    seg.add_argument("--scales", type=floats, default=(1.0,), help="multi-scale ratios, e.g. '0.5,0.75,1.0,1.25'")
    seg.add_argument("--flip", action="store_true", help="also average the horizontally flipped image")
    p.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="classifier: the per-class picture (confusion matrix in counts and normalised, per-class precision, "
        "recall and F1); segmentation: the per-class IoU as a bar chart",
    )
    p.add_argument(
        "--mistakes",
        default=None,
        metavar="PNG",
        help="classifier: a grid of the most confident mistakes, each titled true / predicted (probability)",
    )
    return p


def seg_cli(a, model: str) -> int:
    """The segmentation branch: per-class IoU table, mIoU, optional per-class plot and JSON."""
    if a.mistakes:
        raise ValueError("--mistakes draws a classifier's mistakes; a segmentation model's pictures are --plot")
    import numpy as np

    r = run_seg_validation(
        model,
        a.weights,
        a.data_dir,
        a.dataset,
        a.num_classes,
        a.use_ema,
        a.batch_size or 8,
        a.workers,
        a.amp,
        a.device,
        a.test_mode,
        a.crop_size,
        a.stride,
        a.scales,
        a.flip,
        tuple(int(v) for v in a.base_size) if a.base_size else None,
        a.img_size,
        progress=not a.no_progress,
    )
    if a.json == "-":
        print(json.dumps(r, indent=2, default=list))
        return 0
    per_class = np.array([np.nan if v is None else v for v in r["per_class_iou"].values()])
    print(format_table(per_class, [escape_control(n) for n in r["class_names"]], r), flush=True)
    t = r["test"]
    print(
        f"{escape_control(model)}: mIoU {r['miou']:.3f} on {r['count']} images ({t['mode']}, scales "
        f"{','.join(str(s) for s in t['scales'])}{', flip' if t['flip'] else ''}; {r['time_s']:.1f}s)",
        flush=True,
    )
    if a.plot:
        plot_per_class(r["per_class_iou"], a.plot, f"{model}: per-class IoU")
        print(f"per-class IoU plot: {a.plot}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2, default=list)
    return 0


def cli(argv=None, prog: str = "inceptionnext validate") -> int:
    a = build_parser(prog).parse_args(argv)
    a.workers, note = loader_workers(a.workers, processes=1)
    if note:
        print(note, file=sys.stderr, flush=True)
    with command_threads(a.workers):  # the cores less the loader's workers, for this command only
        return validate(a)


def validate(a: argparse.Namespace) -> int:
    """The command once its options are read: a segmentation model's mIoU, or a classifier's top-1/top-5."""
    try:
        if a.model and a.model_flag and a.model != a.model_flag:
            raise ValueError(f"two model names given: {a.model} and --model {a.model_flag}")
        model = a.model or a.model_flag
        if model is None and a.weights is None:
            raise ValueError("name the model (inceptionnext validate MODEL ...) or give --weights FILE that records it")
        if model is None and a.weights:  # a segmentation checkpoint names its model in its training config
            recorded = training_config(a.weights).get("model")
            model = recorded if is_segmentation_model(recorded) else None
        if model and is_segmentation_model(model):
            return seg_cli(a, model)
        r = run_validation(
            model,
            a.weights,
            a.data_dir,
            a.dataset or "folder",
            a.num_classes,
            a.use_ema,
            a.batch_size or 128,
            a.workers,
            a.amp,
            a.channels_last,
            a.device,
            a.img_size,
            a.crop_pct,
            a.interpolation,
            a.mean,
            a.std,
            a.bad_images,
            progress=not a.no_progress,
            runtime=a.runtime,
            precision=a.precision,
            plot=a.plot,
            mistakes_plot=a.mistakes,
        )
    except (DataError, CheckpointError, TrainError, OSError, ValueError, ImportError) as e:
        print(f"error: {escape_control(error_message(e), keep_newlines=True)}", file=sys.stderr, flush=True)
        return 1
    say_weights(argparse.Namespace(weights_note=r["weights"]))
    if a.json == "-":
        print(json.dumps(r, indent=2, default=list))
        return 0
    dc = r["data_config"]
    print(
        f"{escape_control(r['model'])} ({r['runtime']} {r['precision']}): top-1 {r['top1']:.3f}  top-5 {r['top5']:.3f}  loss {r['loss']:.4f}  on {r['count']} images "
        f"({dc['input_size'][1]}px, crop_pct {dc['crop_pct']}{', crop_mode ' + str(dc['crop_mode']) if dc.get('crop_mode') else ''}, "
        f"{dc['interpolation']}; {r['time_s']:.1f}s)"
        + (f"; skipped {r['skipped_images']} unreadable images" if r["skipped_images"] else ""),
        flush=True,
    )
    print(escape_control(format_per_class(r["per_class"], r["macro_avg"], limit=20), keep_newlines=True), flush=True)
    worst = r["worst_class"]
    if worst:
        print(
            f"worst class: {escape_control(worst['name'])} (F1 {worst['f1']:.3f}, {worst['support']} images)",
            flush=True,
        )
    for label, path in (("per-class picture", a.plot), ("mistakes", a.mistakes)):
        if path:
            print(f"{label}: {path}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2, default=list)
    return 0
