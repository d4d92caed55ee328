"""IQA's 4-parameter logistic fit: NaN with the reason whenever it cannot be made, never an exception
(regression: a 3-image test split raised scipy's TypeError and failed the run), and its evaluation
budget, which is larger than IQA-PyTorch's (scipy's default) but gives the same fit where both converge."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

import bob.tasks.iqa.metrics as iqa
from bob.tasks.iqa.metrics import (
    MAX_FIT_EVALUATIONS,
    MIN_FIT_POINTS,
    iqa_metrics,
    logistic4,
    logistic4_init,
    plcc_after_logistic4,
)


def test_three_image_test_split_gives_nan_and_the_reason():
    pred, target = np.array([0.1, 0.5, 0.9]), np.array([1.0, 2.0, 4.0])
    metrics, fit = iqa_metrics(pred, target)
    assert np.isnan(metrics["plcc_logistic4"])
    assert fit["converged"] is False and "needs at least 4" in fit["error"]
    assert metrics["srcc"] == pytest.approx(1.0)  # the rank and linear correlations still exist
    assert np.isfinite(metrics["plcc"])
    assert MIN_FIT_POINTS == 4


def test_four_images_are_enough_to_fit():
    x = np.array([0.0, 0.3, 0.6, 1.0])
    plcc, fit = plcc_after_logistic4(x, x**2 + 0.1 * np.arange(4))
    assert fit["converged"] is True and len(fit["params"]) == 4
    assert np.isfinite(plcc)


def test_a_fit_that_runs_out_of_evaluations_is_nan_with_the_budget(monkeypatch):
    original = iqa.fit_logistic4
    monkeypatch.setattr(iqa, "fit_logistic4", lambda x, y: original(x, y, maxfev=2))
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    plcc, fit = plcc_after_logistic4(x, 3 / (1 + np.exp(-x)) + 0.3 * rng.normal(size=50))
    assert np.isnan(plcc)
    assert fit["converged"] is False and fit["max_evaluations"] == MAX_FIT_EVALUATIONS
    assert "maxfev" in fit["error"] or "evaluations" in fit["error"]


@pytest.mark.parametrize("seed", range(3))
def test_same_fit_as_scipys_default_budget_where_that_converges(seed):
    """IQA-PyTorch calls curve_fit without maxfev (200 x (4 + 1) = 1,000 evaluations)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=80)
    y = 4 / (1 + np.exp(-(x - 0.2) / 0.7)) + 1 + 0.2 * rng.normal(size=80)
    pyiqa_params, _ = curve_fit(logistic4, x, y, p0=logistic4_init(x, y))
    plcc, fit = plcc_after_logistic4(x, y)
    assert fit["converged"] is True
    np.testing.assert_allclose(np.abs(fit["params"]), np.abs(pyiqa_params), rtol=1e-6)
    assert plcc == pytest.approx(np.corrcoef(logistic4(x, *pyiqa_params), y)[0, 1], abs=1e-9)
