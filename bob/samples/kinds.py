"""How each kind of per-sample file computes its metric under resampling (numpy; no torch).

Every kind takes `weights`, a [B, n_units] matrix of bootstrap counts, and returns the metric of each
of the B resamples: a unit drawn twice counts twice, one not drawn is absent. With all-ones weights
each kind computes exactly what its suite reports (up to floating-point summation order):

- `top1` / `mean`: weighted means of per-row values (`top1`: the row's prediction equals its label),
  per *cell*, combined as Σ coef_c · mean_c. Rows belong to units (`unit`, default one row per unit):
  retrieval's queries, OOD's images of several shifted sets (cells = sets), dg's source × target
  accuracy matrix (rows = a source model's prediction on a target image), rvos's J and F per
  expression (units = videos, so expressions of one video are resampled together);
- `spearman`: Spearman's ρ (Pearson on average ranks; a unit drawn k times is k tied values);
- `average_precision`: multi-label mAP, scikit-learn's `average_precision_score` per class with the
  counts as sample weights (exactly duplication), over the classes with a positive in the resample;
- `iou`: mmseg's dataset mIoU from per-image intersection, label and prediction areas;
- `coco`: COCOeval's AP (bob.samples.coco): per-image matched detections, re-accumulated;
- `hypervolume`: the tradeoff suite's normalised hypervolume of (MACs, top-1) points;
- `quantile`: the median of timed calls (the efficiency suite's latency).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bob.pareto import hypervolume_2d
from bob.samples.coco import coco_ap, coco_check

Arrays = dict[str, np.ndarray]
Params = dict[str, Any]
CHUNK_ENTRIES = 1 << 22  # rows of a [B, m] working array are processed this many entries at a time


@dataclass(frozen=True)
class LinearForm:
    """metric(W) = Σ_c coef_c · (W @ sums)[:, c] / (W @ counts)[:, c]: many runs of one test set are
    resampled with one matrix product. `exact32`: integer sums and counts, so float32 products are
    exact (every partial sum is an integer below 2**24)."""

    sums: np.ndarray  # [n_units, n_cells]
    counts: np.ndarray  # [n_units, n_cells]
    coef: np.ndarray  # [n_cells]
    exact32: bool

    def combine(self, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (sums / counts) @ self.coef

    def apply(self, weights: np.ndarray) -> np.ndarray:
        """The metric under [B, n_units] `weights`: one matrix product (float32 when that is exact)."""
        w = weights if (self.exact32 and weights.dtype == np.float32) else weights.astype(np.float64)
        product = (w @ np.hstack([self.sums, self.counts]).astype(w.dtype)).astype(np.float64)
        k = self.sums.shape[1]
        return self.combine(product[:, :k], product[:, k:])


@dataclass(frozen=True)
class Kind:
    check: Callable[[Arrays, Params], int]  # validates, returns the number of units
    statistic: Callable[[Arrays, Params, np.ndarray], np.ndarray]
    linear: Callable[[Arrays, Params], LinearForm] | None = None
    binary: Callable[[Arrays, Params], bool] = lambda arrays, params: False


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _fields(arrays: Arrays, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    missing = [f for f in required if f not in arrays]
    _need(not missing, f"missing field(s) {', '.join(missing)}")
    extra = sorted(set(arrays) - set(required) - set(optional))
    _need(not extra, f"unexpected field(s) {', '.join(extra)}")


# ------------------------------------------------------------------------------ top1 / mean (cells)


def _row_values(arrays: Arrays) -> np.ndarray:
    if "value" in arrays:
        return np.asarray(arrays["value"], dtype=np.float64)
    return (arrays["pred"] == arrays["label"]).astype(np.float64)


def _check_cells(arrays: Arrays, params: Params, value_fields: tuple[str, ...]) -> int:
    _fields(arrays, value_fields, ("unit", "cell", "stratum", "score"))
    rows = len(arrays[value_fields[0]])
    for name in (*value_fields, "unit", "cell", "score"):
        if name in arrays:
            _need(arrays[name].shape == (rows,), f"{name} must be one value per row")
    n_units = int(params.get("n_units", rows))
    _need(n_units > 0 and rows > 0, "no rows")
    unit = arrays.get("unit")
    if unit is None:
        _need(n_units == rows, "without `unit`, rows are units: n_units must equal the row count")
    else:
        _need(unit.dtype.kind in "iu" and unit.min() >= 0 and unit.max() < n_units, "unit out of range")
    coef = params.get("coef", [1.0])
    cell = arrays.get("cell")
    if cell is not None:
        _need(cell.dtype.kind in "iu" and cell.min() >= 0 and cell.max() < len(coef), "cell out of range")
    if "stratum" in arrays:
        _need(arrays["stratum"].shape == (n_units,), "stratum must be one value per unit")
    _need(np.isfinite(_row_values(arrays)).all(), "values must be finite")
    return n_units


def _linear_cells(arrays: Arrays, params: Params) -> LinearForm:
    values = _row_values(arrays)
    n_units, coef = int(params.get("n_units", len(values))), np.asarray(params.get("coef", [1.0]), float)
    if "unit" not in arrays and "cell" not in arrays:  # one row per unit, one cell: no regrouping
        sums, counts = values[:, None], np.ones((n_units, 1))
    else:
        unit = arrays.get("unit", np.arange(len(values)))
        cell = arrays.get("cell", np.zeros(len(values), dtype=np.int64))
        flat = unit.astype(np.int64) * len(coef) + cell.astype(np.int64)
        size = n_units * len(coef)
        sums = np.bincount(flat, weights=values, minlength=size).reshape(n_units, len(coef))
        counts = np.bincount(flat, minlength=size).astype(np.float64).reshape(n_units, len(coef))
    # A resample draws n_units units in all, so no partial sum exceeds n_units × the largest entry.
    bound = n_units * max(float(np.abs(sums).max(initial=0)), float(counts.max(initial=0)))
    exact32 = bool(np.all(values == np.round(values))) and bound < 2**24
    return LinearForm(sums, counts, coef, exact32)


def _cells_statistic(arrays: Arrays, params: Params, weights: np.ndarray) -> np.ndarray:
    return _linear_cells(arrays, params).apply(weights)


def _is_binary(arrays: Arrays, params: Params) -> bool:
    """One 0/1 outcome per unit in a single cell (top-1 hits): what McNemar's test compares."""
    if "unit" in arrays or len(params.get("coef", [1.0])) != 1:
        return False
    return "pred" in arrays or bool(np.isin(arrays["value"], (0.0, 1.0)).all())


