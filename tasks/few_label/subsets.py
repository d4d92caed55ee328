"""Labelled subsets of a train split for the few-label suite: published files, else seeded and written once.

ImageNet at 1 % and 10 % uses SimCLR's published subset files (`imagenet_subsets/1percent.txt` and
`10percent.txt`, one train image filename per line, the same sets SimMatchV2 ships), read from the
data root; they are never resampled. Any other (dataset, fraction) gets a seeded class-balanced
subset: the same number of images from every class, `max(1, round(fraction · N / C))`, capped at the
class's size (fraction 1 is the whole split). It is drawn once and written as JSON under the feature
cache root (`label-subsets/<dataset>/`); later runs read the file, so a subset never changes under a
sweep. Either way the subset's fingerprint (sha256 over the train split's fingerprint and the sorted
indices) goes into the run's protocol.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bob.data.base import FileSplit, ImageSplit
from bob.errors import CacheCorruptError, DatasetNotFoundError, UsageError

# Published subset files: dataset -> {fraction: file name}.
PUBLISHED_SUBSETS: dict[str, dict[float, str]] = {
    "imagenet": {0.01: "1percent.txt", 0.10: "10percent.txt"},
}
SUBSET_SOURCE = (
    "https://github.com/google-research/simclr/tree/master/imagenet_subsets "
    "(SimCLR's 1percent.txt / 10percent.txt)"
)


@dataclass
class LabelSubset:
    indices: np.ndarray  # sorted indices into the train split
    fraction: float
    method: str  # "published file <name>" | "seeded class-balanced" | "whole split"
    seed: int | None
    fingerprint: str
    path: str  # the file the subset was read from or written to ("" for the whole split)

    def describe(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "indices"}
        out["num_labelled"] = len(self.indices)
        return out


def subset_fingerprint(train: ImageSplit, indices: np.ndarray) -> str:
    h = hashlib.sha256(train.fingerprint.encode())
    h.update(np.asarray(indices, dtype=np.int64).tobytes())
    return h.hexdigest()


def published_file(dataset: str, fraction: float) -> str | None:
    for value, name in PUBLISHED_SUBSETS.get(dataset, {}).items():
        if math.isclose(value, fraction, rel_tol=1e-9):
            return name
    return None


def select_subset(
    train: ImageSplit, fraction: float, seed: int, data_root: Path, subsets_dir: Path
) -> LabelSubset:
    """The labelled subset of `train` for `fraction` (see the module doc for which kind)."""
    if not 0.0 < fraction <= 1.0:
        raise UsageError(f"fraction must be in (0, 1], got {fraction}.")
    if fraction == 1.0:
        indices = np.arange(len(train))
        return LabelSubset(indices, 1.0, "whole split", None, subset_fingerprint(train, indices), "")
    name = published_file(train.dataset, fraction)
    if name is not None:
        return _read_published(train, fraction, name, data_root)
    return _seeded_subset(train, fraction, seed, subsets_dir)


# ------------------------------------------------------------------------------------ published files


def _read_published(train: ImageSplit, fraction: float, name: str, data_root: Path) -> LabelSubset:
    if not isinstance(train, FileSplit):
        raise UsageError(f"{train.dataset}: published subset files need a file-based train split.")
    candidates = [train.root / name, data_root / name]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DatasetNotFoundError(
            f"The {fraction:.0%} label subset of '{train.dataset}' needs the file '{name}' (one train image "
            f"filename per line, from {SUBSET_SOURCE}); bob looked for {candidates[0]} and {candidates[1]}. "
            f"Put {name} in {candidates[0].parent}."
        )
    wanted = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not wanted:
        raise UsageError(f"Label subset file {path} is empty; expected one train image filename per line.")
    by_name = {p.name: i for i, p in enumerate(train.paths)}
    missing = [w for w in wanted if w not in by_name]
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} of the {len(wanted)} images listed in {path} are not in the {train.dataset} train "
            f"split under {train.root} (first: {', '.join(missing[:3])}). The subset files name ImageNet "
            "train images such as n01440764_10026.JPEG; check that the train tree is complete."
        )
    indices = np.array(sorted({by_name[w] for w in wanted}), dtype=np.int64)
    _check_every_class(train, indices, str(path))
    fp = subset_fingerprint(train, indices)
    return LabelSubset(indices, fraction, f"published file {name}", None, fp, str(path))


# --------------------------------------------------------------------------------- seeded, written once


def balanced_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """`max(1, round(fraction · N / C))` images of every class (all of a smaller class), seeded."""
    classes = np.unique(labels)
    per_class = max(1, round(fraction * len(labels) / len(classes)))
    rng = np.random.default_rng(seed)
    picked = []
    for cls in classes:
        idx = np.flatnonzero(labels == cls)
        picked.append(rng.permutation(idx)[:per_class])
    return np.sort(np.concatenate(picked))


def _seeded_subset(train: ImageSplit, fraction: float, seed: int, subsets_dir: Path) -> LabelSubset:
    path = subsets_dir / train.dataset / f"{train.fingerprint[:16]}-fraction{fraction:g}-seed{seed}.json"
    method = "seeded class-balanced"
    if path.is_file():
        indices = _read_written(path, train)
    else:
        indices = balanced_indices(train.labels, fraction, seed)
        record = {
            "dataset": train.dataset,
            "train_fingerprint": train.fingerprint,
            "fraction": fraction,
            "seed": seed,
            "method": method,
            "indices": indices.tolist(),
        }
        _write_atomic(path, record)
    _check_every_class(train, indices, str(path))
    return LabelSubset(indices, fraction, method, seed, subset_fingerprint(train, indices), str(path))


def _read_written(path: Path, train: ImageSplit) -> np.ndarray:
    try:
        record = json.loads(path.read_text())
        indices = np.asarray(record["indices"], dtype=np.int64)
        same_split = record["train_fingerprint"] == train.fingerprint
    except (ValueError, KeyError, TypeError) as err:
        raise CacheCorruptError(
            f"Label subset file {path} cannot be read ({err}); delete it to redraw."
        ) from None
    if (
        not same_split
        or indices.ndim != 1
        or (len(indices) and not 0 <= indices.min() <= indices.max() < len(train))
    ):
        raise CacheCorruptError(
            f"Label subset file {path} does not belong to the current {train.dataset} train split; delete it to redraw."
        )
    return indices


def _write_atomic(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _check_every_class(train: ImageSplit, indices: np.ndarray, where: str) -> None:
    """A subset without some class cannot train a classifier over all of them: say which, before training."""
    present = set(np.unique(train.labels[indices]).tolist())
    absent = [train.classes[c] for c in np.unique(train.labels) if c not in present]
    if absent:
        raise UsageError(
            f"The label subset {where} has no image of {len(absent)} class(es) of {train.dataset} "
            f"(e.g. {', '.join(absent[:3])}); every class needs at least one labelled image."
        )
