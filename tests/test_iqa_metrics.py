"""IQA metrics against their definitions and scipy, the logistic fit, and the content-disjoint split."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bob.tasks.iqa.data import content_partition
from bob.tasks.iqa.metrics import (
    correlations,
    fit_logistic4,
    iqa_metrics,
    logistic4,
    logistic4_init,
    plcc_after_logistic4,
    within_group_srcc,
)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b from its definition: (C - D) / sqrt((n0 - n1)(n0 - n2))."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    return (concordant - discordant) / np.sqrt(
        (concordant + discordant + ties_x) * (concordant + discordant + ties_y)
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_correlations_match_definitions_and_scipy(seed, ties):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    if ties:  # few distinct values on both sides: many ties
        target = rng.integers(0, 5, n).astype(float)
        pred = target + rng.integers(-2, 3, n)
    else:
        target = rng.normal(size=n)
        pred = target + rng.normal(scale=1.5, size=n)
    got = correlations(pred, target)
    ranks_p = pd.Series(pred).rank(method="average").to_numpy()
    ranks_t = pd.Series(target).rank(method="average").to_numpy()
    assert got["srcc"] == pytest.approx(_pearson(ranks_p, ranks_t), abs=1e-12)
    assert got["plcc"] == pytest.approx(_pearson(pred, target), abs=1e-12)
    assert got["krcc"] == pytest.approx(_tau_b(pred, target), abs=1e-12)
    assert got["srcc"] == pytest.approx(stats.spearmanr(pred, target).statistic, abs=1e-12)
    assert got["krcc"] == pytest.approx(stats.kendalltau(pred, target).statistic, abs=1e-12)
    assert got["plcc"] == pytest.approx(stats.pearsonr(pred, target).statistic, abs=1e-12)


def test_hand_built_case():
    pred = np.array([1.0, 2.0, 3.0, 4.0])
    target = np.array([10.0, 20.0, 40.0, 30.0])
    got = correlations(pred, target)
    assert got["srcc"] == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert got["krcc"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pairs
    # A monotone but non-linear map leaves the rank metrics at 1 and lowers PLCC.
    bent = correlations(np.exp(3 * pred), pred)
    assert bent["srcc"] == pytest.approx(1.0) and bent["krcc"] == pytest.approx(1.0) and bent["plcc"] < 0.95


def test_logistic_fit_recovers_a_known_logistic():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, 400)
    truth = (4.5, 1.2, 0.1, 0.15)
    y = logistic4(x, *truth) + rng.normal(scale=0.02, size=x.shape)
    params = fit_logistic4(x, y)
    assert params[:3] == pytest.approx(truth[:3], abs=0.03)
    assert abs(params[3]) == pytest.approx(truth[3], abs=0.01)
    fitted, record = plcc_after_logistic4(x, y)
    assert record["converged"] and fitted > 0.99
    assert fitted > stats.pearsonr(x, y).statistic + 0.03  # the fit linearises the sigmoid
    # The fitted PLCC is pearsonr of the mapped scores, nothing else.
    assert fitted == pytest.approx(stats.pearsonr(logistic4(x, *record["params"]), y).statistic)


def test_pyiqa_initial_values():
    x, y = np.array([0.0, 1.0, 2.0, 3.0]), np.array([5.0, 1.0, 2.0, 9.0])
    assert logistic4_init(x, y) == pytest.approx([9.0, 1.0, 1.5, np.std(x) / 4])


def test_logistic_is_increasing_whatever_the_sign_of_b4():
    x = np.linspace(-1, 1, 11)
    assert np.array_equal(logistic4(x, 3, 1, 0, 0.2), logistic4(x, 3, 1, 0, -0.2))
    assert np.all(np.diff(logistic4(x, 3, 1, 0, -0.2)) > 0)


def test_constant_predictions_are_nan_not_a_number_made_up():
    metrics, fit = iqa_metrics(np.ones(10), np.arange(10.0))
    assert all(np.isnan(v) for v in metrics.values())
    assert fit["converged"] is False and "constant" in fit["error"]


def test_bad_metric_inputs():
    with pytest.raises(ValueError, match="3 predictions for 4"):
        correlations(np.arange(3.0), np.arange(4.0))
    with pytest.raises(ValueError, match="finite"):
        correlations(np.array([1.0, np.nan, 2.0]), np.arange(3.0))


def test_within_group_srcc_skips_tiny_and_flat_groups():
    pred = np.array([1, 2, 3, 4, 5, 6, 1, 2], float)
    target = np.array([1, 2, 3, 6, 5, 4, 7, 7], float)
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    assert within_group_srcc(pred, target, groups) == {0: pytest.approx(1.0), 1: pytest.approx(-1.0)}


def test_content_partition_is_disjoint_seeded_and_sized():
    content = np.repeat(np.arange(25), 7)
    train, test = content_partition(content, 0.2, seed=0)
    assert len(np.unique(content[test])) == 5
    assert not set(content[train]) & set(content[test])
    assert sorted(np.concatenate([train, test])) == list(range(len(content)))
    again = content_partition(content, 0.2, seed=0)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(content_partition(content, 0.2, seed=1)[1], test)
