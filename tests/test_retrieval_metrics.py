"""Retrieval metrics: AP against scikit-learn, the revisited-Oxford conventions with junk, MRR / P@k / R@k
by hand, tie-breaking, and the class-as-relevance query/database split."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from bob.data.relevance import RelevanceJudgements, same_label_judgements
from bob.errors import UsageError
from bob.tasks.retrieval.metrics import (
    QueryTruth,
    RetrievalScorer,
    average_precision,
    query_metrics,
    rank_database,
    retrieval_metrics,
)
from bob.tasks.retrieval.queries import class_query_split


def _scores_for_order(order: list[int]) -> np.ndarray:
    """Scores that rank database items in `order` (first = highest score)."""
    scores = np.empty(len(order))
    scores[order] = np.linspace(1.0, 0.0, len(order))
    return scores


def _revisitop_ap(order: np.ndarray, positives, junk) -> float:
    """The revisited-Oxford recipe, step by step: shift hit ranks down past junk, then trapezoids."""
    pos = [r for r, item in enumerate(order) if item in set(positives)]
    junk_ranks = [r for r, item in enumerate(order) if item in set(junk)]
    shifted = [r - sum(1 for jr in junk_ranks if jr < r) for r in pos]
    ap = 0.0
    for j, r in enumerate(shifted):
        p0 = 1.0 if r == 0 else j / r
        p1 = (j + 1) / (r + 1)
        ap += (p0 + p1) / 2 / len(positives)
    return ap


def test_standard_ap_by_hand():
    # relevant at 1-based ranks 1, 3 and 6: AP = (1/1 + 2/3 + 3/6) / 3
    scores = _scores_for_order([0, 1, 2, 3, 4, 5])
    truth = QueryTruth(np.array([0, 2, 5]))
    out = query_metrics(rank_database(scores), truth)
    assert out["ap"] == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    assert out["ap"] == pytest.approx(average_precision_score([1, 0, 1, 0, 0, 1], scores))


@pytest.mark.parametrize("seed", range(25))
def test_standard_ap_matches_sklearn_on_random_queries(seed):
    rng = np.random.default_rng(seed)
    n_db = int(rng.integers(2, 300))
    scores = rng.normal(size=(4, n_db))  # continuous: no ties
    truths, y_true = [], []
    for _ in range(4):
        relevant = rng.random(n_db) < rng.uniform(0.01, 0.5)
        relevant[rng.integers(n_db)] = True
        truths.append(QueryTruth(np.flatnonzero(relevant)))
        y_true.append(relevant)
    scorer = RetrievalScorer(convention="standard")
    scorer.add(scores, truths)
    expected = [average_precision_score(y, s) for y, s in zip(y_true, scores, strict=True)]
    np.testing.assert_allclose(scorer.per_query_ap, expected, rtol=1e-12)
    assert scorer.summary()["map"] == pytest.approx(np.mean(expected))


def test_medium_protocol_ap_with_junk_by_hand():
    # database ranked 0..5; relevant {1, 4}; junk {0, 3}. Junk removed: ranking 1, 2, 4, 5, so the
    # relevant items sit at 0-based ranks 0 and 2.
    scores = _scores_for_order([0, 1, 2, 3, 4, 5])
    truth = QueryTruth(np.array([1, 4]), junk=np.array([0, 3]))
    revisitop = query_metrics(rank_database(scores), truth, convention="revisitop")
    # trapezoids: rank 0 -> (1 + 1/1)/2 · 1/2 ; rank 2 -> (1/2 + 2/3)/2 · 1/2
    assert revisitop["ap"] == pytest.approx(0.5 + (1 / 2 + 2 / 3) / 4)  # 0.791666…
    standard = query_metrics(rank_database(scores), truth, convention="standard")
    assert standard["ap"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    # without the junk list, the same ranking is worse: hits at ranks 1 and 4
    no_junk = query_metrics(rank_database(scores), QueryTruth(np.array([1, 4])))
    assert no_junk["ap"] == pytest.approx((1 / 2 + 2 / 5) / 2)
    assert revisitop["rr"] == 1.0 and no_junk["rr"] == 0.5


@pytest.mark.parametrize("seed", range(10))
def test_revisitop_ap_matches_the_step_by_step_recipe(seed):
    rng = np.random.default_rng(seed)
    n_db = int(rng.integers(5, 200))
    scores = rng.normal(size=n_db)
    items = rng.permutation(n_db)
    n_pos = int(rng.integers(1, max(2, n_db // 3)))
    positives, junk = items[:n_pos], items[n_pos : n_pos + int(rng.integers(0, n_db - n_pos + 1))]
    order = rank_database(scores)
    got = query_metrics(order, QueryTruth(positives, junk), convention="revisitop")["ap"]
    assert got == pytest.approx(_revisitop_ap(order, positives, junk), rel=1e-12)


def test_mrr_precision_recall_by_hand():
    # 12 database items ranked 0..11; relevant at 0-based ranks 1, 4, 5 and 11
    scores = _scores_for_order(list(range(12)))
    truth = QueryTruth(np.array([1, 4, 5, 11]))
    out = query_metrics(rank_database(scores), truth, ks=(1, 5, 10))
    assert out["rr"] == 0.5
    assert (out["precision_at_1"], out["precision_at_5"], out["precision_at_10"]) == (0.0, 2 / 5, 3 / 10)
    assert (out["recall_at_1"], out["recall_at_5"], out["recall_at_10"]) == (0.0, 2 / 4, 3 / 4)


def test_revisitop_precision_cuts_at_the_last_hit():
    # relevant at 0-based ranks 0 and 2 of 10: standard P@5 = 2/5; revisitop uses k' = min(5, 3) = 3
    scores = _scores_for_order(list(range(10)))
    truth = QueryTruth(np.array([0, 2]))
    assert query_metrics(rank_database(scores), truth, ks=(5,))["precision_at_5"] == pytest.approx(2 / 5)
    revisitop = query_metrics(rank_database(scores), truth, ks=(5,), convention="revisitop")
    assert revisitop["precision_at_5"] == pytest.approx(2 / 3)
    assert revisitop["recall_at_5"] == 1.0


def test_ties_are_broken_by_the_lower_database_index():
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    np.testing.assert_array_equal(rank_database(scores), [1, 3, 0, 2, 4])
    np.testing.assert_array_equal(rank_database(np.zeros(4)), [0, 1, 2, 3])
    # so a relevant item tied with an irrelevant one scores as if ranked after it when its index is higher
    assert query_metrics(rank_database(scores), QueryTruth(np.array([1])))["ap"] == 1.0
    assert query_metrics(rank_database(scores), QueryTruth(np.array([3])))["ap"] == 0.5
    # and the same scores always give the same metrics
    truths = [QueryTruth(np.array([2, 3]))] * 2
    assert retrieval_metrics(np.stack([scores, scores]), truths) == retrieval_metrics(
        np.stack([scores, scores]), truths
    )


def test_queries_without_relevant_items_are_skipped_and_counted():
    scorer = RetrievalScorer()
    scorer.add(np.array([[0.9, 0.1], [0.2, 0.8]]), [QueryTruth(np.array([0])), QueryTruth(np.array([], int))])
    assert scorer.skipped == 1 and scorer.summary()["map"] == 1.0
    empty = RetrievalScorer()
    empty.add(np.array([[0.1, 0.2]]), [QueryTruth(np.array([], int))])
    with pytest.raises(ValueError, match="no query"):
        empty.summary()
    with pytest.raises(ValueError, match="convention"):
        average_precision(np.array([0]), 1, "interpolated")


def test_class_query_split_takes_the_first_fifth_of_sorted_names():
    labels = np.array([0] * 10 + [1] * 4 + [2] * 7)
    keys = [f"c{label}/{name:02d}.jpg" for label, name in zip(labels, range(len(labels)), strict=True)]
    keys[0], keys[9] = keys[9], keys[0]  # the name order, not the index order, decides
    queries, database = class_query_split(labels, keys, 0.2)
    # class 0: floor(10 · 0.2) = 2 queries, the two smallest names (indices 9 and 1)
    # class 1: floor(0.8) = 0 queries, all four in the database; class 2: floor(1.4) = 1 query
    np.testing.assert_array_equal(queries, [9, 1, 14])
    assert sorted(database.tolist()) == sorted(set(range(21)) - {9, 1, 14})
    capped_q, capped_db = class_query_split(labels, keys, 0.2, max_per_class=5)
    np.testing.assert_array_equal(capped_q, [9, 14])  # floor(5 · 0.2) = 1 per class, class 1 has 4
    assert len(capped_db) == 4 + 4 + 4


def test_same_label_judgements_and_broken_references():
    judgements = same_label_judgements(np.array([1, 0, 7]), np.array([0, 1, 1, 0]))
    assert [p.tolist() for p in judgements.positives] == [[1, 2], [0, 3], []]
    judgements.check("toy", 3, 4)
    with pytest.raises(UsageError, match="lists 3 queries"):
        judgements.check("toy", 2, 4)
    bad = RelevanceJudgements((np.array([5]),), (np.array([], int),), "x")
    with pytest.raises(UsageError, match=r"outside 0\.\.3"):
        bad.check("toy", 1, 4)
    nothing = RelevanceJudgements((np.array([], int),), (np.array([], int),), "x")
    with pytest.raises(UsageError, match="no query has a relevant"):
        nothing.check("toy", 1, 4)
    overlap = RelevanceJudgements((np.array([1]),), (np.array([1]),), "x")
    with pytest.raises(UsageError, match="relevant and as junk"):
        overlap.check("toy", 1, 4)
