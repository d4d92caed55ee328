"""OP / OF1 count every false positive, as ML-GCN's `AveragePrecisionMeter.evaluation` does: a
prediction of a class that has no positive in the scored set is a false positive too (regression:
bob used to drop such predictions and reported OP = OF1 = 1.0 on the minimal case below)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from bob.tasks.multilabel.metrics import f1_scores


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _overall_by_counts(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float, float]:
    """ML-GCN's overall scores from per-class counts: Np = logits >= 0 (predicted), Nc = predicted
    positives, Ng = positives; OP = sum Nc / sum Np, OR = sum Nc / sum Ng, OF1 their harmonic mean."""
    predicted = logits >= 0
    n_pred = predicted.sum(0)
    n_correct = (predicted & (targets == 1)).sum(0)
    n_true = (targets == 1).sum(0)
    op = n_correct.sum() / max(n_pred.sum(), 1)
    orec = n_correct.sum() / n_true.sum()
    return op, orec, 2 * op * orec / (op + orec) if op + orec else 0.0


def test_false_positive_on_a_class_without_positives_counts():
    logits = np.array([[2.0, -2.0], [-2.0, 2.0]])
    targets = np.array([[1, 0], [0, 0]])  # class 1 has no positive; image 2 predicts it anyway
    out = f1_scores(_sigmoid(logits), targets, 0.5)
    assert out["op"] == pytest.approx(0.5)
    assert out["or"] == pytest.approx(1.0)
    assert out["of1"] == pytest.approx(2 / 3, abs=1e-12)
    assert (out["op"], out["or"], out["of1"]) == pytest.approx(_overall_by_counts(logits, targets))
    # the per-class scores average over the classes mAP averages (class 0 only), as before
    assert out["cp"] == out["cr"] == out["cf1"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(4))
def test_overall_scores_equal_ml_gcn_counts_and_sklearn_micro_with_empty_classes(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(40, 6))
    targets = (rng.random((40, 6)) < 0.3).astype(int)
    targets[:, [1, 4]] = 0  # two classes with no positive at all, still predicted on some images
    assert (logits[:, [1, 4]] >= 0).any()
    out = f1_scores(_sigmoid(logits), targets, 0.5)
    assert (out["op"], out["or"], out["of1"]) == pytest.approx(_overall_by_counts(logits, targets))
    pred = (logits >= 0).astype(int)
    assert out["op"] == pytest.approx(precision_score(targets, pred, average="micro"))
    assert out["or"] == pytest.approx(recall_score(targets, pred, average="micro"))
    assert out["of1"] == pytest.approx(f1_score(targets, pred, average="micro"))
