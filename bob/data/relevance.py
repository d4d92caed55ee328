"""Ground truth of retrieval datasets: which database items each query should find, and which to ignore.

A dataset of task type "retrieval" has one split, `test`, that holds the queries first and the database
after them (as MTEB keeps queries and corpus in one test split), so one extraction serves both. The
split says where the queries end with `num_queries`, and carries `judgements` (a `RelevanceJudgements`,
indices into the database part) when relevance is more than "same label": the revisited Oxford/Paris
sets list easy, hard and junk images per query. Without `judgements`, a query's relevant items are the
database items that share its label (instance id, copy group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bob.errors import UsageError

if TYPE_CHECKING:
    from bob.data.base import ImageSplit

RETRIEVAL_SPLIT = "test"


@dataclass(frozen=True)
class RelevanceJudgements:
    """Per query: database indices that are relevant (`positives`) and ignored (`junk`)."""

    positives: tuple[np.ndarray, ...]
    junk: tuple[np.ndarray, ...]
    definition: str  # how relevance was defined, recorded in the run's protocol

    def check(self, dataset: str, n_queries: int, n_database: int) -> None:
        """Broken references are a usage error that names the query and what is wrong."""
        if len(self.positives) != n_queries or len(self.junk) != n_queries:
            raise UsageError(
                f"Dataset '{dataset}': the ground truth lists {len(self.positives)} queries but the query "
                f"split has {n_queries} images. The ground-truth file does not belong to these images."
            )
        if not any(len(pos) for pos in self.positives):
            raise UsageError(
                f"Dataset '{dataset}': no query has a relevant database image, so there is nothing to score. "
                "Check that the ground truth belongs to these images."
            )
        for q, (pos, junk) in enumerate(zip(self.positives, self.junk, strict=True)):
            for kind, idx in (("relevant", pos), ("junk", junk)):
                if len(idx) and (idx.min() < 0 or idx.max() >= n_database):
                    raise UsageError(
                        f"Dataset '{dataset}': query {q} names a {kind} database index outside "
                        f"0..{n_database - 1}. The ground-truth file does not match the database images."
                    )
            if np.intersect1d(pos, junk).size:
                raise UsageError(
                    f"Dataset '{dataset}': query {q} lists the same database image as relevant and as junk."
                )


def same_label_judgements(query_labels: np.ndarray, database_labels: np.ndarray) -> RelevanceJudgements:
    """Relevant = database items with the query's label; nothing is junk."""
    by_label: dict[int, np.ndarray] = {}
    for label in np.unique(database_labels):
        by_label[int(label)] = np.flatnonzero(database_labels == label)
    empty = np.zeros(0, dtype=np.int64)
    positives = tuple(by_label.get(int(label), empty) for label in query_labels)
    return RelevanceJudgements(positives, (empty,) * len(positives), "same label (instance or class id)")


def mark_queries(
    split: ImageSplit, num_queries: int, judgements: RelevanceJudgements | None = None
) -> ImageSplit:
    """Declare the first `num_queries` items of `split` the queries (the rest is the database)."""
    if not 0 < num_queries < len(split):
        raise UsageError(
            f"Dataset '{split.dataset}': a retrieval split needs at least one query and one database image, "
            f"got {num_queries} queries among {len(split)} images."
        )
    split.num_queries = num_queries
    split.judgements = judgements
    return split


def query_database_judgements(split: ImageSplit) -> tuple[int, RelevanceJudgements]:
    """(number of queries, checked judgements) of a retrieval split made by `mark_queries`."""
    num_queries = getattr(split, "num_queries", None)
    if num_queries is None:
        raise UsageError(
            f"Dataset '{split.dataset}' is registered as a retrieval set but its loader did not say which "
            "images are queries (bob.data.relevance.mark_queries)."
        )
    labels = split.labels
    judgements = getattr(split, "judgements", None) or same_label_judgements(
        labels[:num_queries], labels[num_queries:]
    )
    judgements.check(split.dataset, num_queries, len(split) - num_queries)
    return num_queries, judgements
