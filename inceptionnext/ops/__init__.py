"""Token-mixer operators: a fused GPU path behind the same call as the plain PyTorch reference.

`inception_dwconv` is the one entry point; `dispatch` says which path runs and why, `reference` is the plain
PyTorch path every fast path is held to, `custom_op`/`triton_dwconv` are the fused kernels.
"""

from . import bench
from .dispatch import ENV_VAR, fast_path, fast_path_available, inception_dwconv, uses_fast_path
from .reference import branch_split_sizes, inception_dwconv_reference

__all__ = [
    "bench",
    "inception_dwconv",
    "inception_dwconv_reference",
    "branch_split_sizes",
    "fast_path",
    "fast_path_available",
    "uses_fast_path",
    "ENV_VAR",
]
