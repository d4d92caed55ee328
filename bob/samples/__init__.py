"""Per-sample outputs: what a run's main metric is computed from, one compact file beside its result.

A *sample set* holds, per test unit (an image, a query, a video, a timed call), what the suite's main
metric is computed from, and computes that metric under any resampling of the units:
`statistic(weights)` takes a [B, n_units] matrix of bootstrap counts (how often each unit is drawn in
each of B resamples) and returns the metric of every resample. All-ones weights give the metric of the
test set itself, which is how each suite's test checks that the file reproduces the reported number,
and how the leaderboard checks a file before it trusts it.

The file is `<run id>.samples.npz` beside `<run id>.json`: numpy's compressed npz, no pickles, holding
the kind's arrays and `meta`, a JSON string (format version, kind, metric, units, kind parameters).
The result records the file's name, sha256, unit count and fields in `protocol["samples"]`. numpy
only: the leaderboard reads these files and never imports torch.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from bob.errors import BobError
from bob.samples.kinds import KINDS, LinearForm

FORMAT = 1
SUFFIX = ".samples.npz"
PROTOCOL_KEY = "samples"  # where a result's protocol records its sample file
__all__ = ["FORMAT", "SUFFIX", "SampleSet", "SamplesError", "make_samples", "read_samples", "samples_path"]


class SamplesError(BobError):
    """A per-sample file that is missing, damaged, or does not match its result."""


def units_key(n_units: int, *truth: np.ndarray) -> str:
    """Identity of a test set's units (count, order and ground truth): runs with equal keys scored the
    same units in the same order, so their resamples can be paired unit for unit."""
    h = hashlib.sha256(f"n={n_units}".encode())
    for array in truth:
        a = np.ascontiguousarray(array)
        a = (
            a.astype(np.int64)
            if a.dtype.kind in "biu"
            else a.astype(np.float64)
            if a.dtype.kind == "f"
            else a
        )
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


@dataclass
class SampleSet:
    """One run's per-sample outputs. `kind` names how the metric is computed from `arrays`
    (bob.samples.kinds); `metric` is the result metric it reproduces; `units` says what a unit is."""

    kind: str
    metric: str
    arrays: dict[str, np.ndarray]
    n_units: int
    key: str
    units: str = "sample"
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def strata(self) -> np.ndarray | None:
        """Per unit, its stratum (e.g. the shifted set it belongs to); resamples keep each stratum's size."""
        return self.arrays.get("stratum")

    def statistic(self, weights: np.ndarray) -> np.ndarray:
        """The metric under each row of `weights` ([B, n_units] counts); NaN where it is undefined."""
        weights = np.asarray(weights)
        if weights.ndim != 2 or weights.shape[1] != self.n_units:
            raise ValueError(f"weights must be [B, {self.n_units}], got {weights.shape}")
        if self.linear is not None:
            return self.linear.apply(weights)
        return KINDS[self.kind].statistic(self.arrays, self.params, weights)

    def value(self) -> float:
        """The metric on the test set itself (every unit once)."""
        if self.linear is not None:  # column sums: no n-long product
            return float(
                self.linear.combine(self.linear.sums.sum(0)[None], self.linear.counts.sum(0)[None])[0]
            )
        return float(self.statistic(np.ones((1, self.n_units)))[0])

    @cached_property
    def linear(self) -> LinearForm | None:
        """For metrics that are weighted means of per-unit sums (accuracy, mAP over queries, ...): the
        matrices that let many runs be resampled with one matrix product. None for other metrics."""
        form = KINDS[self.kind].linear
        return form(self.arrays, self.params) if form is not None else None

    @property
    def binary(self) -> bool:
        """One 0/1 outcome per unit (top-1 hits): McNemar's test applies to two such sets."""
        return KINDS[self.kind].binary(self.arrays, self.params)

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "metric": self.metric,
            "units": self.units,
            "n_units": self.n_units,
            "key": self.key,
            "params": self.params,
        }

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=np.array(json.dumps(self.meta(), sort_keys=True)), **self.arrays)
        return buf.getvalue()

    def describe(self, sha256: str, file: str) -> dict[str, Any]:
        """What a result's protocol records about this file."""
        return {
            "file": file,
            "sha256": sha256,
            "kind": self.kind,
            "metric": self.metric,
            "units": self.units,
            "rows": self.n_units,
            "fields": sorted(self.arrays),
        }


def make_samples(
    kind: str,
    metric: str,
    arrays: dict[str, np.ndarray],
    *,
    units: str,
    truth: tuple[np.ndarray, ...] = (),
    params: dict[str, Any] | None = None,
) -> SampleSet:
    """A checked sample set. `truth` (the units' ground truth, e.g. labels) goes into its pairing key."""
    if kind not in KINDS:
        raise ValueError(f"unknown sample kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    params = dict(params or {})
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    n_units = KINDS[kind].check(arrays, params)
    strata = arrays.get("stratum")
    key_parts = (*truth, strata) if strata is not None else truth
    return SampleSet(kind, metric, arrays, n_units, units_key(n_units, *key_parts), units, params)


def from_bytes(data: bytes, source: str = "<bytes>") -> SampleSet:
    """Parse a sample file (no pickles are ever loaded); raises SamplesError naming `source`."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise SamplesError(f"{source} is not a readable sample file ({err}).") from err
    try:
        meta = json.loads(str(arrays.pop("meta")[()]))
        if meta.get("format") != FORMAT:
            raise SamplesError(f"{source} has sample format {meta.get('format')!r}; this bob reads {FORMAT}.")
        kind = meta["kind"]
        if kind not in KINDS:
            raise SamplesError(f"{source} has an unknown kind {kind!r}.")
        n_units = KINDS[kind].check(arrays, meta["params"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        raise SamplesError(f"{source} is not a valid sample file ({err}).") from err
    if n_units != meta["n_units"]:
        raise SamplesError(f"{source}: its arrays hold {n_units} units, its meta says {meta['n_units']}.")
    return SampleSet(kind, meta["metric"], arrays, n_units, meta["key"], meta["units"], meta["params"])


def samples_path(result_path: Path | str) -> Path:
    """Where the sample file of the result at `result_path` lives: `<run id>.samples.npz` beside it."""
    return Path(result_path).with_suffix(SUFFIX)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_samples(path: Path | str, sha256: str | None = None) -> SampleSet:
    """The sample file at `path`, checked against the sha256 its result recorded (when given)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise SamplesError(f"{path} is missing.") from err
    except OSError as err:
        raise SamplesError(f"{path} cannot be read ({err.strerror}).") from err
    if sha256 is not None and sha256_of(data) != sha256:
        raise SamplesError(f"{path} does not match the sha256 its result recorded (changed after the run).")
    return from_bytes(data, str(path))
