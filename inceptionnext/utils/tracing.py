"""Whether torch.fx is symbolically tracing the model: shape checks and CPU-only fast paths step aside then,
because tensors are proxies whose values and devices are unknown."""

try:  # torch >= 2.6 tells symbolic tracing apart from torch.export/compile
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing as is_fx_tracing
except ImportError:  # pragma: no cover - older torch
    from torch.fx._symbolic_trace import is_fx_tracing

__all__ = ["is_fx_tracing"]