# ----------------------------------------------------------------------------------------- spearman


def _avg_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B, n] average ranks of `values` in each resample, a unit drawn k times being k tied values
    (ranks of undrawn units are computed but carry no weight)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new_group = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(new_group)
    group_of = np.empty(len(values), dtype=np.int64)
    group_of[order] = np.cumsum(new_group) - 1
    per_group = np.add.reduceat(weights[:, order], starts, axis=1)
    before = np.cumsum(per_group, axis=1) - per_group
    return (before + (per_group + 1.0) / 2.0)[:, group_of]


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    total = w.sum(axis=1, keepdims=True)
    dx = x - (w * x).sum(axis=1, keepdims=True) / total
    dy = y - (w * y).sum(axis=1, keepdims=True) / total
    with np.errstate(divide="ignore", invalid="ignore"):
        return (w * dx * dy).sum(axis=1) / np.sqrt((w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1))


def _check_spearman(arrays: Arrays, params: Params) -> int:
    _fields(arrays, ("pred", "target"))
    n = len(arrays["pred"])
    _need(arrays["pred"].shape == arrays["target"].shape == (n,) and n >= 3, "pred/target: [n], n >= 3")
    _need(
        bool(np.isfinite(arrays["pred"]).all() and np.isfinite(arrays["target"]).all()),
        "values must be finite",
    )
    return n


def _spearman(arrays: Arrays, params: Params, weights: np.ndarray) -> np.ndarray:
    pred, target = arrays["pred"].astype(np.float64), arrays["target"].astype(np.float64)
    out = []
    for w in _chunks(weights.astype(np.float64), len(pred)):
        out.append(_weighted_pearson(_avg_ranks(pred, w), _avg_ranks(target, w), w))
    return np.concatenate(out)


