"""The curated backbone catalog: valid entries, and the contract over every entry with random weights.

Entries above SLOW_PARAMS parameters run with `-m slow` (they fit in CPU memory but take longer to
build); none is skipped.
"""

from __future__ import annotations

import math

import pytest
import torch

from bob.backbones import resolve_backbone
from bob.backbones.catalog import FAMILIES, catalog_entries, describe

SLOW_PARAMS = 100_000_000
SIZE = 64
ENTRIES = {e["name"]: e for e in catalog_entries()}


def _params(name: str):
    marks = [pytest.mark.slow] if ENTRIES[name]["params"] > SLOW_PARAMS else []
    return pytest.param(name, marks=marks, id=name)


CASES = [_params(name) for name in ENTRIES]


def test_entries_are_unique_and_complete():
    names = [e["name"] for e in catalog_entries()]
    assert len(names) == len(set(names))
    for entry in catalog_entries():
        assert entry["family"] in FAMILIES
        assert isinstance(entry["params"], int) and entry["params"] > 0
        assert set(entry.get("groups", [])) <= {"bob", "seed-papers", "newer"}
        assert describe(entry["name"])["method"] == entry["method"]


@pytest.mark.parametrize(
    ("group", "needles"),
    [
        ("bob", ["resnet50", "convnext_base", "swinv2_tiny", "vit_small_patch16_224", "vit_large"]),
        ("seed-papers", ["ecaresnet", "resnetrs", "pvt_v2", "ese_vovnet", "hgnet"]),
        ("newer", ["dinov2", "dinov3", "eva02", "siglip_224.webli", "siglip_224.v2", "convnextv2"]),
    ],
)
def test_catalog_covers_the_backbones_users_ask_for(group, needles):
    names = [e["name"] for e in catalog_entries() if group in e.get("groups", [])]
    for needle in needles:
        assert any(needle in n for n in names), f"no {group} entry matches {needle}"


@pytest.mark.parametrize("name", CASES)
def test_catalog_params_match_the_architecture(name):
    """Built at its native resolution, the backbone has exactly the catalog's parameter count."""
    model = resolve_backbone(name, weights="random").build()
    assert model.meta.params == sum(p.numel() for p in model.parameters()) == ENTRIES[name]["params"]
    assert model.meta.meta_source == "catalog" and model.meta.family == ENTRIES[name]["family"]


@pytest.mark.parametrize("name", CASES)
def test_catalog_contract(name):
    model = resolve_backbone(name, weights="random").build(SIZE)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        pooled = model.forward_pooled(x)
        again = model.forward_pooled(x)
        single = model.forward_pooled(x[:1])
        maps = model.forward_features(x)
    assert pooled.shape == (2, model.pooled_dim) and torch.isfinite(pooled).all()
    assert torch.equal(pooled, again)
    assert torch.allclose(single, pooled[:1], atol=1e-4, rtol=1e-3), "batch-size invariance"
    assert len(maps) == len(model.feature_info) > 0
    for fmap, info in zip(maps, model.feature_info, strict=True):
        assert fmap.shape[:2] == (2, info.channels)
        assert fmap.shape[2] in (SIZE // info.stride, math.ceil(SIZE / info.stride))
        assert torch.isfinite(fmap).all()
