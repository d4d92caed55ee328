"""Ranking metrics for image retrieval: mAP, MRR, precision@k and recall@k (numpy; no torch).

One query at a time: the database is ranked by descending score, **ties broken by the lower
database index first** (a stable sort of the negated scores), so equal scores never make a run
non-deterministic. Junk items (revisited Oxford/Paris) are **removed from the ranking** before any
metric is computed: they neither help nor hurt, and the items behind them move up.

Two conventions, recorded in every result:

- `standard`: non-interpolated AP = mean over the relevant items of the precision at their rank
  (equal to scikit-learn's `average_precision_score` on untied scores); P@k = hits in the top k / k.
- `revisitop`: the revisited Oxford/Paris evaluation code (`compute_map`) exactly: AP is the area
  under the precision-recall curve by trapezoids, where each relevant item at 0-based rank r (the
  j-th, 0-based) adds (j / r + (j + 1) / (r + 1)) / (2 · n_relevant), with j / r read as 1 when r = 0;
  P@k uses k' = min(k, rank of the last relevant item, 1-based) as the cut-off and divisor.

MRR (1 / rank of the first relevant item) and R@k (hits in the top k / number of relevant items)
read the same in both. A query without any relevant item is left out of every mean (as the
revisited-Oxford code does) and counted in `queries_without_relevant`.

MRR has two rules (`MRR_RULES`): `default` as above (junk removed first, scored queries only), and
`bob`, BoB's `compute_map` (bob-retrieval utils.py): the first relevant rank is taken *before* junk
is removed, and the sum is divided by every query, those without a relevant item adding 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bob.tasks.retrieval import CONVENTIONS

DEFAULT_KS = (1, 5, 10)
MRR_RULES = ("default", "bob")


@dataclass(frozen=True)
class QueryTruth:
    """The ground truth of one query: database indices that are relevant, and those to ignore."""

    positives: np.ndarray
    junk: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def rank_database(scores: np.ndarray) -> np.ndarray:
    """Database indices by descending score, ties by ascending index. `scores`: [D] or [Q, D]."""
    return np.argsort(-np.asarray(scores), axis=-1, kind="stable")


def hit_ranks(ranking: np.ndarray, truth: QueryTruth) -> np.ndarray:
    """0-based ranks of the relevant items once junk is taken out of the ranking, ascending.

    `ranking` is a permutation of the database indices (as `rank_database` returns).
    """
    relevant = np.zeros(len(ranking), dtype=bool)
    relevant[truth.positives] = True
    if len(truth.junk):
        junk = np.zeros(len(ranking), dtype=bool)
        junk[truth.junk] = True
        ranking = ranking[~junk[ranking]]
    return np.flatnonzero(relevant[ranking])


def average_precision(ranks: np.ndarray, n_relevant: int, convention: str = "standard") -> float:
    """AP from the 0-based ranks of the retrieved relevant items (see the module docstring)."""
    if n_relevant <= 0:
        raise ValueError("AP needs at least one relevant item")
    ranks = np.asarray(ranks, dtype=np.float64)
    j = np.arange(len(ranks), dtype=np.float64)
    if convention == "standard":
        return float(np.sum((j + 1) / (ranks + 1)) / n_relevant)
    if convention == "revisitop":
        before = np.divide(j, ranks, out=np.ones_like(j), where=ranks > 0)
        return float(np.sum(before + (j + 1) / (ranks + 1)) / (2.0 * n_relevant))
    raise ValueError(f"unknown AP convention {convention!r}; valid: {', '.join(CONVENTIONS)}")


def precision_at(ranks: np.ndarray, k: int, convention: str = "standard") -> float:
    """Share of relevant items in the top k (revisitop: in the top min(k, last hit rank))."""
    ranks = np.asarray(ranks)
    if convention == "revisitop":
        if len(ranks) == 0:
            return 0.0
        k = min(k, int(ranks.max()) + 1)
    return float(np.count_nonzero(ranks < k) / k)


def query_metrics(
    ranking: np.ndarray,
    truth: QueryTruth,
    ks: Sequence[int] = DEFAULT_KS,
    convention: str = "standard",
    mrr_rule: str = "default",
) -> dict[str, float] | None:
    """All metrics of one ranked query, or None when it has no relevant item."""
    n_relevant = len(truth.positives)
    if n_relevant == 0:
        return None
    ranks = hit_ranks(ranking, truth)
    # BoB's rule reads the first relevant rank with the junk still in the ranking.
    first = hit_ranks(ranking, QueryTruth(truth.positives)) if mrr_rule == "bob" else ranks
    out = {
        "ap": average_precision(ranks, n_relevant, convention),
        "rr": 1.0 / (first[0] + 1) if len(first) else 0.0,
    }
    for k in ks:
        out[f"precision_at_{k}"] = precision_at(ranks, k, convention)
        out[f"recall_at_{k}"] = float(np.count_nonzero(ranks < k) / n_relevant)
    return out


class RetrievalScorer:
    """Accumulates per-query metrics over chunks of queries; `summary()` gives the means."""

    def __init__(
        self, ks: Sequence[int] = DEFAULT_KS, convention: str = "standard", mrr_rule: str = "default"
    ) -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown convention {convention!r}; valid: {', '.join(CONVENTIONS)}")
        if mrr_rule not in MRR_RULES:
            raise ValueError(f"unknown MRR rule {mrr_rule!r}; valid: {', '.join(MRR_RULES)}")
        self.ks = tuple(ks)
        self.convention = convention
        self.mrr_rule = mrr_rule
        self.rows: list[dict[str, float]] = []
        self.skipped = 0

    def add(self, scores: np.ndarray, truths: Sequence[QueryTruth]) -> None:
        """Score a [Q, D] block of query-to-database similarities against the queries' truths."""
        for ranking, truth in zip(rank_database(scores), truths, strict=True):
            row = query_metrics(ranking, truth, self.ks, self.convention, self.mrr_rule)
            if row is None:
                self.skipped += 1
            else:
                self.rows.append(row)

    @property
    def per_query_ap(self) -> np.ndarray:
        return np.array([row["ap"] for row in self.rows])

    def summary(self) -> dict[str, float]:
        if not self.rows:
            raise ValueError("no query has a relevant item in the database; nothing to average")
        keys = self.rows[0].keys()
        means = {key: float(np.mean([row[key] for row in self.rows])) for key in keys}
        out = {"map": means.pop("ap"), "mrr": means.pop("rr"), **means}
        if self.mrr_rule == "bob":  # every query in the divisor, those without a relevant item add 0
            out["mrr"] = float(np.sum([row["rr"] for row in self.rows]) / (len(self.rows) + self.skipped))
        return out


def retrieval_metrics(
    scores: np.ndarray,
    truths: Sequence[QueryTruth],
    ks: Sequence[int] = DEFAULT_KS,
    convention: str = "standard",
    mrr_rule: str = "default",
) -> dict[str, float]:
    """Mean metrics of [Q, D] similarities in one call (small problems and tests)."""
    scorer = RetrievalScorer(ks, convention, mrr_rule)
    scorer.add(scores, truths)
    return scorer.summary()
