"""The transformers adapter (MiDaS DPT-SwinV2 and SAM encoders) on tiny configs built here: the contract,
loading from a mirrored hub snapshot, checkpoint files, offline failure, and the catalog's params."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from bob.backbones import hf_backbone as hf
from bob.backbones import resolve_backbone
from bob.backbones.catalog import catalog_entries
from bob.errors import UsageError, WeightsError
from bob.weights import WeightsRequest

SIZE = 64
SWIN = {
    "model_type": "swinv2",
    "image_size": 32,
    "patch_size": 4,
    "embed_dim": 8,
    "depths": [1, 1, 1, 1],
    "num_heads": [1, 1, 2, 2],
    "window_size": 2,
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}
SAM_VISION = {
    "model_type": "sam_vision_model",
    "hidden_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
    "window_size": 2,
    "global_attn_indexes": [1],
    "output_channels": 8,
    "mlp_dim": 32,
}
TINY = {
    "test/tiny-dpt": {"model_type": "dpt", "backbone_config": SWIN, "neck_hidden_sizes": [8, 16, 32, 64]},
    "test/tiny-sam": {"model_type": "sam", "vision_config": SAM_VISION},
}


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tiny architecture configs standing in for the ones bob ships."""
    for repo, config in TINY.items():
        directory = tmp_path / "hf_configs" / repo.replace("/", "--")
        directory.mkdir(parents=True)
        (directory / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(
        hf, "shipped_config_dir", lambda kind, repo: tmp_path / kind / repo.replace("/", "--")
    )
    return tmp_path


def _full_model(repo: str) -> torch.nn.Module:
    from transformers import DPTConfig, DPTForDepthEstimation, SamConfig, SamModel

    torch.manual_seed(3)
    if repo == "test/tiny-dpt":
        config = DPTConfig(
            backbone_config=SWIN, neck_hidden_sizes=[8, 16, 32, 64], fusion_hidden_size=8, head_hidden_size=8
        )
        return DPTForDepthEstimation(config).eval()
    config = SamConfig(
        vision_config=SAM_VISION,
        prompt_encoder_config={"hidden_size": 8, "image_size": 32, "patch_size": 8, "mask_input_channels": 4},
        mask_decoder_config={
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "mlp_dim": 16,
            "iou_head_hidden_dim": 8,
        },
    )
    return SamModel(config).eval()


def _build(repo: str, weights: str = "random", seed: int = 0, size: int = SIZE):
    request = WeightsRequest.parse(weights)
    return hf.resolve(repo, request, {}, seed).build(size)


@pytest.mark.parametrize("repo", sorted(TINY))
def test_contract(shipped: Path, repo: str) -> None:
    model = _build(repo)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        pooled, maps = model.forward_pooled(x), model.forward_features(x)
        again = _build(repo).forward_pooled(x)
        other = _build(repo, seed=1).forward_pooled(x)
    assert pooled.shape == (2, model.pooled_dim) and torch.isfinite(pooled).all()
    assert torch.equal(pooled, again), "the same seed must give the same model"
    assert not torch.allclose(pooled, other)
    assert len(maps) == len(model.feature_info) > 0
    for fmap, info in zip(maps, model.feature_info, strict=True):
        assert fmap.shape[:2] == (2, info.channels) and torch.isfinite(fmap).all()
        assert fmap.shape[2] in (SIZE // info.stride, math.ceil(SIZE / info.stride))
    assert torch.allclose(pooled, maps[-1].mean(dim=(2, 3)), atol=1e-6)
    assert model.pooled_dim == model.feature_info[-1].channels
    assert model.meta.params == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x, levels=[-1])[0], maps[-1])


def test_feature_info_per_family(shipped: Path) -> None:
    dpt, sam = _build("test/tiny-dpt"), _build("test/tiny-sam")
    assert [(i.channels, i.stride) for i in dpt.feature_info] == [(8, 4), (16, 8), (32, 16), (64, 32)]
    assert [i.module for i in sam.feature_info] == ["layers.1", "layers.2"]  # global block + last block
    assert {i.stride for i in sam.feature_info} == {8}
    assert dpt.meta.family == "hierarchical" and sam.meta.family == "vit"
    assert not any("neck" in k for k in sam.state_dict())


