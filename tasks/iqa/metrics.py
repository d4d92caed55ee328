"""IQA agreement metrics, as IQA-PyTorch (`pyiqa.metrics.correlation_coefficient`) defines them.

All metrics take predicted scores and ground-truth scores in bob's direction (higher = better
quality; datasets labelled with DMOS are flipped on load) and call scipy directly:
  - `srcc`: `scipy.stats.spearmanr` (ties get average ranks);
  - `krcc`: `scipy.stats.kendalltau` (tau-b, which corrects for ties);
  - `plcc`: `scipy.stats.pearsonr` on the raw predictions (no fit: what pyiqa's training configs and
    benchmark tables report);
  - `plcc_logistic4`: `pearsonr` after mapping the predictions through the VQEG 4-parameter logistic
    f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2, fitted to the targets with
    `scipy.optimize.curve_fit` from pyiqa's initial values (max y, min y, mean x, std x / 4).
A logistic fit that cannot be made makes `plcc_logistic4` NaN and says why in the returned `fit`
record; it never falls back to another number. It cannot be made when the predictions or targets
are constant, when there are fewer scores than the logistic's 4 parameters (`MIN_FIT_POINTS`; scipy
refuses such a fit), when it does not converge within `MAX_FIT_EVALUATIONS` function evaluations,
or when the fitted curve is flat. The budget is 10,000 evaluations; IQA-PyTorch calls `curve_fit`
with scipy's default, 200 × (4 + 1) = 1,000 for this 4-parameter model, and raises where bob's
larger budget still converges, so bob reports a number on some score sets where pyiqa reports none
(never a different number where both converge).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG's monotonic 4-parameter logistic; |b4| keeps it increasing in x when b1 > b2."""
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4))) + b2


def logistic4_init(x: np.ndarray, y: np.ndarray) -> list[float]:
    """pyiqa's starting point for the fit."""
    return [float(np.max(y)), float(np.min(y)), float(np.mean(x)), float(np.std(x) / 4.0)]


# Fewer points than parameters: scipy's least squares refuses the fit (it raises TypeError).
MIN_FIT_POINTS = 4
# bob's evaluation budget for the fit (scipy's default for 4 parameters, which pyiqa uses, is 1,000).
MAX_FIT_EVALUATIONS = 10_000


def fit_logistic4(x: np.ndarray, y: np.ndarray, maxfev: int = MAX_FIT_EVALUATIONS) -> np.ndarray:
    """The fitted parameters (b1, b2, b3, b4) mapping predictions `x` onto targets `y`."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # exp overflow while exploring is harmless
        warnings.simplefilter("ignore", OptimizeWarning)  # the covariance, which bob does not use
        params, _ = curve_fit(logistic4, x, y, p0=logistic4_init(x, y), maxfev=maxfev)
    return params


def _check(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(target, dtype=np.float64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"{len(pred)} predictions for {len(target)} targets")
    if len(pred) < 3:
        raise ValueError(f"IQA correlations need at least 3 samples, got {len(pred)}")
    if not (np.isfinite(pred).all() and np.isfinite(target).all()):
        raise ValueError("IQA correlations need finite predictions and targets")
    return pred, target


def correlations(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """SRCC, KRCC and PLCC (no fit); NaN where an input is constant (correlation undefined)."""
    pred, target = _check(pred, target)
    if np.ptp(pred) == 0 or np.ptp(target) == 0:
        return {"srcc": float("nan"), "krcc": float("nan"), "plcc": float("nan")}
    return {
        "srcc": float(stats.spearmanr(pred, target).statistic),
        "krcc": float(stats.kendalltau(pred, target).statistic),
        "plcc": float(stats.pearsonr(pred, target).statistic),
    }


def plcc_after_logistic4(pred: np.ndarray, target: np.ndarray) -> tuple[float, dict[str, Any]]:
    """PLCC of the logistic-mapped predictions, and a record of the fit (parameters or failure)."""
    pred, target = _check(pred, target)
    if np.ptp(pred) == 0 or np.ptp(target) == 0:
        return float("nan"), {"converged": False, "error": "constant predictions or targets"}
    if len(pred) < MIN_FIT_POINTS:
        reason = f"{len(pred)} scores: the 4-parameter logistic needs at least {MIN_FIT_POINTS} to be fitted"
        return float("nan"), {"converged": False, "error": reason}
    try:
        params = fit_logistic4(pred, target)
    except RuntimeError as err:  # curve_fit's "optimal parameters not found" within the budget
        return float("nan"), {"converged": False, "error": str(err), "max_evaluations": MAX_FIT_EVALUATIONS}
    mapped = logistic4(pred, *params)
    if np.ptp(mapped) == 0 or not np.isfinite(mapped).all():
        return float("nan"), {"converged": False, "error": "the fitted logistic is flat on these scores"}
    plcc = float(stats.pearsonr(mapped, target).statistic)
    return plcc, {"converged": True, "params": [float(p) for p in params]}


def iqa_metrics(pred: np.ndarray, target: np.ndarray) -> tuple[dict[str, float], dict[str, Any]]:
    """All four metrics, plus the logistic-fit record for the protocol."""
    metrics = correlations(pred, target)
    metrics["plcc_logistic4"], fit = plcc_after_logistic4(pred, target)
    return metrics, fit


def within_group_srcc(pred: np.ndarray, target: np.ndarray, groups: np.ndarray) -> dict[int, float]:
    """SRCC inside each group (e.g. distortion type) that has at least 3 samples and varying targets."""
    pred, target, groups = np.asarray(pred), np.asarray(target), np.asarray(groups)
    out: dict[int, float] = {}
    for g in np.unique(groups):
        mask = groups == g
        if mask.sum() >= 3 and np.ptp(target[mask]) > 0 and np.ptp(pred[mask]) > 0:
            out[int(g)] = float(stats.spearmanr(pred[mask], target[mask]).statistic)
    return out
