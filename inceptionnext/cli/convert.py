"""`inceptionnext convert`: any weight file the library reads, written as safetensors or .pth with the record
that rebuilds the model (name, classes, preprocessing, class names), optionally folded for inference.

    inceptionnext convert inceptionnext_tiny.pth inceptionnext_t.safetensors --model inceptionnext_t
    inceptionnext convert output/run/model_best.pth deploy.safetensors --deploy     # a training checkpoint
"""
import argparse

import torch

from ..model_file import convert, load_model
from .common import reports_errors


@reports_errors()
def cli(argv=None, prog: str = 'inceptionnext convert') -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0].split(': ', 1)[1])
    p.add_argument('source', help="weight file: official .pth, timm/hub state dict, .safetensors, training "
                                  "checkpoint, or a file converted before")
    p.add_argument('output', help="output file: .safetensors, or .pth/.pt/.bin for torch.save")
    p.add_argument('--model', default=None, help="model name; needed when the source does not record it")
    p.add_argument('--deploy', action='store_true', help="fold BatchNorm and layer scale for inference")
    p.add_argument('--use-ema', action='store_true', help="the EMA weights of a training checkpoint")
    p.add_argument('--no-verify', dest='verify', action='store_false',
                   help="skip reading the output back and comparing its outputs")
    a = p.parse_args(argv)
    model = convert(a.source, a.output, a.model, deploy=a.deploy, use_ema=a.use_ema)
    name = model.pretrained_cfg.get('architecture')
    line = f"wrote {a.output}: {name}, {model.num_classes} classes" + (", folded" if a.deploy else "")
    if a.verify:
        size = model.pretrained_cfg.get('input_size') or (model.in_chans, 224, 224)
        x = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            same = torch.equal(model(x), load_model(a.output)(x))
        if not same:
            raise ValueError(f"{a.output}: read back, it does not reproduce the converted model's outputs")
        line += "; read back and checked: identical outputs"
    print(line)
    return 0
