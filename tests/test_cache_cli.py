"""`bob cache list|size|prune` over real feature-cache and geometry-cache entries."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import bob.cache_admin as admin
from bob.cache import FeatureCache, cache_key, default_cache_root
from bob.locks import HOST, FileLock
from bob.pixels import PixelCache, default_pixel_root
from tests.cli_harness import invoke

DAY = 86400.0


def _features(cache: FeatureCache, backbone: str, dataset: str, split: str, rows: int) -> str:
    spec = {"backbone": {"resolved_name": backbone}, "dataset": {"dataset": dataset, "split": split}}
    key = cache_key(spec)
    meta = {"spec": spec, "backbone": {"name": backbone}}
    cache.put(key, np.ones((rows, 8), np.float32), np.zeros(rows, np.int64), meta)
    return key


def _pixels(root: Path, dataset: str) -> str:
    key = cache_key({"pixels": dataset})
    writer = PixelCache(root).writer(key, 2, 4)
    writer.add(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    writer.commit({"dataset": dataset, "split": "train", "num_samples": 2, "crop": 4})
    return key


def _dead_pid() -> int:
    pid = 2**22 + 12345
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def _used(cache_root: Path, key: str, when: float) -> None:
    """Record a read of the entry at `when` (its files' access time)."""
    entry = cache_root / key[:2] / key
    for f in entry.iterdir():
        os.utime(f, (when, f.stat().st_mtime))


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Three feature sets and one pixel entry; 'now' is 40 days after they were written, and the
    ViT's features were read 2 days ago."""
    feats, pixels = tmp_path / "features", tmp_path / "pixels"
    cache = FeatureCache(feats)
    keys = {
        "resnet-train": _features(cache, "timm/resnet18", "cifar10", "train", 64),
        "resnet-test": _features(cache, "timm/resnet18", "cifar10", "test", 16),
        "vit-train": _features(cache, "timm/vit_small_patch16_224", "pets", "train", 32),
        "pixels": _pixels(pixels, "cifar10"),
    }
    now = time.time() + 40 * DAY
    _used(feats, keys["vit-train"], now - 2 * DAY)
    monkeypatch.setattr(admin, "_now", lambda: now)
    dirs = ["--cache-dir", str(feats), "--geometry-dir", str(pixels)]
    return cache, feats, pixels, keys, dirs


def _json(argv: list[str], capsys) -> tuple[int, object]:
    code, out = invoke([*argv, "--json"], capsys)
    return code, json.loads(out[out.index("[") if out.lstrip().startswith("[") else out.index("{") :])


def test_list_shows_every_entry_with_what_it_holds(caches, capsys):
    _, feats, _, keys, dirs = caches
    code, rows = _json(["cache", "list", *dirs], capsys)
    assert code == 0
    by_key = {r["key"]: r for r in rows}
    assert set(by_key) == set(keys.values())
    vit = by_key[keys["vit-train"]]
    assert (vit["kind"], vit["backbone"], vit["dataset"], vit["split"], vit["state"]) == (
        "features",
        "timm/vit_small_patch16_224",
        "pets",
        "train",
        "ok",
    )
    entry = feats / keys["vit-train"][:2] / keys["vit-train"]
    assert vit["size_bytes"] == sum(f.stat().st_size for f in entry.iterdir())
    pix = by_key[keys["pixels"]]
    assert (pix["kind"], pix["backbone"], pix["dataset"]) == ("pixels", "", "cifar10")
    # The table names backbones in full.
    code, out = invoke(["cache", "list", *dirs], capsys)
    assert code == 0 and "timm/vit_small_patch16_224" in out and "cache entries (4" in out


def test_size_by_backbone_adds_up(caches, capsys):
    _, _, _, _, dirs = caches
    code, report = _json(["cache", "size", "--by", "backbone", *dirs], capsys)
    assert code == 0
    groups = {g["backbone"]: g for g in report["groups"]}
    assert groups["timm/resnet18"]["entries"] == 2
    assert sum(g["size_bytes"] for g in report["groups"]) == report["total_bytes"] > 0
    assert all(v is not None and v > 0 for v in report["disk_free_bytes"].values())


def test_prune_by_age_dry_run_then_for_real(caches, capsys):
    cache, _, _, keys, dirs = caches
    code, out = invoke(
        ["cache", "prune", "--older-than", "30d", "--kind", "features", "--dry-run", *dirs], capsys
    )
    assert code == 0 and "would remove 2 entries" in out and "nothing was removed" in out
    assert all(cache.get(k) is not None for k in (keys["resnet-train"], keys["resnet-test"]))
    code, report = _json(["cache", "prune", "--older-than", "30d", "--kind", "features", *dirs], capsys)
    assert code == 0
    assert {r["key"] for r in report["removed"]} == {keys["resnet-train"], keys["resnet-test"]}
    assert cache.get(keys["resnet-train"]) is None and cache.get(keys["resnet-test"]) is None
    # The recently read ViT features and the pixel entry (another kind) are intact and readable.
    assert cache.get(keys["vit-train"]).features.shape == (32, 8)
    assert PixelCache(Path(dirs[3])).get(keys["pixels"]) is not None
    # Nothing of the removal is left behind in the shard folders.
    leftovers = [p.name for p in Path(dirs[1]).rglob(".*")]
    assert leftovers == []


def test_prune_by_backbone_never_matches_pixels(caches, capsys):
    cache, _, pixels, keys, dirs = caches
    code, report = _json(["cache", "prune", "--backbone", "timm/vit_*", *dirs], capsys)
    assert code == 0
    assert [r["key"] for r in report["removed"]] == [keys["vit-train"]]
    assert cache.get(keys["resnet-train"]) is not None
    assert PixelCache(pixels).get(keys["pixels"]) is not None


def test_prune_to_a_size_budget_removes_least_recently_used_first(caches, capsys):
    cache, _, _, keys, dirs = caches
    _, listed = _json(["cache", "list", "--kind", "features", *dirs], capsys)
    sizes = {r["key"]: r["size_bytes"] for r in listed}
    budget = sizes[keys["vit-train"]] + sizes[keys["resnet-test"]]
    code, report = _json(["cache", "prune", "--kind", "features", "--max-size", str(budget), *dirs], capsys)
    assert code == 0
    removed = [r["key"] for r in report["removed"]]
    assert keys["vit-train"] not in removed  # the most recently used stays
    assert report["kept_bytes"] <= budget
    assert report["kept_bytes"] == sum(sizes.values()) - sum(sizes[k] for k in removed)
    assert cache.get(keys["vit-train"]) is not None


def test_an_entry_a_running_sweep_holds_is_never_touched(caches, capsys):
    """A live extraction lock (this process, standing in for a sweep) protects its entry; a lock
    whose owner died does not."""
    cache, feats, _, keys, dirs = caches
    held = keys["resnet-train"]
    lock = FileLock(feats / held[:2] / f".{held}.lock", heartbeat=10.0)
    assert lock.acquire()
    try:
        _, rows = _json(["cache", "list", *dirs], capsys)
        state = {r["key"]: r for r in rows}[held]
        assert state["state"] == "in-use" and str(os.getpid()) in state["holder"]
        code, report = _json(["cache", "prune", "--all", "--kind", "features", *dirs], capsys)
        assert code == 0
        assert [r["key"] for r in report["skipped_in_use"]] == [held]
        assert held not in {r["key"] for r in report["removed"]}
        assert cache.get(held) is not None and lock.path.exists()
        code, out = invoke(["cache", "prune", "--all", "--kind", "features", *dirs], capsys)
        assert f"kept features {held[:12]}: in use by pid {os.getpid()}" in out
    finally:
        lock.release()
    # The same lock left by a dead process protects nothing.
    lock.path.write_text(json.dumps({"host": HOST, "pid": _dead_pid()}))
    code, report = _json(["cache", "prune", "--all", "--kind", "features", *dirs], capsys)
    assert code == 0 and held in {r["key"] for r in report["removed"]}
    assert cache.get(held) is None


def test_a_killed_writers_temp_dir_is_pruned_after_the_grace_period(caches, capsys):
    _, feats, _, _, dirs = caches
    shard = feats / "ab"
    shard.mkdir(exist_ok=True)
    old, fresh = shard / ".tmp-abababababab-x1", shard / ".tmp-abcdabcdabcd-x2"
    for d in (old, fresh):
        d.mkdir()
        (d / "features.npy").write_bytes(b"0" * 100)
    now = admin._now()
    os.utime(old / "features.npy", (now - 2 * 3600, now - 2 * 3600))
    os.utime(old, (now - 2 * 3600, now - 2 * 3600))
    os.utime(fresh / "features.npy", (now - 60, now - 60))
    os.utime(fresh, (now - 60, now - 60))
    _, rows = _json(["cache", "list", "--kind", "features", *dirs], capsys)
    states = {r["key"]: r["state"] for r in rows}
    assert states["abababababab"] == "partial" and states["abcdabcdabcd"] == "in-use"
    code, report = _json(["cache", "prune", "--all", "--kind", "features", *dirs], capsys)
    assert code == 0 and "abababababab" in {r["key"] for r in report["removed"]}
    assert not old.exists() and fresh.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cache", "prune"], "needs a criterion"),
        (["cache", "prune", "--older-than", "soon"], "duration such as 12h"),
        (["cache", "prune", "--max-size", "lots"], "size such as 500M"),
        (["cache", "list", "--kind", "weights"], "--kind must be one of features, pixels"),
        (["cache", "size", "--by", "color"], "--by must be kind, backbone or dataset"),
        (["cache", "list", "--cache-dir", "does-not-exist"], "is not a directory"),
    ],
)
def test_bad_input_exits_2_and_removes_nothing(caches, capsys, argv, message):
    cache, _, _, keys, dirs = caches
    extra = [] if "--cache-dir" in argv else dirs
    code, out = invoke([*argv, *extra], capsys)
    assert code == 2, out
    assert message in out
    assert all(cache.get(keys[k]) is not None for k in ("resnet-train", "resnet-test", "vit-train"))


def test_the_geometry_cache_default_is_bobs(monkeypatch, tmp_path):
    monkeypatch.setenv("BOB_CACHE_DIR", str(tmp_path))
    assert admin.default_geometry_root() == default_pixel_root()
    assert admin.default_feature_root() == default_cache_root()
    assert admin.parse_size("1.5G") == int(1.5 * 1024**3) and admin.parse_size("512") == 512
    assert admin.parse_duration("2w") == 14 * DAY and admin.parse_duration("90m") == 5400
