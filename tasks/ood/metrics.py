"""The OOD scores: top-1 and ECE per set (logits masked to a set's class subset), and their summary."""

from __future__ import annotations

import numpy as np

from bob.tasks.common.calibration import expected_calibration_error, softmax


def score(logits: np.ndarray, labels: np.ndarray, valid: np.ndarray | None, n_bins: int) -> dict[str, float]:
    """top-1 and ECE; with `valid`, logits are restricted to those classes (labels are their indices)."""
    if valid is not None:
        position = np.full(logits.shape[1], -1, dtype=np.int64)
        position[valid] = np.arange(len(valid))
        logits, labels = logits[:, valid], position[labels]
    probs = softmax(logits)
    return {
        "top1": float((probs.argmax(axis=1) == labels).mean()),
        "ece": expected_calibration_error(probs, labels, n_bins),
    }


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
