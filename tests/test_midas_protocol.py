"""MiDaS under `protocol=bob`: BoB's encoder (bob-classification models/midas_encoder.py) is the timm
SwinV2 inside MiDaS' DPT, loaded from MiDaS' v3.1 release checkpoint, with its final norm, ImageNet
statistics, and its 1000-d head (BoB's retrieval descriptor, bob-retrieval: `featshape=1000`). Tested
offline on a generated checkpoint in MiDaS' layout (timm 0.6 key names under `pretrained.model.`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from bob.backbones import hf_backbone as hf
from bob.backbones import resolve_backbone
from bob.backbones.protocols import with_protocol
from bob.errors import UsageError

NAME = "midas/dpt_swinv2_tiny_256"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A MiDaS-layout dpt_swin2_tiny_256.pt in a weights mirror: the encoder in timm 0.6's names
    (downsample at the end of a stage, `head.` for the classifier) under `pretrained.model.`, beside a
    DPT decoder key that must be ignored."""
    torch.manual_seed(3)
    model = timm.create_model("swinv2_tiny_window16_256", pretrained=False)
    state = {}
    for key, value in model.state_dict().items():
        if any(b in key for b in ("relative_position_index", "relative_coords_table", "attn_mask")):
            continue
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        state[hf.MIDAS_PREFIX + key.replace("head.fc.", "head.")] = value
    state["scratch.output_conv.0.weight"] = torch.zeros(1)
    folder = tmp_path_factory.mktemp("mirror")
    torch.save(state, folder / "dpt_swin2_tiny_256.pt")
    return folder, state


@pytest.fixture
def mirrored(release, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BOB_WEIGHTS_PATH", str(release[0]))
    return release[1]


def test_bob_protocol_loads_midas_release_into_timm_swinv2(mirrored) -> None:
    ref = resolve_backbone(NAME, "pretrained", {"protocol": "bob"})
    assert ref.weights.source == f"url:{hf.MIDAS_RELEASE}/dpt_swin2_tiny_256.pt"
    assert ref.args == {"protocol": "bob"}
    cfg = ref.data_config
    assert (cfg.mean, cfg.std) == IMAGENET and cfg.input_size == 256 and cfg.interpolation == "bicubic"
    model = ref.build()
    assert model.meta.architecture == "midas-timm:swinv2_tiny_window16_256" and model.pooled_dim == 768
    inner = model.model
    assert torch.equal(
        inner.layers[1].downsample.reduction.weight,
        mirrored["pretrained.model.layers.0.downsample.reduction.weight"],
    )
    assert torch.equal(inner.norm.weight, mirrored["pretrained.model.norm.weight"])
    head, space = model.native_classifier()
    assert space == "imagenet-1k" and torch.equal(head.weight, mirrored["pretrained.model.head.weight"])
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        pooled = model.forward_pooled(x)
        last = model.forward_features(x, [-1])[0]
        descriptor = head(pooled)
    # The final LayerNorm, then the global average: what the transformers conversion leaves out.
    normed = F.layer_norm(
        last.permute(0, 2, 3, 1), (768,), inner.norm.weight, inner.norm.bias, inner.norm.eps
    )
    assert torch.allclose(pooled, normed.mean(dim=(1, 2)), atol=1e-5)
    assert descriptor.shape == (2, 1000), "BoB's MiDaS retrieval descriptor is the 1000-d head output"
    assert [(i.channels, i.stride) for i in model.feature_info] == [(96, 4), (192, 8), (384, 16), (768, 32)]


def test_with_protocol_turns_a_midas_ref_into_bobs_encoder() -> None:
    default = resolve_backbone(NAME, "random")
    assert default.args == {} and default.data_config.mean == (0.5, 0.5, 0.5)
    ref = with_protocol(default, "bob")
    assert ref.args == {"protocol": "bob"} and (ref.data_config.mean, ref.data_config.std) == IMAGENET
    assert ref.name == NAME and ref.catalog == default.catalog and ref.weights.kind == "random"
    assert ref.identity() != default.identity()
    model = ref.build(64)
    with torch.no_grad():
        assert model.forward_pooled(torch.randn(1, 3, 64, 64)).shape == (1, 768)
    assert model.native_classifier()[0].out_features == 1000
    sam = resolve_backbone("sam/vit_base", "random")
    assert with_protocol(sam, "bob") is sam, "SAM's encoder is BoB's already"


def test_midas_args_are_checked() -> None:
    with pytest.raises(UsageError, match="protocol"):
        resolve_backbone(NAME, "random", {"protocol": "dpt"})
    with pytest.raises(UsageError, match="only protocol"):
        resolve_backbone(NAME, "random", {"recipe": "x"})
    with pytest.raises(UsageError, match="no backbone arguments"):
        resolve_backbone("sam/vit_base", "random", {"protocol": "bob"})
