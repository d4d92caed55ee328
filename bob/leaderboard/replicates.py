"""Bootstrap replicates of runs and cells from the runs' per-sample files (numpy; no torch).

- `load_run_samples`: each ok run's sample file, found beside its result and checked against the
  sha256 the result recorded, against the run's main metric and against the reported value; a run
  without a usable file gets the reason instead, in words the board prints.
- `run_replicates`: B resampled values of every run's metric. Runs on the same test set (same units
  key) share one stream of draws (bob.samples.draws): generated once per test set, chunk by chunk,
  and applied to all of its runs; metrics that are weighted means (top-1, mAP over queries, ...)
  of all those runs come out of one matrix product per chunk. Every run's replicates are then kept
  in the bootstrap cache (replicate_store.py) and read back while its file is unchanged.
- `cell_replicates`: a board cell's replicates in score units: seeds resampled with replacement and
  averaged, and with `--best-of` the best candidate taken in every replicate (the selection is part
  of what is resampled).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bob.leaderboard.replicate_store import Entry, ReplicateStore
from bob.samples import PROTOCOL_KEY, SamplesError, SampleSet, read_samples, samples_path
from bob.samples.draws import Draws, seed_draws

REL_TOL = 1e-9
RECORD_COLUMN = "samples_record"  # the long table's copy of `protocol.samples`, when the loader keeps one
# Threads for reading files and for the metrics resampled one run at a time (COCO AP, ...): the
# heavy work is in zlib, hashlib and numpy, which release the GIL. Results do not depend on it.
WORKERS = max(
    1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
)
REASONS = {
    "absent": "no per-sample file recorded (a result from before bob stored them; re-run to get one)",
    "off": "per-sample file turned off (--no-samples)",
}


@dataclass
class RunSamples:
    """`sets`: run id → its sample set (files read in this build); `cached`: run id → replicates read
    back from the bootstrap cache (file unchanged since); `status`: run id → "ok" or why not."""

    sets: dict[str, SampleSet] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)
    cached: dict[str, np.ndarray] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)


def _recorded(results_dir: Path, runs: pd.DataFrame) -> list[Any]:
    """Each run's `protocol.samples` record: from the loaded table when it carries one (column
    `samples_record`), else read from the result files."""
    if RECORD_COLUMN in runs.columns:
        return list(runs[RECORD_COLUMN])
    out = []
    for rel in runs["path"]:
        with open(results_dir / rel, "rb") as fh:
            protocol = json.loads(fh.read()).get("protocol") or {}
        out.append(protocol.get(PROTOCOL_KEY))
    return out


def _agrees(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)


def _check(record: Any) -> str:
    """Why the protocol record rules the run out before its file is opened ("" when it does not)."""
    if not isinstance(record, dict):
        return REASONS["absent"]
    if record.get("derived"):  # a preset's extra metric of a run (presets.py): not what its file holds
        return str(record["derived"])
    if not record.get("stored", True):
        return REASONS["off"]
    if record.get("check"):
        return f"per-sample file flagged when written: {record['check']}"
    return ""


def _read(path: Path, sha: str, metric: str, value: float) -> tuple[SampleSet | None, str]:
    try:
        samples = read_samples(path, sha)
    except SamplesError as err:
        return None, f"per-sample file unusable: {err}"
    if samples.metric != metric:
        return None, f"per-sample file is for {samples.metric}, the main metric is {metric}"
    recomputed = samples.value()
    if not _agrees(recomputed, value):
        return None, f"per-sample file gives {metric} = {recomputed:.6g}, the result {value:.6g}"
    return samples, "ok"


def load_run_samples(
    runs: pd.DataFrame, results_dir: Path, store: ReplicateStore | None = None
) -> RunSamples:
    """The checked sample set of every run in `runs` (ok runs of the long table), its replicates
    from `store` when its file is unchanged since they were stored, or the reason it has none."""
    out = RunSamples()
    columns = zip(
        runs["id"],
        runs["path"],
        runs["main_metric"],
        runs["value"],
        _recorded(results_dir, runs),
        strict=True,
    )
    to_read: list[tuple[str, Path, Entry]] = []
    for run_id, rel, metric, value, record in columns:
        reason = _check(record)
        if reason:
            out.status[run_id] = reason
            continue
        path = samples_path(results_dir / rel)
        try:
            info = path.stat()
        except OSError:
            out.status[run_id] = f"per-sample file unusable: {path} is missing."
            continue
        entry = Entry(
            str(record.get("sha256", "")), info.st_size, info.st_mtime_ns, str(metric), float(value)
        )
        hit = store.get(entry) if store is not None else None
        if hit is not None and _agrees(store.value_of(entry.sha), float(value)):  # type: ignore[union-attr]
            out.cached[run_id], out.entries[run_id], out.status[run_id] = hit, entry, "ok"
            continue
        to_read.append((run_id, path, entry))
    with ThreadPoolExecutor(WORKERS) as pool:  # hashing, inflating and numpy free the GIL
        read = pool.map(lambda job: _read(job[1], job[2].sha, job[2].metric, job[2].value), to_read)
        for (run_id, _, entry), (samples, status) in zip(to_read, read, strict=True):
            out.status[run_id] = status
            if samples is not None:
                out.sets[run_id], out.entries[run_id] = samples, entry
    return out


def default_bootstrap_cache() -> Path:
    """`$BOB_CACHE_DIR/bootstrap`, else `~/.cache/bob/bootstrap` (beside the feature cache)."""
    root = os.environ.get("BOB_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "bob") / "bootstrap"


def _linear_batch(sets: list[SampleSet]) -> tuple[np.ndarray, list[tuple[slice, slice]], bool]:
    """One matrix holding every run's sums and (deduplicated) counts columns, and where each run's are."""
    blocks: list[np.ndarray] = []
    where: list[tuple[slice, slice]] = []
    seen: dict[bytes, slice] = {}
    col = 0
    for s in sets:
        form = s.linear
        k = form.sums.shape[1]
        sums = slice(col, col + k)
        blocks.append(form.sums)
        col += k
        simple = form.counts.shape[1] == 1 and bool((form.counts == 1).all())
        digest = b"ones" if simple else hashlib.sha1(form.counts.tobytes()).digest()
        if digest not in seen:
            seen[digest] = slice(col, col + k)
            blocks.append(form.counts)
            col += k
        where.append((sums, seen[digest]))
    exact = all(s.linear.exact32 for s in sets)
    return np.hstack(blocks), where, exact


def _resample_group(
    sets: dict[str, SampleSet], ids: list[str], resamples: int, seed: int
) -> dict[str, np.ndarray]:
    """Replicates of the runs `ids` of one test set, from one stream of draws: the weighted-mean
    metrics of all of them with one matrix product per chunk, the others one by one."""
    first = sets[ids[0]]
    linear = [i for i in ids if sets[i].linear is not None]
    others = [i for i in ids if sets[i].linear is None]
    parts: dict[str, list[np.ndarray]] = {i: [] for i in linear + others}
    matrix, where, exact = _linear_batch([sets[i] for i in linear]) if linear else (None, [], True)
    if matrix is not None:
        matrix = matrix.astype(np.float32 if exact else np.float64)
    for weights in Draws(first.n_units, first.key, first.strata, resamples, seed):
        if matrix is not None:
            w = weights if exact else weights.astype(np.float64)
            product = (w @ matrix).astype(np.float64)
            for i, (sums, counts) in zip(linear, where, strict=True):
                parts[i].append(sets[i].linear.combine(product[:, sums], product[:, counts]))
        if others:
            with ThreadPoolExecutor(WORKERS) as pool:
                for i, reps in zip(
                    others, pool.map(lambda i, w=weights: sets[i].statistic(w), others), strict=True
                ):
                    parts[i].append(reps)
    return {i: np.concatenate(chunks) for i, chunks in parts.items()}


def run_replicates(
    samples: RunSamples, resamples: int, seed: int, store: ReplicateStore | None = None
) -> dict[str, np.ndarray]:
    """[resamples] replicates of each run's metric: read back from the cache, or computed (runs that
    share a units key share their draws) and added to it."""
    groups: dict[str, list[str]] = defaultdict(list)
    out = dict(samples.cached)
    for run_id, s in samples.sets.items():
        hit = store.get(samples.entries[run_id]) if store is not None else None
        if hit is not None:
            out[run_id] = hit
        else:
            groups[s.key].append(run_id)
    for ids in groups.values():
        computed = _resample_group(samples.sets, ids, resamples, seed)
        out.update(computed)
        if store is not None:
            for i, reps in computed.items():
                store.put(samples.entries[i], reps)
    if store is not None:
        store.flush()
    return out


def _key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def cell_candidates(runs: pd.DataFrame) -> dict[tuple[str, str], dict[str, list[str]]]:
    """(backbone, setting) → {full setting (a best-of candidate): its run ids, by seed}."""
    ordered = runs.sort_values("seed", kind="stable")
    out: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(dict)
    for (key, setting, full), ids in ordered.groupby(["backbone_key", "setting", "setting_full"], sort=True)[
        "id"
    ]:
        out[(key, setting)][full] = list(ids)
    return out


def cell_replicates(
    candidates: dict[str, list[str]],
    higher_is_better: bool,
    backbone: str,
    replicates: dict[str, np.ndarray],
    resamples: int,
    seed: int,
) -> tuple[np.ndarray | None, str]:
    """One cell's [resamples] replicates in score units (higher is better): per candidate (full
    setting) its seeds resampled with replacement and averaged, then the best candidate per resample.
    None and the reason when a run has no replicates."""
    ids = [i for group in candidates.values() for i in group]
    missing = [i for i in ids if i not in replicates]
    if missing:
        return None, f"{len(missing)} of its {len(ids)} run(s) have no per-sample file"
    sign = 1.0 if higher_is_better else -1.0
    best = None
    for full, group in candidates.items():
        reps = np.stack([replicates[i] for i in group])  # [seeds, B]
        picks = seed_draws(len(reps), resamples, seed, _key(backbone, full))
        mean = sign * reps[picks, np.arange(resamples)[:, None]].mean(axis=1)
        best = mean if best is None else np.fmax(best, mean)
    return best, "ok"
