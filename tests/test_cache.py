"""The feature cache: atomic entries, checksums, reuse across runs, one extraction per key across
processes, and one clear error when the disk refuses a write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import bob.cache
from bob.backbones.base import BackboneRef
from bob.cache import FeatureCache, cache_key
from bob.errors import CacheCorruptError, StorageError
from bob.locks import HOST, STALE_BEATS, FileLock
from bob.runner import RunOptions, execute
from bob.spec import make_spec

TINY = "timm/test_resnet"


def _options(results_dir, cache_dir, **kw) -> RunOptions:
    return RunOptions(results_dir=results_dir, cache_dir=cache_dir, device="cpu", num_workers=0, **kw)


def test_put_get_roundtrip(tmp_path):
    cache = FeatureCache(tmp_path)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    y = np.arange(5)
    put = cache.put("ab" * 32, x, y, {"note": "hi"})
    got = cache.get("ab" * 32)
    assert not put.cache_hit and got.cache_hit
    assert np.array_equal(got.features, x) and np.array_equal(got.labels, y) and got.meta["note"] == "hi"
    assert cache.get("cd" * 32) is None


def test_key_depends_on_every_input():
    base = {"backbone": {"w": "sha256:1"}, "transform": {"input_size": 64}, "dataset": {"fingerprint": "f"}}
    assert cache_key(base) == cache_key(json.loads(json.dumps(base)))
    for change in (
        {"backbone": {"w": "sha256:2"}},
        {"transform": {"input_size": 65}},
        {"dataset": {"fingerprint": "g"}},
    ):
        assert cache_key({**base, **change}) != cache_key(base)


def test_second_identical_put_keeps_the_first(tmp_path):
    cache = FeatureCache(tmp_path)
    key = "ef" * 32
    cache.put(key, np.zeros((2, 2)), np.zeros(2), {"n": 1})
    cache.put(key, np.ones((2, 2)), np.zeros(2), {"n": 2})
    assert cache.get(key).meta["n"] == 1
    assert not list(cache.entry_dir(key).parent.glob(".tmp-*")), "temp directories are cleaned up"


def test_torn_and_corrupt_entries_are_never_read(tmp_path):
    cache = FeatureCache(tmp_path)
    key = "12" * 32
    cache.put(key, np.ones((4, 2)), np.zeros(4), {})
    entry = cache.entry_dir(key)
    features = entry / "features.npy"
    data = bytearray(features.read_bytes())
    data[-1] ^= 0xFF
    features.write_bytes(bytes(data))
    with pytest.raises(CacheCorruptError, match=r"features\.npy does not match") as info:
        cache.get(key)
    assert str(entry) in str(info.value) and "rm -r" in str(info.value)
    assert features.read_bytes() == bytes(data), "the damaged entry is left for inspection"
    (entry / "COMPLETE").unlink()
    with pytest.raises(CacheCorruptError, match="completion marker"):
        cache.get(key)


def test_second_run_extracts_nothing_and_builds_no_model(results_dir, cache_dir, monkeypatch):
    first = execute(make_spec(TINY, "knn/digits", "random"), _options(results_dir, cache_dir))
    assert first.result.ok, first.result.error
    assert first.result.cache["extractions"] == 2 and first.result.cache["hits"] == 0

    def no_build(self, input_size=None):
        raise AssertionError("a fully cached run must not build the backbone")

    monkeypatch.setattr(BackboneRef, "build", no_build)
    second = execute(
        make_spec(TINY, "linear-probe/digits", "random", task_args={"min_steps": "50"}),
        _options(results_dir, cache_dir),
    )
    assert second.result.ok, second.result.error
    assert second.result.cache == {**first.result.cache, "hits": 2, "extractions": 0}
    assert second.result.backbone["params"] == first.result.backbone["params"]


def test_a_different_transform_is_a_different_entry(results_dir, cache_dir):
    a = execute(make_spec(TINY, "knn/digits", "random"), _options(results_dir, cache_dir))
    b = execute(
        make_spec(TINY, "knn/digits", "random", task_args={"image_size": "32"}),
        _options(results_dir, cache_dir),
    )
    assert b.result.cache["extractions"] == 2
    assert set(a.result.cache["keys"].values()).isdisjoint(b.result.cache["keys"].values())


def test_corrupt_cache_entry_fails_the_run_cleanly(results_dir, cache_dir):
    spec = make_spec(TINY, "knn/digits", "random")
    first = execute(spec, _options(results_dir, cache_dir))
    key = first.result.cache["keys"]["test"]
    features = FeatureCache(cache_dir).entry_dir(key) / "features.npy"
    features.write_bytes(features.read_bytes()[:-8])
    again = execute(spec, _options(results_dir, cache_dir, overwrite=True))
    assert again.result.status == "failed"
    assert again.result.error["type"] == "CacheCorruptError"
    assert key in again.result.error["message"]


# -------------------------------------------------------------------------- the extraction lock

_CLAIMANT = """
import sys, time
import numpy as np
from bob.cache import FeatureCache
cache, key, log = FeatureCache(sys.argv[1]), sys.argv[2], sys.argv[3]
while time.time() < float(sys.argv[4]):  # start together
    time.sleep(0.005)
