"""`inceptionnext convert`: any weight file the library reads, written as safetensors or .pth with the record
that rebuilds the model (name, classes, preprocessing, class names), optionally folded for inference.

    inceptionnext convert inceptionnext_tiny.pth inceptionnext_t.safetensors --model inceptionnext_t
    inceptionnext convert output/run/model_best.pth deploy.safetensors --deploy     # a training checkpoint
    inceptionnext convert output/run/model_best.pth my-model/ --hub-folder   # timm's hub format (push_to_hub)
"""

import argparse

from ..model_file import convert, save_hub_folder
from ..models.fold import is_folded
from .common import add_ema_args, reports_errors, say_weights, summary


@reports_errors()
def cli(argv=None, prog: str = "inceptionnext convert") -> int:
    p = argparse.ArgumentParser(prog=prog, description=summary(__doc__))
    p.add_argument(
        "source",
        help="weight file: official .pth, timm/hub state dict, timm train.py checkpoint, "
        ".safetensors, a training checkpoint of this library, or a file converted before",
    )
    p.add_argument("output", help="output file: .safetensors, or .pth/.pt/.bin for torch.save")
    p.add_argument("--model", default=None, help="model name; needed when the source does not record it")
    p.add_argument("--deploy", action="store_true", help="fold BatchNorm and layer scale for inference")
    add_ema_args(p)
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip reading the new file back and comparing its outputs before it is kept",
    )
    p.add_argument(
        "--hub-folder",
        action="store_true",
        help="write OUTPUT as timm's hub folder (config.json + model.safetensors), loadable with "
        "timm.create_model('local-dir:OUTPUT', pretrained=True) and uploadable to the HF hub",
    )
    a = p.parse_args(argv)
    if a.hub_folder:
        if a.deploy:
            p.error("--hub-folder writes unfolded weights (timm rebuilds hub models unfolded); drop --deploy")
        model = save_hub_folder(a.source, a.output, a.model, use_ema=a.use_ema, verify=a.verify)
        say_weights(model)
        print(
            f"wrote {a.output}/: {model.pretrained_cfg.get('architecture')}, {model.num_classes} classes; "
            f"load with timm.create_model('local-dir:{a.output}', pretrained=True)"
        )
        return 0
    result = convert(a.source, a.output, a.model, deploy=a.deploy, use_ema=a.use_ema, verify=a.verify)
    model = result.model
    say_weights(model)
    line = f"wrote {a.output}: {model.pretrained_cfg.get('architecture')}, {model.num_classes} classes" + (
        ", folded" if is_folded(model) else ""
    )
    if result.max_abs_diff is not None:
        line += (
            "; read back and checked: identical outputs"
            if result.max_abs_diff == 0
            else f"; read back and checked: within {result.max_abs_diff:.1e} of the unfolded source"
        )
    print(line)
    return 0
