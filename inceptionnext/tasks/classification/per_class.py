"""Per-class results of a classifier: the confusion matrix, precision/recall/F1/support per class, and the
validation images it got wrong with the most confidence.

The confusion matrix is counted on each process and summed over ranks (it is additive, unlike per-class F1),
so a torchrun validation reports the same figures as a single process; everything per class is derived from it,
with scikit-learn's conventions (rows: true class, columns: predicted; 0 where a class has no prediction or no
sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

MISTAKES_KEPT = 16  # the most confident mistakes a report keeps (the grid's size)


def confusion_counts(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A num_classes x num_classes int64 matrix: [true, predicted] counts of one batch."""
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


@dataclass
class Mistake:
    index: int  # the sample's index in the validation dataset
    target: int
    predicted: int
    probability: float  # the softmax probability of the predicted (wrong) class


@dataclass
class MistakeCollector:
    """The `keep` wrong predictions with the highest predicted probability seen so far."""

    keep: int = MISTAKES_KEPT
    mistakes: List[Mistake] = field(default_factory=list)

    def add(self, indices: Sequence[int], targets: torch.Tensor, probs: torch.Tensor) -> None:
        """One batch: dataset `indices` of its samples, their true classes and softmax probabilities."""
        conf, pred = probs.max(dim=1)
        wrong = (pred != targets).nonzero().flatten().tolist()
        for i in wrong:
            self.mistakes.append(Mistake(int(indices[i]), int(targets[i]), int(pred[i]), float(conf[i])))
        self.mistakes = most_confident(self.mistakes, self.keep)


def most_confident(mistakes: Sequence[Mistake], keep: int) -> List[Mistake]:
    """The `keep` mistakes of highest probability (ties: lower dataset index first, so ranks agree)."""
    return sorted(mistakes, key=lambda m: (-m.probability, m.index))[:keep]


def class_names_for(class_to_idx: Optional[Dict[str, int]], num_classes: int) -> List[str]:
    """Names of the model's outputs: the dataset's folder names by index, 'class <i>' for any output without one."""
    names = [f"class {i}" for i in range(num_classes)]
    for name, i in (class_to_idx or {}).items():
        if 0 <= int(i) < num_classes:
            names[int(i)] = str(name)
    return names


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def per_class_report(
    confusion: np.ndarray, class_names: Sequence[str], mistakes: Sequence[Mistake] = (), files: Sequence[str] = ()
) -> Dict[str, Any]:
    """Precision, recall, F1 and support of each class, their macro and support-weighted means, accuracy, the
    confusion matrix (counts, and normalised by true class), the worst class (lowest F1 among classes with
    samples) and the most confident mistakes, as plain JSON-ready values."""
    cm = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _ratio(tp, predicted.astype(np.float64))
    recall = _ratio(tp, support.astype(np.float64))
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = support > 0
    classes = [
        {
            "name": str(class_names[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i in range(len(cm))
    ]
    total = int(support.sum())
    # means over the classes the data holds (an output class with no sample would only pull the mean to 0)
    macro = {
        k: float(v[present].mean()) if present.any() else 0.0
        for k, v in (("precision", precision), ("recall", recall), ("f1", f1))
    }
    weighted = {
        k: float((v * support).sum() / total) if total else 0.0
        for k, v in (("precision", precision), ("recall", recall), ("f1", f1))
    }
    worst = None
    if present.any():
        i = int(np.argmin(np.where(present, f1, np.inf)))
        worst = dict(classes[i], index=i)
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "classes": classes,
        "macro_avg": macro,
        "weighted_avg": weighted,
        "worst_class": worst,
        "confusion_matrix": {
            "labels": [str(n) for n in class_names],
            "rows": "true class",
            "columns": "predicted class",
            "counts": cm.tolist(),
            "normalized": _ratio(cm.astype(np.float64), support[:, None].astype(np.float64)).round(6).tolist(),
        },
        "mistakes": [
            {
                "index": m.index,
                **({"file": str(files[m.index])} if m.index < len(files) else {}),
                "true": str(class_names[m.target]),
                "predicted": str(class_names[m.predicted]),
                "probability": round(m.probability, 6),
            }
            for m in mistakes
        ],
    }


def format_per_class(classes: Sequence[Dict[str, Any]], macro_avg: Dict[str, float], limit: int = 50) -> str:
    """The per-class table (the report's "classes") as text, worst F1 first (at most `limit` rows, the rest
    counted), and the macro means."""
    rows = sorted((c for c in classes if c["support"] > 0), key=lambda c: (c["f1"], c["name"]))
    width = max([5] + [len(c["name"]) for c in rows[:limit]])
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for c in rows[:limit]:
        lines.append(
            f"{c['name']:<{width}}  {c['precision']:9.3f}  {c['recall']:6.3f}  {c['f1']:5.3f}  {c['support']:7d}"
        )
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more classes (all of them in --json)")
    m = macro_avg
    lines.append(f"{'macro':<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}")
    return "\n".join(lines)


def dataset_files(dataset) -> List[str]:
    """The image path of each sample of an ImageFolder-like dataset (timm's reader, or torchvision's
    ``samples``); empty when the dataset has no files (the built-in digits)."""
    reader = getattr(dataset, "reader", None)
    samples = getattr(reader, "samples", None) or getattr(dataset, "samples", None)
    if not samples:
        return []
    return [str(s[0]) if isinstance(s, (tuple, list)) else str(s) for s in samples]


def sample_indices(loader) -> Tuple[Any, Optional[Sequence[int]]]:
    """(the dataset a loader reads, the dataset index of each sample in loader order; None: 0, 1, 2 ...)."""
    ds = loader.dataset
    if isinstance(ds, torch.utils.data.Subset):
        return ds.dataset, list(ds.indices)
    return ds, None
