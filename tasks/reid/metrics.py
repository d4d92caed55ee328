"""Re-ID evaluation: mAP and CMC rank-k, torchreid's `eval_market1501` vectorised (numpy; no torch).

For each query the gallery is sorted by ascending distance (**ties broken by the lower gallery index**: a
stable sort; torchreid's unstable `np.argsort` leaves their order unspecified). Then, as torchreid and
the official Market-1501 code do:

- gallery items with the query's person id **and** camera are removed from the ranking (they are the
  same track, not a re-identification); the items behind them move up;
- a query left without any correct match is **skipped** (left out of every mean) and counted;
- AP = mean over the correct matches of the precision at their rank (the number of correct matches up
  to and including it, divided by that rank);
- CMC rank-k = share of the valid queries whose first correct match is within the top k (torchreid's
  `cmc[k - 1]`; a gallery shorter than k counts every valid query as found).

Junk images (Market's person id -1) never reach this code: the loader drops them, which is the same as
removing them from every ranking. Distractors (person id 0) are ordinary negatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bob.progress import Progress

DEFAULT_RANKS = (1, 5, 10)
QUERY_CHUNK = 256  # queries ranked per block: bounds memory at QUERY_CHUNK × gallery entries


@dataclass
class ReidScores:
    """Per valid query: AP and the 0-based rank of the first correct match; plus the skipped count."""

    ap: list[np.ndarray] = field(default_factory=list)
    first_hit: list[np.ndarray] = field(default_factory=list)
    skipped: int = 0

    def add_block(
        self,
        distmat: np.ndarray,
        q_pids: np.ndarray,
        g_pids: np.ndarray,
        q_camids: np.ndarray,
        g_camids: np.ndarray,
    ) -> None:
        """Score a [Q, G] block of query-to-gallery distances (see the module docstring)."""
        order = np.argsort(distmat, axis=1, kind="stable")
        matches = g_pids[order] == q_pids[:, None]
        keep = ~(matches & (g_camids[order] == q_camids[:, None]))
        hits = matches & keep
        rank = np.cumsum(keep, axis=1) - 1  # 0-based rank of each kept item once the removed are gone
        num_rel = hits.sum(axis=1)
        valid = num_rel > 0
        self.skipped += int(np.count_nonzero(~valid))
        hits, rank, num_rel = hits[valid], rank[valid], num_rel[valid]
        precision = np.cumsum(hits, axis=1) / (np.maximum(rank, 0) + 1.0)  # rank -1: removed, not a hit
        self.ap.append(np.where(hits, precision, 0.0).sum(axis=1) / num_rel)
        self.first_hit.append(rank[np.arange(len(rank)), hits.argmax(axis=1)])

    @property
    def num_valid(self) -> int:
        return int(sum(len(a) for a in self.ap))

    def summary(self, ranks: Sequence[int] = DEFAULT_RANKS) -> dict[str, float]:
        """{"map", "rank1", "rank5", ...} over the valid queries."""
        if self.num_valid == 0:
            raise ValueError(
                "no query has a correct match in the gallery from another camera; nothing to average"
            )
        ap, first = np.concatenate(self.ap), np.concatenate(self.first_hit)
        out = {"map": float(ap.mean())}
        for k in ranks:
            out[f"rank{k}"] = float(np.mean(first < k))
        return out


def cosine_distance(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """1 − cosine similarity, i.e. 1 − q·g of L2-normalised rows (torchreid's `cosine_distance`)."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    return 1.0 - q @ g.T


def euclidean_distance(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of the raw rows (torchreid's `euclidean_squared_distance`)."""
    q2 = np.sum(queries.astype(np.float64) ** 2, axis=1, keepdims=True)
    g2 = np.sum(gallery.astype(np.float64) ** 2, axis=1)
    return q2 + g2[None, :] - 2.0 * queries.astype(np.float64) @ gallery.astype(np.float64).T


DISTANCES = {"cosine": cosine_distance, "euclidean": euclidean_distance}


def evaluate_reid(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    distance: str = "cosine",
    progress: Progress | None = None,
) -> ReidScores:
    """Distances and scores block by block over the queries; `progress` (optional) advances per query."""
    measure = DISTANCES[distance]
    scores = ReidScores()
    for start in range(0, len(q_feats), QUERY_CHUNK):
        stop = start + QUERY_CHUNK
        block = measure(q_feats[start:stop], g_feats)
        scores.add_block(block, q_pids[start:stop], g_pids, q_camids[start:stop], g_camids)
        if progress is not None:
            progress.advance(len(block))
    return scores


def eval_market1501(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    ranks: Sequence[int] = DEFAULT_RANKS,
) -> tuple[dict[str, float], int]:
    """(metrics, skipped queries) of a full [Q, G] distance matrix in one call."""
    scores = ReidScores()
    scores.add_block(
        np.asarray(distmat),
        np.asarray(q_pids),
        np.asarray(g_pids),
        np.asarray(q_camids),
        np.asarray(g_camids),
    )
    return scores.summary(ranks), scores.skipped
