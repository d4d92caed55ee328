"""Multi-view scoring: a video's prediction is the softmax averaged over its views (clips × crops)."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from bob.tasks.common.metrics import classification_metrics


def view_averaged(view_logits: np.ndarray) -> np.ndarray:
    """A video's class scores [N, C]: the softmax of each view's logits, averaged over its views."""
    return softmax(view_logits, axis=-1).mean(axis=1)


def multi_view_metrics(view_logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Metrics of the view-averaged softmax ([N, V, C] logits), plus the mean single-view top-1."""
    metrics = classification_metrics(view_averaged(view_logits), labels, num_classes)
    metrics["top1_single_view"] = float((view_logits.argmax(-1) == labels[:, None]).mean())
    return metrics