with cache.claim(key) as hit:
    if hit is None:
        time.sleep(1.0)  # a slow extraction: the other process must wait, not repeat it
        cache.put(key, np.ones((3, 2)), np.arange(3), {})
        with open(log, "a") as f:
            f.write("extracted\\n")
print(cache.get(key).features.sum())
"""


def test_two_processes_missing_one_key_extract_it_once(tmp_path):

    key, log = "ab" * 32, tmp_path / "log"
    start = str(time.time() + 3)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMANT, str(tmp_path / "cache"), key, str(log), start],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs == ["6.0", "6.0"], "both read the one entry"
    assert log.read_text().splitlines() == ["extracted"], "the second process waited and read it"
    assert not list((tmp_path / "cache").rglob("*.lock"))


def test_a_dead_holders_extraction_lock_is_broken(tmp_path):

    cache, key = FeatureCache(tmp_path), "cd" * 32
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / key[:2] / f".{key}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": HOST, "pid": dead.pid, "since": 0, "heartbeat": 10.0}))
    with cache.claim(key) as hit:
        assert hit is None and lock.exists()  # taken over, now ours
    assert not lock.exists()


def test_a_silent_foreign_holder_loses_the_extraction_lock(tmp_path):
    """A lock from another host whose heartbeat stopped (its node died) goes stale."""

    cache, key = FeatureCache(tmp_path), "ef" * 32
    lock = tmp_path / key[:2] / f".{key}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": "another-node", "pid": 1, "since": 0, "heartbeat": 1.0}))
    old = time.time() - 60
    os.utime(lock, (old, old))
    with cache.claim(key) as hit:
        assert hit is None


def test_a_live_holders_lock_is_kept_fresh_by_its_heartbeat(tmp_path):

    lock = FileLock(tmp_path / "x.lock", heartbeat=0.05)
    assert lock.acquire()
    try:
        time.sleep(0.05 * (STALE_BEATS + 4))
        assert time.time() - lock.path.stat().st_mtime < 0.05 * STALE_BEATS
    finally:
        lock.release()


# ------------------------------------------------------------------------------ refused writes


def test_a_full_disk_is_one_clear_error_and_leaves_no_partial_entry(tmp_path, monkeypatch):
    """numpy reports a full disk as `OSError: N requested and M written`; bob names the cause and
    the entry, and removes the half-written temp dir."""

    def short_write(*args, **kwargs):
        raise OSError("689664 requested and 262112 written")

    monkeypatch.setattr(bob.cache.np, "save", short_write)
    cache = FeatureCache(tmp_path)
    with pytest.raises(StorageError) as err:
        cache.put("ab" * 32, np.zeros((2, 2)), np.zeros(2), {})
    message = str(err.value)
    assert "no space left on the device" in message and str(cache.entry_dir("ab" * 32)) in message
    assert "\n" not in message
    assert not [p for p in tmp_path.rglob("*") if p.is_dir() and p.name.startswith(".tmp-")]
