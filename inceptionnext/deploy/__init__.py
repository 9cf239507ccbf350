"""Deployment: folding for inference, export (ONNX, TorchScript, torch.export), int8 quantization, the
runtimes that run the files, the check that a file is whole, and the benchmark across them.

Folding itself lives with the models (a folded model is still a model, and `model_file` loads folded files);
these names are its public face here.
"""

from ..models.fold import create_deploy_model, is_folded, reparameterize_model
from .verify import verify_file

__all__ = ["create_deploy_model", "is_folded", "reparameterize_model", "verify_file"]
