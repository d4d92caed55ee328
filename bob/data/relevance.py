"""Ground truth of retrieval datasets: which database items each query should find, and which to ignore.

A dataset of task type "retrieval" has two splits, `query` and `database`. Its `query` split carries
`judgements` (a `RelevanceJudgements`) when relevance is more than "same label" — the revisited
Oxford/Paris sets list easy, hard and junk images per query. Without `judgements`, a query's relevant
items are the database items that share its label (instance id, copy group).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bob.errors import UsageError


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
