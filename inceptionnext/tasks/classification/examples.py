"""Which validation images val_predictions.png shows: a sample that spans the classes, mistakes first.

The first images in folder order are one or two classes (the folders are sorted), and a picture of right answers
teaches little. So the picture draws from a fixed pool taken round-robin over the classes (in a seeded order, the
same every epoch, so pictures of different epochs compare), and of the pool shows the mistakes before the right
answers, each again spread over the classes.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

from torch.utils.data import Dataset


def dataset_targets(dataset: Dataset) -> Optional[List[int]]:
    """The class index of every image, read without loading images (None where the dataset does not list them)."""
    targets = getattr(dataset, "targets", None)
    if targets is None and hasattr(getattr(dataset, "reader", None), "samples"):  # timm's ImageFolder reader
        targets = [t for _, t in dataset.reader.samples]
    return None if targets is None else [int(t) for t in targets]


def round_robin(indices: Sequence[int], targets: Sequence[int], count: int, seed: int = 0) -> List[int]:
    """Up to `count` of `indices`, one of each class in turn (classes in a seeded order, each class's images in
    theirs), so every class appears before any appears twice."""
    by_class: Dict[int, List[int]] = defaultdict(list)
    for i in indices:
        by_class[targets[i]].append(i)
    classes = sorted(by_class)
    rng = random.Random(seed)
    rng.shuffle(classes)
    picked: List[int] = []
    depth = 0
    while len(picked) < count and any(depth < len(by_class[c]) for c in classes):
        picked += [by_class[c][depth] for c in classes if depth < len(by_class[c])][: count - len(picked)]
        depth += 1
    return picked


def candidate_pool(targets: Optional[Sequence[int]], length: int, size: int, seed: int = 0) -> List[int]:
    """The val images the picture chooses from: `size` of them across the classes (the first `size` when the
    classes are unknown). Each class's images are taken in a seeded order, not the folder's."""
    if targets is None:
        return list(range(min(size, length)))
    shuffled = list(range(length))
    random.Random(seed).shuffle(shuffled)
    return round_robin(shuffled, targets, size, seed)


def mistakes_first(pool: Sequence[int], targets: Sequence[int], predictions: Sequence[int], count: int) -> List[int]:
    """`count` positions into `pool`: its mistakes first, then right answers, each spread over the true classes.
    `targets` and `predictions` are the pool's, position by position."""
    positions = list(range(len(pool)))
    wrong = [p for p in positions if predictions[p] != targets[p]]
    right = [p for p in positions if predictions[p] == targets[p]]
    chosen = round_robin(wrong, targets, count)
    return chosen + round_robin(right, targets, count - len(chosen))
