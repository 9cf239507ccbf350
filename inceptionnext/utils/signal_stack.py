"""Keeping the thread's alternate signal stack across calls into a library that swaps it.

OpenVINO's CPU plugin installs a signal stack of its own on the thread that creates it and, when it is released,
puts back the stack it found. Two plugins (two `ov.Core`s, or one inside NNCF) released in the other order leave
the thread on a stack that was already unmapped; the next signal with a Python handler (SIGCHLD from a DataLoader
worker, SIGINT from Ctrl-C) then kills the process with SIGSEGV and no traceback. Putting back, after each such
call, the stack the thread had before it makes every later release order safe: a plugin whose stack is no longer
the current one only unmaps its own.
"""

import contextlib
import ctypes
import sys
from typing import Iterator, Optional, Tuple


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc if hasattr(libc, "sigaltstack") else None
    except OSError:
        return None


_LIBC = _libc()


def current_signal_stack() -> Optional[Tuple[int, int, int]]:
    """This thread's alternate signal stack as (address, flags, size); None where it cannot be read."""
    if _LIBC is None:
        return None
    stack = _StackT()
    if _LIBC.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return int(stack.ss_sp or 0), int(stack.ss_flags), int(stack.ss_size)


def _set_signal_stack(address: int, flags: int, size: int) -> None:
    stack = _StackT(ctypes.c_void_p(address or None), flags & 2, size)  # only SS_DISABLE may be set
    if _LIBC.sigaltstack(ctypes.byref(stack), None) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack failed")


@contextlib.contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Run the block, then give this thread back the signal stack it had before (when the block changed it)."""
    before = current_signal_stack()
    try:
        yield
    finally:
        if before is not None and current_signal_stack() != before:
            _set_signal_stack(*before)
