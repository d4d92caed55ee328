"""Seeded bootstrap draws of a test set's units, as count matrices, generated once per test set.

`Draws(n_units, key, strata, resamples, seed)` yields [b, n_units] count matrices, chunk by chunk:
row r of the whole sequence says how often each unit is drawn in resample r. The stream depends only
on (seed, the test set's key, its strata, the number of resamples), never on which runs use it, so

- every run on the same test set sees the same resamples: differences between two backbones are
  *paired* (the same images drawn the same number of times), and the z-scores of a resample compare
  all backbones on one and the same resampled test set;
- adding a run to a results dir never changes the draws of the others.

Stratified: with strata (e.g. the shifted sets of an OOD run), units are drawn within each stratum,
so every resample keeps each stratum's size (the metric averages per-stratum scores).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CHUNK_ENTRIES = 1 << 23  # count-matrix entries per chunk (32 MiB of float32)


def _seed_words(seed: int, key: str, chunk: int) -> list[int]:
    return [int(seed), int(key[:15], 16), int(chunk)]


class Draws:
    """The bootstrap count matrices of one test set, in chunks of rows (float32: exact small integers)."""

    def __init__(
        self, n_units: int, key: str, strata: np.ndarray | None, resamples: int, seed: int = 0
    ) -> None:
        self.n_units, self.key, self.resamples, self.seed = n_units, key, resamples, seed
        self.rows_per_chunk = max(1, min(resamples, CHUNK_ENTRIES // max(n_units, 1)))
        if strata is None:
            self.groups = [np.arange(n_units)]
        else:
            _, inverse = np.unique(strata, return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            self.groups = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)
        self._cache: list[np.ndarray] | None = None

    def chunk(self, index: int) -> np.ndarray:
        """Rows [index · rows_per_chunk, …) of the count matrix, always the same for the same inputs:
        each row draws n_units units with replacement (within each stratum), counted with bincount."""
        start = index * self.rows_per_chunk
        rows, n = min(self.rows_per_chunk, self.resamples - start), self.n_units
        rng = np.random.default_rng(_seed_words(self.seed, self.key, index))
        if len(self.groups) == 1:
            picks = rng.integers(0, n, size=(rows, n), dtype=np.int32)
        else:
            picks = np.empty((rows, n), dtype=np.int32)
            col = 0
            for members in self.groups:
                drawn = rng.integers(0, len(members), size=(rows, len(members)), dtype=np.int32)
                picks[:, col : col + len(members)] = members.astype(np.int32)[drawn]
                col += len(members)
        picks += (np.arange(rows, dtype=np.int32) * n)[:, None]  # rows · n ≤ CHUNK_ENTRIES < 2**31
        return np.bincount(picks.ravel(), minlength=rows * n).astype(np.float32).reshape(rows, n)

    @property
    def n_chunks(self) -> int:
        return -(-self.resamples // self.rows_per_chunk)

    def __iter__(self) -> Iterator[np.ndarray]:
        """The chunks in order; kept in memory after the first pass when they fit in one chunk."""
        if self._cache is not None:
            yield from self._cache
            return
        if self.n_chunks == 1:
            self._cache = [self.chunk(0)]
            yield self._cache[0]
            return
        for i in range(self.n_chunks):
            yield self.chunk(i)


def seed_draws(n_seeds: int, resamples: int, seed: int, key: str) -> np.ndarray:
    """[resamples, n_seeds] indices: the seeds (runs) each resample averages, drawn with replacement,
    so a cell's interval also carries its seed-to-seed spread. One seed: always that seed."""
    if n_seeds == 1:
        return np.zeros((resamples, 1), dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(key[:15], 16), 1 << 20])
    return rng.integers(0, n_seeds, size=(resamples, n_seeds))
