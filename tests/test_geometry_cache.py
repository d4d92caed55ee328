"""The geometry cache: one decode per (split, geometry), shared exactly by every backbone with that
geometry, keyed apart from everything that changes the pixels, and refused when damaged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from task_runs import TINY

from bob import api
from bob.backbones.meta import DataConfig
from bob.cache import FeatureCache
from bob.data import load_split
from bob.errors import CacheCorruptError
from bob.pixels import PixelCache, pixel_key

TASK = "knn/shapes-mini"


def _run(options, seed: int, geometry_cache=None, **kwargs):
    return api.run(
        TINY, TASK, "random", seed, device="cpu", num_workers=0, results_dir=options.results_dir,
        cache_dir=options.cache_dir, geometry_cache=geometry_cache, overwrite=True, **kwargs,
    )[0].result  # fmt: skip


def _features(options, result) -> dict[str, np.ndarray]:
    cache = FeatureCache(options.cache_dir)
    return {split: cache.get(key).features for split, key in result.cache["keys"].items()}


def test_backbones_with_one_geometry_decode_once_and_read_the_same_pixels(options, tmp_path) -> None:
    pixels = tmp_path / "pixels"
    first = _run(options, 0, pixels)
    second = _run(options, 1, pixels)  # another random init: other features, same eval geometry
    assert first.ok and second.ok
    assert first.cache["geometry"] == {"decodes": 2, "hits": 0}  # train and test, decoded and stored
    assert second.cache["geometry"] == {"decodes": 0, "hits": 2}
    # Exact: features read through the cache equal the features of a run without it, bit for bit.
    through_cache = _features(options, second)
    for key in second.cache["keys"].values():
        FeatureCache(options.cache_dir).entry_dir(key).rename(tmp_path / f"moved-{key}")
    plain = _run(options, 1)
    assert "geometry" not in plain.cache and plain.cache["extractions"] == 2
    for split, features in _features(options, plain).items():
        assert np.array_equal(features, through_cache[split])


def test_the_key_follows_the_pixels_not_the_normalisation() -> None:
    split = load_split("shapes-mini", "test")
    cfg = DataConfig(64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", 1.0)
    key = pixel_key(split, cfg)
    assert pixel_key(split, dataclasses.replace(cfg, mean=(0.5,) * 3, std=(0.5,) * 3)) == key
    for change in (
        {"interpolation": "bicubic"},
        {"pipeline": "tensor"},
        {"crop_pct": 0.875},
        {"input_size": 56},
    ):
        assert pixel_key(split, dataclasses.replace(cfg, **change)) != key
    assert pixel_key(load_split("shapes-mini", "train"), cfg) != key
    tensor = dataclasses.replace(cfg, pipeline="tensor")
    assert pixel_key(split, tensor, "cuda:0") != pixel_key(split, tensor, "cpu")  # nvjpeg decodes apart
    assert pixel_key(split, cfg, "cuda:0") == key  # PIL decodes on the CPU whatever the model's device


def test_a_damaged_entry_fails_the_run_and_stores_no_features(options, tmp_path) -> None:
    pixels = tmp_path / "pixels"
    assert _run(options, 0, pixels).ok
    entries = sorted(PixelCache(pixels).root.glob("*/*/pixels.npy"))
    assert len(entries) == 2
    for path in entries:  # flip one pixel value in the data (past the .npy header)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    damaged = _run(options, 1, pixels)
    assert damaged.status == "failed" and damaged.error["type"] == "CacheCorruptError"
    assert damaged.cache["extractions"] == 0  # nothing computed from those pixels was stored
    entry = PixelCache(pixels).get(entries[0].parent.name)
    with pytest.raises(CacheCorruptError, match="do not match the checksum"):
        list(entry.batches(64, torch.device("cpu")))


SWEEP = """
name: geometry
grids:
  - name: tiny
    backbones: [timm/test_resnet, timm/test_efficientnet, timm/test_vit]
    weights: [random]
    seeds: [0, 1]
    tasks:
      - tasks: [knn/shapes-mini, ncm/shapes-mini]
"""


def test_the_dry_run_predicts_the_decodes_of_a_shared_sweep(tmp_path) -> None:
    from bob.sweep.geometry import geometry_report

    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    plan = api.sweep_plan(path)
    report = geometry_report(plan)
    # 3 backbones x 2 init seeds; knn and ncm read one extraction. At shapes-mini's 64 px and crop 1.0,
    # test_efficientnet and test_vit share a geometry (bicubic, other mean/std); test_resnet is bilinear.
    assert report.extractions == plan.extractions == 6
    assert report.geometries == 2 and report.unsized == [] and report.unresolved == {}
    assert report.cache_bytes == 2 * (200 + 100) * 3 * 64 * 64
    summary = api.sweep(
        plan, results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu", num_workers=0,
        geometry_cache=tmp_path / "pixels",
    )  # fmt: skip
    assert summary.exit_code == 0
    results = [o.result for o in api.load_outcomes(plan.specs(), tmp_path / "results")]
    decodes = sum(r.cache["geometry"]["decodes"] for r in results)
    assert decodes == report.geometries * 2  # each geometry decoded once per split (train, test)
    assert len(list((tmp_path / "pixels").glob("*/*/pixels.npy"))) == decodes
