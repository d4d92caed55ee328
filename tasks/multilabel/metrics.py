"""Multi-label metrics: mAP, CF1/OF1, ReaL accuracy and plain top-1 (numpy + scikit-learn).

Conventions (they change numbers, so they are fixed here and recorded by the task):
  - `targets` is a multi-hot matrix [N, C] (1 = the class is in the image's label set);
  - mAP is the mean over classes of scikit-learn's `average_precision_score` (non-interpolated AP,
    ties grouped by threshold), taken over the classes with at least one positive in the scored
    set. A class with no positive has no defined AP (scikit-learn warns and returns a meaningless
    value); it is skipped, as VOC and COCO evaluation code skip it, and the count is reported;
  - CP/CR/CF1 and OP/OR/OF1 follow ML-GCN / ASL: a class is predicted when its probability is
    >= `threshold`; CP and CR are means over the same classes as mAP (a class never predicted
    has precision 0); CF1 = 2·CP·CR / (CP + CR), the harmonic mean of the means. OP counts every
    prediction of every class, as ML-GCN's `AveragePrecisionMeter.evaluation` does: a prediction of
    a class with no positive in the scored set is a false positive (bob 0.1.0 dropped such
    predictions, which overstated OP and OF1 on sets where some class has no positive; see
    docs/suites/multilabel.md);
  - ReaL accuracy (Beyer et al., 2020; timm's `RealLabelsImagenet`): the top-1 prediction is correct
    when it is in the label set; images with an empty set are excluded from the mean.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score

from bob.errors import UsageError


def _check(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, targets = np.asarray(scores), np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise UsageError(
            f"multi-label scores and targets must both be [N, C]; got {scores.shape} and {targets.shape}."
        )
    if len(scores) == 0:
        raise UsageError("cannot score an empty set of images.")
    return scores, targets.astype(bool)


def _keep(targets: np.ndarray, ignore: np.ndarray | None) -> np.ndarray:
    """Which (image, class) pairs are scored: all but the ignored ones."""
    if ignore is None:
        return np.ones(targets.shape, bool)
    ignore = np.asarray(ignore, bool)
    if ignore.shape != targets.shape:
        raise UsageError(f"the ignore mask {ignore.shape} does not match the targets {targets.shape}.")
    return ~ignore


def scored_classes(targets: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Indices of the classes with at least one scored positive: the classes class means run over."""
    targets = np.asarray(targets).astype(bool)
    return np.flatnonzero((targets & _keep(targets, ignore)).any(axis=0))


def average_precision_per_class(
    scores: np.ndarray, targets: np.ndarray, ignore: np.ndarray | None = None
) -> np.ndarray:
    """AP of every class ([C], NaN where the class has no positive); ignored pairs are left out."""
    scores, targets = _check(scores, targets)
    keep = _keep(targets, ignore)
    ap = np.full(scores.shape[1], np.nan)
    for c in scored_classes(targets, ignore):
        rows = keep[:, c]
        ap[c] = average_precision_score(targets[rows, c], scores[rows, c])
    return ap


def mean_average_precision(
    scores: np.ndarray, targets: np.ndarray, ignore: np.ndarray | None = None
) -> float:
    """mAP over the classes with at least one positive (see the module docstring)."""
    ap = average_precision_per_class(scores, targets, ignore)
    if np.isnan(ap).all():
        raise UsageError("no class has a positive label in this set, so mAP is undefined.")
    return float(np.nanmean(ap))


def f1_scores(
    probs: np.ndarray, targets: np.ndarray, threshold: float = 0.5, ignore: np.ndarray | None = None
) -> dict[str, float]:
    """Per-class (CP, CR, CF1) and overall (OP, OR, OF1) precision, recall and F1 at `threshold`;
    ignored pairs count neither as predictions nor as positives."""
    probs, targets = _check(probs, targets)
    keep = _keep(targets, ignore)
    pred = (probs >= threshold) & keep
    targets = targets & keep
    classes = scored_classes(targets)
    tp = (pred & targets).sum(0)[classes].astype(np.float64)
    n_pred = pred.sum(0)[classes].astype(np.float64)
    n_true = targets.sum(0)[classes].astype(np.float64)
    cp = float(np.mean(np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)))
    cr = float(np.mean(tp / n_true))
    # Overall precision over every class: a class without a positive contributes only false positives.
    n_pred_all = float(pred.sum())
    op = float(tp.sum() / n_pred_all) if n_pred_all > 0 else 0.0
    orec = float(tp.sum() / n_true.sum())
    return {
        "cp": cp,
        "cr": cr,
        "cf1": _harmonic(cp, cr),
        "op": op,
        "or": orec,
        "of1": _harmonic(op, orec),
    }


def _harmonic(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def real_accuracy(scores: np.ndarray, targets: np.ndarray, k: int = 1) -> tuple[float, int, int]:
    """ReaL top-k accuracy: (accuracy, images scored, images excluded for an empty label set)."""
    scores, targets = _check(scores, targets)
    keep = targets.any(axis=1)
    if not keep.any():
        raise UsageError("every image has an empty label set, so ReaL accuracy is undefined.")
    top = np.argsort(-scores[keep], axis=1, kind="stable")[:, :k]
    hit = np.take_along_axis(targets[keep], top, axis=1).any(axis=1)
    return float(hit.mean()), int(keep.sum()), int((~keep).sum())


def multilabel_metrics(
    scores: np.ndarray,
    probs: np.ndarray | None,
    targets: np.ndarray,
    primary: np.ndarray,
    threshold: float = 0.5,
    ignore: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[str, int]]:
    """Every metric of the suite on one scored set, plus the counts behind them.

    `scores` rank classes (logits), `probs` are what `threshold` applies to (None: no F1, e.g. for
    a softmax classifier), `primary` is each image's single label (-1 where it has none) for the
    plain top-1, `ignore` marks (image, class) pairs that mAP and F1 leave out.
    """
    real1, n_scored, n_excluded = real_accuracy(scores, targets, 1)
    metrics = {"map": mean_average_precision(scores, targets, ignore), "real_top1": real1}
    if scores.shape[1] > 5:  # with five classes or fewer, top-5 is always right
        metrics["real_top5"] = real_accuracy(scores, targets, 5)[0]
    has_primary = primary >= 0
    if has_primary.any():
        hit = scores.argmax(1) == primary
        metrics["top1"] = float(hit[has_primary].mean())
        # The same images ReaL scores, so the two accuracies compare like for like.
        same = has_primary & targets.astype(bool).any(axis=1)
        if same.any():
            metrics["top1_real_images"] = float(hit[same].mean())
    if probs is not None:
        metrics.update(f1_scores(probs, targets, threshold, ignore))
    counts = {
        "num_images": len(targets),
        "num_real_scored": n_scored,
        "num_real_excluded": n_excluded,
        "num_top1_scored": int(has_primary.sum()),
        "num_classes_scored": len(scored_classes(targets, ignore)),
    }
    return metrics, counts
