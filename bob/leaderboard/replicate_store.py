"""The bootstrap cache: every run's replicates, kept once computed, so a rebuilt board reads them back.

A run's replicates depend only on its sample file (its sha256), the number of resamples and the seed:
the draws come from the test set's key, which is inside the file. So they are stored under
`<root>/b<resamples>-s<seed>/`: one float64 matrix (a row per file) and `index.json` mapping each
file's sha256 to its row and to what the board checks before trusting a hit without reading the
file: its size and modification time (a file changed since gives a miss and is read and checked
again), the metric it reproduces and the value it gives.

Writes replace the index atomically and point it at a freshly written matrix file, so a reader
never pairs an index with the wrong matrix; two builds writing at once lose at most the other's new
entries, which are recomputed next time. Delete the folder to empty the cache.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VERSION = "v1"


@dataclass(frozen=True)
class Entry:
    """What identifies a sample file on disk and what it gave."""

    sha: str
    size: int
    mtime_ns: int
    metric: str
    value: float


class ReplicateStore:
    def __init__(self, root: Path | None, resamples: int, seed: int) -> None:
        self.folder = None if root is None else root / f"b{resamples}-s{seed}-{VERSION}"
        self.resamples = resamples
        self._index: dict[str, Any] = {}
        self._matrix: np.ndarray | None = None
        self._new: dict[str, tuple[Entry, np.ndarray]] = {}
        if self.folder is not None:
            self._load()

    def _load(self) -> None:
        index_path = self.folder / "index.json"  # type: ignore[operator]
        try:
            index = json.loads(index_path.read_text())
            matrix = np.load(self.folder / index["matrix"], mmap_mode="r", allow_pickle=False)  # type: ignore[operator]
        except (OSError, ValueError, KeyError):
            return  # no cache yet, or a damaged one: everything is recomputed and rewritten
        if matrix.ndim == 2 and matrix.shape[1] == self.resamples:
            self._index, self._matrix = index.get("entries", {}), matrix

    def get(self, entry: Entry) -> np.ndarray | None:
        """The stored replicates of the file `entry` describes, if it is unchanged since they were stored."""
        hit = self._index.get(entry.sha)
        if hit is None or self._matrix is None:
            return None
        row, size, mtime_ns, metric, _value = hit
        if (size, mtime_ns, metric) != (entry.size, entry.mtime_ns, entry.metric) or row >= len(self._matrix):
            return None
        return np.asarray(self._matrix[row], dtype=np.float64)

    def value_of(self, sha: str) -> float:
        return float(self._index[sha][4])

    def put(self, entry: Entry, replicates: np.ndarray) -> None:
        self._new[entry.sha] = (entry, replicates)

    def flush(self) -> None:
        """Write the new entries (with every old one) as a new matrix and index."""
        if self.folder is None or not self._new:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        old = {sha: e for sha, e in self._index.items() if sha not in self._new}
        rows = [np.asarray(self._matrix[e[0]]) for e in old.values()] if self._matrix is not None else []
        entries = {sha: [i, *e[1:]] for i, (sha, e) in enumerate(old.items())}
        for sha, (entry, reps) in self._new.items():
            entries[sha] = [len(rows), entry.size, entry.mtime_ns, entry.metric, entry.value]
            rows.append(np.asarray(reps, dtype=np.float64))
        name = f"replicates-{uuid.uuid4().hex}.npy"
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, np.vstack(rows))
        os.replace(tmp, self.folder / name)
        index_tmp = self.folder / f".index.{uuid.uuid4().hex}.tmp"
        index_tmp.write_text(json.dumps({"matrix": name, "entries": entries}))
        os.replace(index_tmp, self.folder / "index.json")
        for stale in self.folder.glob("replicates-*.npy"):
            if stale.name != name:
                stale.unlink(missing_ok=True)
        self._new.clear()
