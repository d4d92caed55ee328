"""Calibration of class probabilities: expected calibration error (numpy; no torch).

ECE with the conventions of torchmetrics' `MulticlassCalibrationError(n_bins, norm="l1")`, which is
what the field reports (task-suite convention: 15 uniform bins, L1):

    confidence_i = max_c p_ic,   correct_i = [argmax_c p_ic == y_i]
    bins [k/B, (k+1)/B) for k = 0..B-1, left-closed, plus one bin holding confidence exactly 1.0
    ECE = Σ_bins (n_bin / N) · |mean(correct) − mean(confidence)|    over non-empty bins

Bins are computed in float64 here and in float32 by torchmetrics, so the two can differ only for a
confidence within one float32 ulp of a bin edge (never in practice; see tests/test_ood.py).
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row maximum is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """L1 ECE of class probabilities `probs` [N, C] against integer `labels` [N]."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels) or len(probs) == 0:
        raise ValueError(
            f"expected probs [N, C] and labels [N] with N > 0, got {probs.shape} and {labels.shape}"
        )
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted(side="right") − 1 is torch.bucketize(right=True) − 1: bins closed on the left,
    # and a confidence of exactly 1.0 lands in an extra bin of its own (index n_bins).
    index = np.searchsorted(edges, confidence, side="right") - 1
    count = np.bincount(index, minlength=n_bins + 1).astype(np.float64)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins + 1)
    acc_sum = np.bincount(index, weights=correct, minlength=n_bins + 1)
    filled = count > 0
    gap = np.abs(acc_sum[filled] / count[filled] - conf_sum[filled] / count[filled])
    return float(np.sum(gap * count[filled] / len(probs)))
