"""Leaf helpers every layer may use: safe text, atomic files, devices, tables and plots. They import nothing
of the library. Two are public, for your own code beside the library's: `cpu` (whether bf16 pays on this CPU) and
`signal_stack` (keeping the thread's signal stack across OpenVINO calls); the others are internal."""

from . import cpu, signal_stack
from .cpu import native_bf16
from .signal_stack import kept_signal_stack

__all__ = ["cpu", "signal_stack", "kept_signal_stack", "native_bf16"]
