"""Benchmarks that print ours beside timm's models, measured in one interleaved run: `models` times the
PyTorch models (train and inference, the fused kernel on and off), `paths` each deployment path (runtime x
precision). Internal: the `inceptionnext benchmark` command is its interface."""

__all__ = []
