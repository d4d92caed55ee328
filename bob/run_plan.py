"""`bob run --dry-run`: the runs a grid would start, which are done, which feature sets are cached.

A run is `done` when its settled result (ok, or not applicable) is in the results dir, as `bob run`
decides when it skips a run; `failed` when the stored result failed (it runs again); `to run`
otherwise (every run with `--overwrite`). Runs that read frozen features are grouped by the sweep
planner's extraction key (`bob.sweep.plan.extraction_key`: backbone, weights, backbone args, init
seed of a random init, image size, dataset). A group's features are `cached` when a stored result of
the same extraction recorded its feature-cache keys and every one of those entries is complete in
the cache; otherwise they `will be extracted` (the first run of the group extracts, the others read).
Runs that train (fine-tuning, detection) read no cached features.

Reads result JSONs and cache markers only: no torch, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bob.errors import ResultFileError, UsageError
from bob.results import ResultStore, RunResult
from bob.spec import RunSpec
from bob.sweep.plan import extraction_key, reads_feature_cache


@dataclass(frozen=True)
class PlannedRun:
    """One run of the grid: its spec, `to run` / `done` / `failed`, and its extraction group."""

    spec: RunSpec
    state: str
    path: Path
    extraction: int | None = None  # index into RunPlan.extractions; None for a run that trains

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.spec.id,
            "backbone": self.spec.backbone,
            "weights": self.spec.weights,
            "task": self.spec.task,
            "seed": self.spec.seed,
            "state": self.state,
            "result": str(self.path),
            "extraction": self.extraction,
        }


@dataclass
class PlannedExtraction:
    """A feature set some runs of the grid read: cached, or extracted by the first of them."""

    backbone: str
    weights: str
    dataset: str
    cached: bool
    runs: list[str] = field(default_factory=list)  # run ids

    @property
    def state(self) -> str:
        return "cached" if self.cached else "will be extracted"

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "weights": self.weights,
            "dataset": self.dataset,
            "state": self.state,
            "runs": self.runs,
        }


@dataclass
class RunPlan:
    """What a `bob run` would do; `counts()` sums the states."""

    runs: list[PlannedRun]
    extractions: list[PlannedExtraction]

    def counts(self) -> dict[str, int]:
        states = [r.state for r in self.runs]
        return {
            "runs": len(states),
            "to_run": sum(s != "done" for s in states),
            "done": states.count("done"),
            "extractions": len(self.extractions),
            "cached": sum(e.cached for e in self.extractions),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.counts(),
            "planned": [r.to_dict() for r in self.runs],
            "feature_sets": [e.to_dict() for e in self.extractions],
        }


def plan_runs(specs: list[RunSpec], store: ResultStore, cache_root: Path, overwrite: bool) -> RunPlan:
    """The plan of these runs against the results in `store` and the feature cache at `cache_root`."""
    cached = cached_extractions(store, cache_root) if store.root.is_dir() else set()
    groups: dict[str, int] = {}
    extractions: list[PlannedExtraction] = []
    runs = []
    for spec in specs:
        index = None
        if reads_feature_cache(spec):
            key = extraction_key(spec)
            if key not in groups:
                groups[key] = len(extractions)
                dataset = spec.task.partition("/")[2]
                extractions.append(PlannedExtraction(spec.backbone, spec.weights, dataset, key in cached))
            index = groups[key]
            extractions[index].runs.append(spec.id)
        runs.append(PlannedRun(spec, _state(spec, store, overwrite), store.path_for(spec), index))
    return RunPlan(runs, extractions)


def _state(spec: RunSpec, store: ResultStore, overwrite: bool) -> str:
    try:
        result = store.load(spec)
    except ResultFileError:
        return "to run"  # `bob run` itself refuses a damaged result, with its own message
    if result is None or overwrite:
        return "to run"
    return "done" if result.settled else "failed"


def cached_extractions(store: ResultStore, cache_root: Path) -> set[str]:
    """Extraction keys whose features a stored result recorded and the cache still holds whole."""
    found: set[str] = set()
    for _, result in store.iter_results():
        if isinstance(result, RunResult) and result.ok:
            keys = list((result.cache or {}).get("keys", {}).values())
            if keys and all(_complete(cache_root, k) for k in keys):
                found.update(_keys_of(result))
    return found


def _keys_of(result: RunResult) -> Iterable[str]:
    try:
        spec = RunSpec.from_dict(result.spec)
        return [extraction_key(spec)] if reads_feature_cache(spec) else []
    except (
        UsageError,
        TypeError,
        KeyError,
        AttributeError,
    ):  # a result of a suite or dataset this bob no longer has: not a cache hint
        return []


def _complete(cache_root: Path, key: str) -> bool:
    return isinstance(key, str) and len(key) > 2 and (cache_root / key[:2] / key / "COMPLETE").is_file()
