"""Writing a run's per-sample outputs beside its result, and the builders the suites share.

`save_samples(ctx, output, samples)` writes `samples` (a `bob.samples.SampleSet`) as
`<run id>.samples.npz` beside the result, atomically (temp file in the same folder, fsync, rename),
records the file in `output.artifacts["samples"]` and its name, sha256, kind, unit count and fields
in `output.protocol["samples"]`, and checks that the file reproduces the metric the run reports. With
`--no-samples` (`ctx.save_samples` false) nothing is written and the protocol says so, so the
leaderboard can tell "turned off" from "made before bob stored samples".

The builders turn what a suite already computed into a sample set: `classification_samples` (scores
→ top-1 prediction, its score, the label), `mean_samples` (one value per unit, e.g. per-query AP).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bob.context import RunContext
from bob.samples import PROTOCOL_KEY, SUFFIX, SampleSet, make_samples, sha256_of
from bob.task import TaskOutput
from bob.weights import default_file_mode

log = logging.getLogger(__name__)
REL_TOL = 1e-9  # the file must reproduce the reported metric up to floating-point summation order


def _smallest_int(values: np.ndarray) -> np.ndarray:
    """Class indices in the smallest signed integer type that holds them (bytes per sample)."""
    values = np.asarray(values)
    for dtype in (np.int8, np.int16, np.int32):
        if values.size == 0 or (values.min() >= np.iinfo(dtype).min and values.max() <= np.iinfo(dtype).max):
            return values.astype(dtype)
    return values.astype(np.int64)


def top1_predictions(scores: np.ndarray) -> np.ndarray:
    """The top-1 class of each row, picked exactly as `common.metrics.top_k_accuracy` picks it."""
    return np.argsort(-scores, axis=1)[:, 0]


def classification_samples(
    scores: np.ndarray,
    labels: np.ndarray,
    metric: str = "top1",
    units: str = "image",
    stratum: np.ndarray | None = None,
    coef: list[float] | None = None,
    cell: np.ndarray | None = None,
) -> SampleSet:
    """Top-1 prediction, its score and the label per test sample: what top-1 is computed from.
    `stratum`/`cell`/`coef` for metrics that average per-set accuracies (ood)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    pred = top1_predictions(scores)
    arrays: dict[str, np.ndarray] = {
        "pred": _smallest_int(pred),
        "label": _smallest_int(labels),
        "score": scores[np.arange(len(pred)), pred].astype(np.float32),
    }
    params: dict[str, Any] = {"n_units": len(labels)}
    if cell is not None:
        arrays["cell"], params["coef"] = _smallest_int(cell), list(coef or [])
    if stratum is not None:
        arrays["stratum"] = _smallest_int(stratum)
    return make_samples("top1", metric, arrays, units=units, truth=(labels,), params=params)


def mean_samples(
    values: np.ndarray, metric: str, units: str, truth: tuple[np.ndarray, ...], **fields: Any
) -> SampleSet:
    """One value per unit (or per row, with `unit`/`cell` fields and `coef`/`n_units`/`cells` params
    passed as keywords), averaged: mAP over queries, J&F over expressions, ..."""
    params = {k: fields.pop(k) for k in ("coef", "n_units", "cells") if k in fields}
    arrays = {"value": np.asarray(values, dtype=np.float64), **{k: np.asarray(v) for k, v in fields.items()}}
    if "unit" in arrays and "n_units" not in params:
        raise ValueError("rows mapped to units (`unit`) need n_units")
    params.setdefault("n_units", len(arrays["value"]))
    return make_samples("mean", metric, arrays, units=units, truth=truth, params=params)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder, fsync and rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _agrees(recomputed: float, reported: float) -> bool:
    if math.isnan(recomputed) or math.isnan(reported):
        return math.isnan(recomputed) and math.isnan(reported)
    return math.isclose(recomputed, reported, rel_tol=REL_TOL, abs_tol=1e-12)


def save_samples(ctx: RunContext, output: TaskOutput, samples: SampleSet) -> TaskOutput:
    """Store `samples` beside the run's result (unless turned off) and record it in `output`."""
    if not ctx.save_samples:
        output.protocol[PROTOCOL_KEY] = {"stored": False, "reason": "turned off (--no-samples)"}
        return output
    reported = float(output.metrics.get(samples.metric, math.nan))
    recomputed = samples.value()
    path = ctx.store.path_for(ctx.spec).with_suffix(SUFFIX)
    data = samples.to_bytes()
    atomic_write_bytes(path, data)
    record = {"stored": True, **samples.describe(sha256_of(data), path.name), "bytes": len(data)}
    if not _agrees(recomputed, reported):  # a bug in a suite's builder: said, never hidden
        log.error(
            "%s: the sample file gives %s = %r, the run reports %r",
            ctx.spec.task,
            samples.metric,
            recomputed,
            reported,
        )
        record["check"] = f"mismatch: the file gives {recomputed!r}, the run reports {reported!r}"
    output.artifacts["samples"] = str(path)
    output.protocol[PROTOCOL_KEY] = record
    return output
