"""Frozen-feature extraction in a data-parallel run (`bob run --gpus-per-run N` on a suite that reads
the feature cache, bob/context.py): each rank extracts its shard of every split, the shards are
gathered into one cache entry that rank 0 writes, and the entry (hence the run) is the one a single
process makes; a second run on the same cache extracts nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bob.cache import FeatureCache
from bob.spec import make_spec
from tests.cli_harness import bob_run_on_cpu

BACKBONE, TASK = "timm/test_resnet", "knn/shapes-mini"


def _run(tmp: Path, *flags: str) -> dict:
    proc = bob_run_on_cpu(tmp, BACKBONE, [TASK], (), "--batch-size", "16", *flags)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = (tmp / "results").rglob("*.json")
    return json.loads(path.read_text())


@pytest.mark.slow  # a two-rank launch and two one-process runs: about 25 s on a quiet machine
def test_two_ranks_extract_one_cache_entry_per_split_equal_to_one_process(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    a, b = _run(two, "--gpus-per-run", "2"), _run(one)
    assert a["status"] == b["status"] == "ok"
    assert a["id"] == b["id"] == make_spec(BACKBONE, TASK, "random").id
    assert a["cache"]["keys"] == b["cache"]["keys"] and a["cache"]["extractions"] == 2
    for split, key in a["cache"]["keys"].items():
        entries = [p for p in (two / "cache").glob("*/*") if p.is_dir()]
        assert len(entries) == 2, entries  # one entry per split, written once (by rank 0)
        mine, theirs = FeatureCache(two / "cache").get(key), FeatureCache(one / "cache").get(key)
        assert mine is not None and theirs is not None, split
        assert mine.meta["ranks"] == 2
        np.testing.assert_array_equal(mine.labels, theirs.labels)
        # Shards are batched differently from one process: equal up to float summation order.
        np.testing.assert_allclose(mine.features, theirs.features, rtol=1e-5, atol=1e-6)
    assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-12)
    again = _run(two, "--gpus-per-run", "2", "--overwrite")  # the cache is warm: rank 0's hit, shared
    assert again["cache"]["hits"] == 2 and again["cache"]["extractions"] == 0
    assert again["metrics"] == a["metrics"]
