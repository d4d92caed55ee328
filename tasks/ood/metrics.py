"""The OOD scores: top-1 and ECE per set (logits masked to a set's class subset), and their summary."""

from __future__ import annotations

import numpy as np

from bob.samples import SampleSet, make_samples
from bob.tasks.common.calibration import expected_calibration_error, softmax


def masked_probs(
    logits: np.ndarray, labels: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(softmax probabilities, labels); with `valid`, both restricted to those classes (labels
    become their positions among them)."""
    if valid is not None:
        position = np.full(logits.shape[1], -1, dtype=np.int64)
        position[valid] = np.arange(len(valid))
        logits, labels = logits[:, valid], position[labels]
    return softmax(logits), labels


def score(logits: np.ndarray, labels: np.ndarray, valid: np.ndarray | None, n_bins: int) -> dict[str, float]:
    """top-1 and ECE; with `valid`, logits are restricted to those classes (labels are their indices)."""
    probs, labels = masked_probs(logits, labels, valid)
    return scores_of(probs, labels, n_bins)


def scores_of(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> dict[str, float]:
    """top-1 and ECE of (masked) probabilities."""
    return {
        "top1": float((probs.argmax(axis=1) == labels).mean()),
        "ece": expected_calibration_error(probs, labels, n_bins),
    }


def top1_rows(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top-1 prediction, label, top-1 probability) per image: what a set's top-1 is computed from."""
    pred = probs.argmax(axis=1)
    return pred, labels, probs[np.arange(len(pred)), pred]


def set_samples(predictions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> SampleSet:
    """The per-image file of `top1_ood`, the mean over sets of each set's top-1: every image of every
    set, its set as cell and stratum (resamples keep each set's size), each set weighing the same.
    `predictions`: set name → `top1_rows` (class indices among the set's classes when it has a subset)."""
    names = list(predictions)
    preds, labels, top = (list(parts) for parts in zip(*predictions.values(), strict=True))
    sets = np.concatenate([np.full(len(y), i) for i, y in enumerate(labels)])
    arrays = {
        "pred": np.concatenate(preds).astype(np.int32),
        "label": np.concatenate(labels).astype(np.int32),
        "score": np.concatenate(top).astype(np.float32),
        "cell": sets.astype(np.int16),
        "stratum": sets.astype(np.int16),
    }
    params = {"n_units": len(sets), "coef": [1.0 / len(names)] * len(names), "cells": names}
    return make_samples("top1", "top1_ood", arrays, units="image", truth=(arrays["label"],), params=params)


def group_of(set_name: str) -> str:
    """The set's reporting group: its corruption for `<corruption>-<severity>` sets, else itself."""
    corruption, _, severity = set_name.rpartition("-")
    return corruption if corruption and severity.isdigit() else set_name


def summarise(id_scores: dict[str, float], set_scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """The flat metrics dict: in distribution, per group (set or corruption), and means over the sets.

    Corruption sets are reported per corruption (mean over severities), which keeps a result to a
    readable number of metrics; every set's own scores go to the `sets` artifact.
    """
    metrics = {"top1_id": id_scores["top1"], "ece_id": id_scores["ece"]}
    groups: dict[str, list[dict[str, float]]] = {}
    for name, s in set_scores.items():
        groups.setdefault(group_of(name), []).append(s)
    for group, scores in groups.items():
        metrics[f"top1/{group}"] = float(np.mean([s["top1"] for s in scores]))
        metrics[f"ece/{group}"] = float(np.mean([s["ece"] for s in scores]))
    metrics["top1_ood"] = float(np.mean([s["top1"] for s in set_scores.values()]))
    metrics["ece_ood"] = float(np.mean([s["ece"] for s in set_scores.values()]))
    metrics["drop"] = metrics["top1_id"] - metrics["top1_ood"]
    return metrics
