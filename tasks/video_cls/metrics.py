"""Multi-view scoring: a video's prediction is the softmax averaged over its views (clips × crops)."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from bob.tasks.common.metrics import classification_metrics


def multi_view_metrics(view_logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Metrics of the view-averaged softmax ([N, V, C] logits), plus the mean single-view top-1."""
    probs = softmax(view_logits, axis=-1)
    metrics = classification_metrics(probs.mean(axis=1), labels, num_classes)
    metrics["top1_single_view"] = float((view_logits.argmax(-1) == labels[:, None]).mean())
    return metrics
