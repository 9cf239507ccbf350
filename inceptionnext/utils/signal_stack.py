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
import mmap
import sys
from typing import Iterator, Optional, Tuple

_SS_DISABLE = 2  # sigaltstack's flag: no alternate stack
_MS_ASYNC = 1


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
    """This thread's alternate signal stack as (address, flags, size); None where it cannot be read.

    Returns:
        (address, flags, size), or None off Linux or where sigaltstack fails.
    """
    if _LIBC is None:
        return None
    stack = _StackT()
    if _LIBC.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return int(stack.ss_sp or 0), int(stack.ss_flags), int(stack.ss_size)


def _set_signal_stack(address: int, flags: int, size: int) -> None:
    stack = _StackT(ctypes.c_void_p(address or None), flags & _SS_DISABLE, size)  # the only flag one may set
    if _LIBC.sigaltstack(ctypes.byref(stack), None) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack failed")


def _is_mapped(address: int, size: int) -> bool:
    """Whether [address, address + size) is mapped memory (msync says ENOMEM where it is not)."""
    page = mmap.PAGESIZE
    start = address - address % page
    return _LIBC.msync(ctypes.c_void_p(start), ctypes.c_size_t(size + address - start), _MS_ASYNC) == 0


@contextlib.contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Run the block, then give this thread back the signal stack it had before (when the block changed it); if
    that stack was freed meanwhile, the thread is left with none (signals then run on the thread's own stack)."""
    before = current_signal_stack()
    try:
        yield
    finally:
        if before is not None and current_signal_stack() != before:
            address, flags, size = before
            if flags & _SS_DISABLE or _is_mapped(address, size):
                _set_signal_stack(*before)
            else:
                _set_signal_stack(0, _SS_DISABLE, 0)
