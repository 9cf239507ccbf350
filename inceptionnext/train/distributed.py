"""torch.distributed set-up for torchrun: one process per device, NCCL on GPUs, gloo on CPUs."""

from __future__ import annotations

import datetime
import functools
import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist

from ..utils.device import resolve_device


@dataclass
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class CollectiveTimeout(RuntimeError):
    """A collective that waited longer than dist_timeout for the other ranks (one stopped, hung or far slower)."""


def is_timeout(e: BaseException) -> bool:
    text = str(e).lower()
    return "timed out" in text or "timeout" in text


def timeout_error(collective: str, e: BaseException) -> CollectiveTimeout:
    rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
    limit = _TIMEOUT_S.get("value")
    return CollectiveTimeout(
        f"rank {rank}: {collective} timed out after {limit:g} s waiting for the other ranks (one of them stopped, "
        "hung or is far slower); raise dist_timeout if some step is legitimately that slow"
    )


_TIMEOUT_S = {}


def _named(collective: str):
    """Turn a collective's timeout into one error naming this rank and the collective."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except RuntimeError as e:
                if is_timeout(e):
                    raise timeout_error(collective, e) from e
                raise

        return run

    return wrap


def setup(device_name: str = "auto", timeout_s: float = 600.0) -> DistEnv:
    """Read torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE) and join the process group if there is one;
    a collective waits at most `timeout_s` for the other ranks."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        _TIMEOUT_S["value"] = timeout_s
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@_named("all_reduce")
def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@_named("all_gather_object")
def gather_objects(obj: Any, env: DistEnv) -> List[Any]:
    """Every rank's obj, in rank order (a one-element list without a process group)."""
    if not env.distributed:
        return [obj]
    out: List[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


@_named("broadcast_object_list")
def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's obj on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@_named("barrier")
def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
