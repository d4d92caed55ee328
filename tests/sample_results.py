"""Hand-built result files *with per-sample files* for the interval and comparison tests: each run's
top-1 comes from a vector of per-image hits, written as a real sample file and recorded in the result
exactly as a suite records it (tasks/common/samples.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bob.results import ResultStore, RunResult
from bob.samples import SampleSet, make_samples, samples_path, sha256_of
from bob.spec import RunSpec


def hits_samples(hits: np.ndarray, classes: int = 5, metric: str = "top1") -> SampleSet:
    """A top-1 sample set whose i-th image is right exactly when hits[i] (labels cycle over classes)."""
    hits = np.asarray(hits, dtype=bool)
    label = np.arange(len(hits)) % classes
    pred = np.where(hits, label, (label + 1) % classes)
    return make_samples("top1", metric, {"pred": pred, "label": label}, units="image", truth=(label,))


def write_sampled_result(
    root: Path,
    backbone: str,
    task: str,
    samples: SampleSet | None,
    *,
    seed: int = 0,
    weights: str = "pretrained",
    task_args: dict[str, Any] | None = None,
    higher_is_better: bool = True,
    value: float | None = None,
    record: dict[str, Any] | None = None,
) -> Path:
    """One ok result; with `samples`, its file beside the result and the protocol record. `value`
    overrides the reported metric (default: the file's own value); `record` the protocol record."""
    spec = RunSpec(backbone, task, weights, seed, task_args=dict(task_args or {}), task_version="1")
    suite, _, dataset = task.partition("/")
    store = ResultStore(root)
    metric = samples.metric if samples is not None else "top1"
    protocol: dict[str, Any] = {}
    if samples is not None:
        data = samples.to_bytes()
        path = samples_path(store.path_for(spec))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        protocol["samples"] = {"stored": True, **samples.describe(sha256_of(data), path.name)}
    if record is not None:
        protocol["samples"] = record
    result = RunResult(
        id=spec.id,
        status="ok",
        spec=spec.to_dict(),
        backbone={
            "name": backbone,
            "family": "cnn",
            "method": "random" if weights == "random" else "supervised",
            "pretrain_data": "IN-1k",
            "params": 1e6,
        },
        task={
            "name": task,
            "suite": suite,
            "dataset": dataset,
            "version": "1",
            "main_metric": metric,
            "higher_is_better": higher_is_better,
        },
        metrics={metric: samples.value() if value is None else value},
        protocol=protocol,
        timings={"total_s": 1.0},
    )
    return store.write(result, spec)


def skilled_hits(rng: np.random.Generator, n: int, accuracy: float) -> np.ndarray:
    return rng.random(n) < accuracy
