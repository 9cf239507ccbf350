"""How many data-loading processes a command uses: what it asks for, never more than the cores it may run on.

torch's DataLoader warns ("This DataLoader will create N worker processes in total. Our suggested max number of
worker in current system is M ...") once when it is built and again each time it is iterated whenever N exceeds
the cores the process may use (its CPU affinity, which a container or taskset can set below os.cpu_count()).
Every loader here takes its worker count from `loader_workers`, so that warning never shows: a request above
the cores is capped, and the caller says so once in its own words.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

AUTO_MAX = 8  # the default never starts more than this many per process (more rarely helps, and costs memory)


def available_cpus() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, as torch counts them)."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def local_processes() -> int:
    """Training processes sharing this machine (torchrun sets LOCAL_WORLD_SIZE), 1 otherwise."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def loader_workers(requested: Optional[int], processes: Optional[int] = None) -> Tuple[int, Optional[str]]:
    """(workers per process, a note or None). None asks for the default: the cores each of `processes` local
    processes gets (at most AUTO_MAX). A number above what torch accepts without a warning is capped to it,
    and the note says so."""
    cpus = available_cpus()
    processes = processes or local_processes()
    share = max(1, cpus // processes)
    if requested is None:
        return min(share, AUTO_MAX), None
    requested = int(requested)
    if requested <= cpus:  # torch's limit is the machine's cores, whatever the process count
        return requested, None
    return cpus, (
        f"workers: {requested} asked for, but this machine has {cpus} core{'s' if cpus != 1 else ''} for "
        f"this process; using {cpus} (more would only compete for them)"
    )


def capped_workers(requested: Optional[int]) -> int:
    """loader_workers without the note, for the places a caller has already said it."""
    return loader_workers(requested)[0]
