"""Classification metrics shared by the task suites (numpy; no torch)."""

from __future__ import annotations

import numpy as np


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the k highest scores."""
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def mean_per_class_recall(pred: np.ndarray, labels: np.ndarray) -> float:
    """Balanced accuracy: the mean over classes present in `labels` of each class's recall."""
    return float(np.mean([(pred[labels == c] == c).mean() for c in np.unique(labels)]))


def classification_metrics(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """top-1, top-5 (with at least 5 classes) and mean per-class recall."""
    metrics = {
        "top1": top_k_accuracy(scores, labels, 1),
        "mean_per_class_recall": mean_per_class_recall(scores.argmax(1), labels),
    }
    if num_classes >= 5:
        metrics["top5"] = top_k_accuracy(scores, labels, 5)
    return metrics
