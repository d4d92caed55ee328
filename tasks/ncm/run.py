"""The nearest-class-mean protocol on the run's cached features."""

from __future__ import annotations

import numpy as np

from bob.context import RunContext
from bob.task import TaskOutput
from bob.tasks.common.metrics import classification_metrics
from bob.tasks.common.samples import classification_samples, save_samples
from bob.tasks.ncm import Ncm


def transform(x: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """Centre by `mean` (when given), then L2-normalise each row (zero rows stay zero)."""
    x = x - mean if mean is not None else x
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def nearest_class_mean(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    num_classes: int,
    normalize: str,
    chunk: int = 4096,
) -> np.ndarray:
    """Scores [N_test, C]: minus the Euclidean distance to each class centroid; a class with no train
    feature scores -inf. Distances come from ‖a‖² − 2a·b + ‖b‖², a chunk of test rows at a time."""
    train_x, test_x = train_x.astype(np.float64), test_x.astype(np.float64)
    if normalize != "none":
        mean = train_x.mean(0) if normalize == "cl2n" else None
        train_x, test_x = transform(train_x, mean), transform(test_x, mean)
    present = np.unique(train_y)
    centroids = np.stack([train_x[train_y == c].mean(0) for c in present])
    squared = (centroids**2).sum(1)
    scores = np.full((len(test_x), num_classes), -np.inf)
    for start in range(0, len(test_x), chunk):
        rows = test_x[start : start + chunk]
        d2 = (rows**2).sum(1)[:, None] - 2 * rows @ centroids.T + squared[None]
        scores[start : start + chunk, present] = -np.sqrt(np.maximum(d2, 0.0))
    return scores


def run(task: Ncm, ctx: RunContext) -> TaskOutput:
    train, test = ctx.pooled("train"), ctx.pooled("test")
    scores = nearest_class_mean(
        train.features, train.labels, test.features, ctx.num_classes, task.args.normalize
    )
    metrics = classification_metrics(scores, test.labels, ctx.num_classes)
    protocol = {
        "normalize": task.args.normalize,
        "distance": "euclidean to class centroids",
        "num_train": len(train.labels),
        "num_test": len(test.labels),
    }
    return save_samples(ctx, TaskOutput(metrics, protocol), classification_samples(scores, test.labels))
