"""Reduced-precision extraction and channels_last: features stay float32 and within the stated
tolerance of fp32 for every family (docs/throughput.md has the measured differences)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bob.backbones import resolve_backbone
from bob.backbones.catalog import describe
from bob.backbones.meta import Extraction
from bob.features import extract_pooled

# bf16 autocast against fp32, per image: measured max relative L2 error 0.004-0.009 on timm's test
# models and 0.004-0.010 on random-init resnet18 / vit_small / swin_tiny at 224 px (docs/throughput.md).
BF16_REL_TOL = 0.03
BF16_COS_MIN = 0.999
# channels_last changes the kernels' summation order only.
CHANNELS_LAST_REL_TOL = 1e-4

FAMILIES = [
    ("timm/test_resnet", "cnn", 160),
    ("timm/test_vit", "vit", 160),
    ("timm/swin_tiny_patch4_window7_224", "hierarchical", 224),
]


def _features(name: str, size: int, extraction: Extraction) -> np.ndarray:
    torch.manual_seed(0)
    backbone = resolve_backbone(name, "random", seed=0).build().eval()
    batches = [torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    return extract_pooled(backbone, batches, 4, torch.device("cpu"), extraction=extraction)


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)


@pytest.mark.parametrize(("name", "family", "size"), FAMILIES)
def test_bf16_features_stay_close_to_fp32(name: str, family: str, size: int) -> None:
    assert describe(name)["family"] == family
    fp32 = _features(name, size, Extraction())
    bf16 = _features(name, size, Extraction(precision="bf16"))
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    assert not np.array_equal(bf16, fp32)  # autocast did run in bf16
    cos = (fp32 * bf16).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(bf16, axis=1))
    assert cos.min() >= BF16_COS_MIN
    assert _rel(fp32, bf16).max() <= BF16_REL_TOL


def test_channels_last_matches_fp32() -> None:
    name, _, size = FAMILIES[0]
    plain = _features(name, size, Extraction())
    assert _rel(plain, _features(name, size, Extraction(channels_last=True))).max() <= CHANNELS_LAST_REL_TOL
