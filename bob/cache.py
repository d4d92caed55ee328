"""Content-addressed feature cache: extract once, fit many heads.

Key = sha256 of the canonical JSON of (backbone identity incl. weights fingerprint, transform,
feature output, dataset split + fingerprint, dtype, cache format). An entry is a directory
`<root>/<key[:2]>/<key>/` holding `features.npy`, `labels.npy`, `meta.json` and, written last,
`COMPLETE` with the sha256 of every file. Entries are built in a temp directory and renamed into
place, so a reader sees a whole entry or none; a present entry whose files fail their checksums is
reported, never read, and never deleted behind the user's back.

A process that misses a key builds it under the key's extraction lock (`claim`,
`<root>/<key[:2]>/.<key>.lock`), so concurrent sweeps extract each feature set once. A write the
disk refuses is a one-line StorageError naming the entry and the cause, with the temp dir removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bob.errors import CacheCorruptError
from bob.locks import FileLock
from bob.preflight import storage_error
from bob.weights import bob_cache_dir

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
T = TypeVar("T")
_FILES = ("features.npy", "labels.npy", "meta.json")


# The extraction lock's holder touches it this often; a holder silent for six beats (a dead node)
# loses it to the next process that needs the features.
EXTRACTION_HEARTBEAT_S = 10.0


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(spec: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"format": CACHE_FORMAT, **spec}).encode()).hexdigest()


def default_cache_root() -> Path:
    return bob_cache_dir() / "features"


@dataclass
class FeatureSet:
    """Features of one dataset split, row-aligned with its labels."""

    features: np.ndarray  # [N, D] float32
    labels: np.ndarray  # [N] int64
    key: str
    cache_hit: bool
    meta: dict[str, Any]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FeatureCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> FeatureSet | None:
        """The cached entry, or None on a miss. Raises CacheCorruptError for a damaged entry."""
        entry = self.entry_dir(key)
        if not entry.exists():
            return None
        try:
            return self._read(entry, key)
        except CacheCorruptError:
            if not entry.exists():  # pruned (`bob cache prune`) while we read it: a miss, not damage
                return None
            raise

    def _read(self, entry: Path, key: str) -> FeatureSet:
        marker = entry / "COMPLETE"
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, ValueError) as err:
            raise self._corrupt(entry, f"its completion marker is missing or unreadable ({err})") from err
        for name in _FILES:
            path = entry / name
            if not path.is_file():
                raise self._corrupt(entry, f"{name} is missing")
            if sha256_file(path) != recorded.get(name):
                raise self._corrupt(entry, f"{name} does not match the checksum recorded when it was written")
        try:
            features = np.load(entry / "features.npy", allow_pickle=False)
            labels = np.load(entry / "labels.npy", allow_pickle=False)
            meta = json.loads((entry / "meta.json").read_text())
        except (OSError, ValueError) as err:
            raise self._corrupt(entry, f"it cannot be read ({err})") from err
        return FeatureSet(features, labels, key, True, meta)

    def put(self, key: str, features: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> FeatureSet:
        """Write an entry atomically. If another process wrote the same key first, theirs is kept."""
        final = self.entry_dir(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{key[:12]}-"))
        except OSError as err:
            raise storage_error("feature cache entry", final, err) from err
        try:
            np.save(
                tmp / "features.npy", np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False
            )
            np.save(tmp / "labels.npy", np.ascontiguousarray(labels, dtype=np.int64), allow_pickle=False)
            meta = {**meta, "key": key, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
            sums = {name: sha256_file(tmp / name) for name in _FILES}
            (tmp / "COMPLETE").write_text(json.dumps(sums))
            for name in (*_FILES, "COMPLETE"):
                with open(tmp / name, "rb") as f:
                    os.fsync(f.fileno())
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # lost a race to an identical entry
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
            if isinstance(err, OSError):
                raise storage_error("feature cache entry", final, err) from err
            raise
        return FeatureSet(
            np.asarray(features, dtype=np.float32), np.asarray(labels, dtype=np.int64), key, False, meta
        )

    @contextlib.contextmanager
    def claim(self, key: str) -> Iterator[FeatureSet | None]:
        """The entry of `key`, or the right to build it: yields the entry when it exists (after
        waiting for another process that is building it right now), else None while this process
        holds the key's extraction lock, until the block ends.

        Two sweeps (or two workers) that miss the same key at once thus extract it once: the second
        waits for the first one's entry and reads it. A holder that dies leaves a stale lock (its pid
        is gone, or its heartbeat stopped) that the waiter breaks before extracting itself."""
        lock = self.root / key[:2] / f".{key}.lock"
        with claim_entry(lambda: self.get(key), lock, "feature cache lock", f"features {key[:12]}") as hit:
            yield hit

    @staticmethod
    def _corrupt(entry: Path, why: str) -> CacheCorruptError:
        return CacheCorruptError(
            f"Feature cache entry {entry} is corrupt: {why}. bob did not use it and left it in place for "
            f"inspection. Delete that directory (rm -r '{entry}') and run again to re-extract the features."
        )


@contextlib.contextmanager
def claim_entry(
    get: Callable[[], T | None], lock_path: Path, lock_label: str, what: str
) -> Iterator[T | None]:
    """`get()`'s entry, or the right to build it while holding the lock file `lock_path` (see
    `FeatureCache.claim`); shared by the feature cache and the geometry cache. `lock_label` names
    the lock in a refused-write error, `what` the entry in the log line of a waiter."""
    hit = get()
    if hit is not None:
        yield hit
        return
    lock = FileLock(lock_path, heartbeat=EXTRACTION_HEARTBEAT_S)
    while True:
        try:
            acquired = lock.acquire()
        except OSError as err:
            raise storage_error(lock_label, lock.path, err) from err
        if acquired:
            try:
                yield get()  # it may have been written between the miss and the lock
            finally:
                lock.release()
            return
        lock.wait_free(on_wait=lambda owner: _log_wait(what, owner))
        hit = get()
        if hit is not None:
            yield hit
            return
        # The holder released the lock without writing the entry (its run failed): take it.


def _log_wait(what: str, owner: dict[str, Any] | None) -> None:
    who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
    log.info("%s are being built by %s; waiting to read them", what, who)
