"""Aspect-ratio grouping: batches of images that are all landscape or all portrait, so the detector pads less.

Built on any per-epoch index sampler (RandomSampler seeded per epoch, or DistributedSampler); every rank gets
exactly len(sampler) // batch_size batches, so DDP ranks never disagree on the epoch length.
"""
from __future__ import annotations

import bisect
from typing import Iterator, List, Sequence

import torch


def aspect_ratio_groups(aspect_ratios: Sequence[float], bins: Sequence[float] = (1.0,)) -> List[int]:
    """Group id of each image: the index of the first bin edge above its width/height ratio."""
    edges = sorted(bins)
    return [bisect.bisect_right(edges, r) for r in aspect_ratios]


class GroupedBatchSampler(torch.utils.data.Sampler[List[int]]):
    """Batches drawn in the sampler's order, each from one group; the few left over in each group are batched
    together at the end (mixed), and the batch order is shuffled with the epoch's seed."""

    def __init__(self, sampler: torch.utils.data.Sampler, group_ids: Sequence[int], batch_size: int,
                 seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.sampler, self.group_ids, self.batch_size, self.seed = sampler, list(group_ids), batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[List[int]]:
        buckets: dict = {}
        batches, leftovers = [], []
        for idx in self.sampler:
            bucket = buckets.setdefault(self.group_ids[idx], [])
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                batches.append(bucket[:])
                bucket.clear()
        for bucket in buckets.values():
            leftovers.extend(bucket)
        batches += [leftovers[i:i + self.batch_size]
                    for i in range(0, len(leftovers) - self.batch_size + 1, self.batch_size)]
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        for i in torch.randperm(len(batches), generator=g).tolist():
            yield batches[i]