@pytest.mark.parametrize("repo", sorted(TINY))
def test_pretrained_from_mirror_matches_transformers(
    shipped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo: str
) -> None:
    full = _full_model(repo)
    full.save_pretrained(tmp_path / "mirror" / repo)
    monkeypatch.setenv("BOB_WEIGHTS_PATH", str(tmp_path / "mirror"))
    ref = hf.resolve(repo, WeightsRequest("pretrained"), {}, 0)
    assert ref.weights.kind == "pretrained" and ref.weights.source == f"hf-hub:{repo}"
    assert len(ref.weights.sha256) == 64
    model = ref.build()
    x = torch.randn(1, 3, 32, 32)  # the configs' native size, which SAM's own forward insists on
    with torch.no_grad():
        if repo == "test/tiny-dpt":
            expected = full.backbone(pixel_values=x).feature_maps
            for ours, theirs in zip(model.forward_features(x), expected, strict=True):
                assert torch.allclose(ours, theirs, atol=1e-5)
        else:  # the neck applied to our last level must give SAM's image embedding
            last = model.forward_features(x, levels=[-1])[0]
            neck = full.vision_encoder.neck(last.permute(0, 2, 3, 1))
            assert torch.allclose(neck, full.vision_encoder(x).last_hidden_state, atol=1e-5)
    assert model.meta.method == ("depth" if repo == "test/tiny-dpt" else "segmentation")


@pytest.mark.parametrize("repo", sorted(TINY))
def test_checkpoint_file_roundtrip(shipped: Path, tmp_path: Path, repo: str) -> None:
    """A full transformers state dict (neck and heads included) loads strictly into the encoder."""
    from safetensors.torch import save_file

    full = _full_model(repo)
    path = tmp_path / "full.pt"
    torch.save(full.state_dict(), path)
    model = _build(repo, weights=str(path), size=32)
    pretrained_like = _build(repo, seed=5, size=32)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model.forward_pooled(x), pretrained_like.forward_pooled(x))
        own = tmp_path / "own.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(own))
        assert torch.equal(_build(repo, weights=str(own), size=32).forward_pooled(x), model.forward_pooled(x))


def test_pretrained_from_hf_cache_is_verified_against_blob_names(shipped: Path, tmp_path: Path) -> None:
    """A file in the HF cache links to a blob named by the hub's sha256: hashing it verifies it."""
    import hashlib
    import shutil

    from huggingface_hub import constants

    full = _full_model("test/tiny-dpt")
    full.save_pretrained(tmp_path / "saved")
    repo_dir = Path(constants.HF_HUB_CACHE) / "models--test--cached-dpt"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "blobs").mkdir()
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    try:
        for name in ("config.json", "model.safetensors"):
            data = (tmp_path / "saved" / name).read_bytes()
            blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (snapshot / name).symlink_to(blob)
        ref = hf.resolve("test/cached-dpt", WeightsRequest("pretrained"), {}, 0)
        assert ref.weights.source == f"hf-hub:test/cached-dpt@{commit}"
        assert ref.weights.verified == "sha256"
        assert ref.build().meta.params == sum(p.numel() for p in full.backbone.parameters())
    finally:
        shutil.rmtree(repo_dir)


def test_offline_fails_fast_naming_the_repo() -> None:
    start = time.monotonic()
    with pytest.raises(WeightsError, match="Intel/dpt-swinv2-tiny-256"):
        resolve_backbone("midas/dpt_swinv2_tiny_256", weights="pretrained")
    assert time.monotonic() - start < 5


def test_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(WeightsError, match="facebook/sam-vit-base"):
        hf.resolve("facebook/sam-vit-base", WeightsRequest("pretrained"), {}, 0)
    assert time.monotonic() - start < 5


def test_rejects_args_and_unknown_repos() -> None:
    with pytest.raises(UsageError, match="no backbone arguments"):
        hf.resolve("facebook/sam-vit-base", WeightsRequest("random"), {"x": 1}, 0)
    with pytest.raises(UsageError, match="ships no architecture config"):
        hf.resolve("someone/else", WeightsRequest("random"), {}, 0)


@pytest.mark.parametrize(
    "entry", [e for e in catalog_entries() if e["adapter"] == "hf"], ids=lambda e: e["name"]
)
def test_catalog_params_match_shipped_architecture(entry: dict) -> None:
    with torch.device("meta"):  # the real architectures, without allocating their weights
        model = resolve_backbone(entry["name"], weights="random").build()
    assert model.meta.params == entry["params"]
    assert model.meta.family == entry["family"] and model.meta.meta_source == "catalog"
    assert model.data_config.input_size in (256, 384, 1024)
