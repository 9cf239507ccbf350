"""The sampler of iteration runs (``iters``): any task that declares iteration runs trains from it."""

from __future__ import annotations

import math
from typing import List

import torch


class RoundSampler(torch.utils.data.Sampler):
    """Iteration-based training: `samples` indices per round (per rank) from one endless stream of seeded
    permutations of the dataset, shared by all ranks (rank r takes every world-th index). set_epoch(round)
    positions the stream, so a resumed run draws exactly what an uninterrupted one would.

    Args:
        dataset_len: the dataset's size.
        samples: indices per round, per rank.
        seed: the seed of the permutations.
        rank: this process's rank.
        world_size: the number of processes.
    """

    def __init__(self, dataset_len: int, samples: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.samples, self.seed, self.rank, self.world = dataset_len, samples, seed, rank, world_size
        self.round = 0

    def set_epoch(self, epoch: int) -> None:
        """Position the stream at the start of a round.

        Args:
            epoch: the round, from 0.
        """
        self.round = epoch

    def __len__(self) -> int:
        return self.samples

    def __iter__(self):
        start = self.round * self.samples * self.world
        stop = start + self.samples * self.world
        out: List[int] = []
        for k in range(start // self.n, math.ceil(stop / self.n)):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
            perm = torch.randperm(self.n, generator=g).tolist()
            lo, hi = max(start - k * self.n, 0), min(stop - k * self.n, self.n)
            out.extend(perm[lo:hi])
        return iter(out[self.rank :: self.world])
