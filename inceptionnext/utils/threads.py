"""How many compute threads a command runs with, and a word when the machine is busy.

torch starts with one OpenMP thread per core of the machine. Data-loader worker processes run on the same cores, and
OpenMP threads that outnumber the free cores wait on each other at every parallel region: under load a run gets many
times slower, not a little. So a command uses the cores this process may run on (its CPU affinity), less its loader
workers, at least one; and it says in one line when the 1-minute load average is well above those cores.

An OMP_NUM_THREADS in the environment is the user's choice and is kept (torchrun sets it too). The command line
sets the count for the time a command runs and restores it after, so calling a command's function from Python
leaves the caller's setting as it was.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Optional

import torch

from .workers import available_cpus, local_processes

BUSY_FACTOR = 1.5  # a 1-minute load average above this many times the cores is "well above" them


def compute_threads(workers: int = 0, processes: Optional[int] = None) -> int:
    """The intra-op threads for one process: its share of the cores it may use (`processes` local processes share
    them), less its `workers` data-loader processes, at least 1; never more than torch's own default."""
    share = available_cpus() // (processes or local_processes())
    return max(1, min(share - max(0, workers), torch.get_num_threads()))


def busy_note(cores: Optional[int] = None, load: Optional[float] = None) -> Optional[str]:
    """One line when the 1-minute load average is well above the cores this process may use, else None."""
    cores = cores or available_cpus()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this system
            return None
    if load <= BUSY_FACTOR * cores:
        return None
    return (
        f"note: this machine is busy (1-minute load average {load:.1f} on the {cores} core{'s' if cores != 1 else ''} "
        "this process may use), so this run will be slower than usual; OMP_NUM_THREADS=1 slows it least on a "
        "shared machine"
    )


@contextlib.contextmanager
def command_threads(workers: int = 0, note: bool = True) -> Iterator[int]:
    """For the time a command runs: torch's thread count from `compute_threads(workers)` (unless OMP_NUM_THREADS
    is set) and, with `note`, the busy-machine line on stderr. Yields the count in use; restores the old one."""
    before = torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS"):
        yield before
        return
    message = busy_note() if note else None
    if message:
        print(message, file=sys.stderr, flush=True)
    threads = compute_threads(workers)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