def _chunks(weights: np.ndarray, width: int) -> list[np.ndarray]:
    step = max(1, CHUNK_ENTRIES // max(width, 1))
    return [weights[i : i + step] for i in range(0, len(weights), step)]


# --------------------------------------------------------------------------- multi-label mAP (AP)


def _check_average_precision(arrays: Arrays, params: Params) -> int:
    _fields(arrays, ("scores", "targets"), ("ignore",))
    shape = arrays["scores"].shape
    _need(len(shape) == 2 and arrays["targets"].shape == shape, "scores and targets must be [n, C]")
    if "ignore" in arrays:
        _need(arrays["ignore"].shape == shape, "ignore must be [n, C]")
    _need(bool(np.isfinite(arrays["scores"]).all()), "scores must be finite")
    return shape[0]


def class_average_precision(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B] AP of one class, scikit-learn's `average_precision_score` with the resample counts as
    sample weights (thresholds at distinct scores; AP = Σ (R_k − R_{k−1}) P_k); NaN without a positive."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    ordered, y = scores[order], positive[order].astype(np.float64)
    ends = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]
    w = weights[:, order]
    tps = np.cumsum(w * y, axis=1)[:, ends]
    fps = np.cumsum(w * (1.0 - y), axis=1)[:, ends]
    total = tps[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
        recall = tps / total
    steps = np.diff(np.hstack([np.zeros((len(w), 1)), recall]), axis=1)
    ap = (steps * precision).sum(axis=1)
    return np.where(total[:, 0] > 0, ap, np.nan)


def _average_precision(arrays: Arrays, params: Params, weights: np.ndarray) -> np.ndarray:
    scores, targets = arrays["scores"], arrays["targets"].astype(bool)
    keep = ~arrays["ignore"].astype(bool) if "ignore" in arrays else np.ones(targets.shape, bool)
    weights = weights.astype(np.float64)
    per_class = np.full((len(weights), scores.shape[1]), np.nan)
    for c in range(scores.shape[1]):
        rows = np.flatnonzero(keep[:, c])
        if not targets[rows, c].any():
            continue
        for start, w in _offset_chunks(weights[:, rows], len(rows)):
            per_class[start : start + len(w), c] = class_average_precision(
                scores[rows, c], targets[rows, c], w
            )
    return _nanmean_rows(per_class)


def _offset_chunks(weights: np.ndarray, width: int) -> list[tuple[int, np.ndarray]]:
    step = max(1, CHUNK_ENTRIES // max(width, 1))
    return [(i, weights[i : i + step]) for i in range(0, len(weights), step)]


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    defined = ~np.isnan(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(defined.any(axis=1), np.nansum(values, axis=1) / defined.sum(axis=1), np.nan)


# ------------------------------------------------------------------------------------ segmentation


def _check_iou(arrays: Arrays, params: Params) -> int:
    _fields(arrays, ("intersect", "area_label", "area_pred"))
    shape = arrays["intersect"].shape
    _need(len(shape) == 2, "intersect must be [n, C]")
    _need(arrays["area_label"].shape == arrays["area_pred"].shape == shape, "areas must be [n, C]")
    _need(all(arrays[k].dtype.kind in "iu" for k in arrays), "areas must be pixel counts (integers)")
    return shape[0]


def _iou(arrays: Arrays, params: Params, weights: np.ndarray) -> np.ndarray:
    w = weights.astype(np.float64)
    inter = w @ arrays["intersect"].astype(np.float64)
    union = w @ arrays["area_label"].astype(np.float64) + w @ arrays["area_pred"].astype(np.float64) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    return _nanmean_rows(iou)


# ------------------------------------------------------------------------------------- hypervolume


def _check_hypervolume(arrays: Arrays, params: Params) -> int:
    _fields(arrays, ("correct", "macs"))
    correct, macs = arrays["correct"], arrays["macs"]
    _need(
        correct.ndim == 2 and macs.shape == (correct.shape[0],), "correct must be [points, n], macs [points]"
    )
    _need(bool((macs > 0).all()) and float(params.get("margin", 0)) >= 1.0, "MACs > 0 and a margin >= 1")
    return correct.shape[1]


def _hypervolume(arrays: Arrays, params: Params, weights: np.ndarray) -> np.ndarray:
    """Each point's top-1 on the resample, then the hypervolume of (MACs, top-1) against the reference
    (margin × the largest MACs, top-1 0), divided by the reference's MACs (the tradeoff suite's metric)."""
    w = weights.astype(np.float64)
    acc = (w @ arrays["correct"].T.astype(np.float64)) / w.sum(axis=1, keepdims=True)
    macs = arrays["macs"].astype(np.float64)
    ref_x = float(params["margin"]) * macs.max()
    return np.array(
        [hypervolume_2d(np.column_stack([macs, a]), (ref_x, 0.0), (True, False)) / ref_x for a in acc]
    )


# ------------------------------------------------------------------------------------------ median


def _check_quantile(arrays: Arrays, params: Params) -> int:
    _fields(arrays, ("value",))
    _need(arrays["value"].ndim == 1 and len(arrays["value"]) > 0, "value must be [n], n >= 1")
    _need(params.get("q") == 0.5, "only the median (q = 0.5) is supported")
    return len(arrays["value"])


def _median(arrays: Arrays, params: Params, weights: np.ndarray) -> np.ndarray:
    """numpy's median of each resample (the mean of the two middle values of an even count) × scale."""
    order = np.argsort(arrays["value"], kind="stable")
    values = arrays["value"][order].astype(np.float64)
    cum = np.cumsum(weights[:, order].astype(np.float64), axis=1)
    total = cum[:, -1]
    low_rank, high_rank = np.floor((total - 1) / 2), np.floor(total / 2)  # 0-based middle positions
    offsets = np.arange(len(cum))[:, None] * (total.max() + 1)
    flat = (cum + offsets).ravel()
    low = np.searchsorted(flat, low_rank + offsets[:, 0], side="right") - np.arange(len(cum)) * cum.shape[1]
    high = np.searchsorted(flat, high_rank + offsets[:, 0], side="right") - np.arange(len(cum)) * cum.shape[1]
    return (values[low] + values[high]) / 2.0 * float(params.get("scale", 1.0))


KINDS: dict[str, Kind] = {
    "top1": Kind(
        lambda a, p: _check_cells(a, p, ("pred", "label")), _cells_statistic, _linear_cells, _is_binary
    ),
    "mean": Kind(lambda a, p: _check_cells(a, p, ("value",)), _cells_statistic, _linear_cells, _is_binary),
    "spearman": Kind(_check_spearman, _spearman),
    "average_precision": Kind(_check_average_precision, _average_precision),
    "iou": Kind(_check_iou, _iou),
    "coco": Kind(coco_check, coco_ap),
    "hypervolume": Kind(_check_hypervolume, _hypervolume),
    "quantile": Kind(_check_quantile, _median),
}
