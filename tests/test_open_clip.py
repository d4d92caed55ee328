"""The open_clip adapter: the contract on its three kinds of image tower (random weights, tiny inputs),
pre- vs post-projection pooling, names and tags, weights files (open_clip and OpenAI TorchScript),
offline fail-fast, the lazily built text tower, and the curated CLIP entries."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
import yaml

from bob.backbones import build_backbone, resolve_backbone
from bob.backbones.open_clip_backbone import build_visual_tower, tower_family
from bob.errors import UsageError, WeightsError

SIZE = 64
TINY = "open_clip/ViT-S-32-alt"  # the smallest native text tower (width 256, 10 layers)
ENTRIES = yaml.safe_load((Path(__file__).parents[1] / "backbones" / "entries" / "open_clip.yaml").read_text())


def _spatial_ok(size: int, stride: int, got: int) -> bool:
    return got in (size // stride, math.ceil(size / stride))


@pytest.mark.parametrize("name", ["open_clip/RN50", TINY, "open_clip/convnext_tiny"])
def test_contract(name: str) -> None:
    model = build_backbone(name, weights="random", input_size=SIZE)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        pooled, maps, again = model.forward_pooled(x), model.forward_features(x), model.forward_pooled(x)
        last = model.forward_features(x, levels=[-1])
        picked = model.forward_features(x, levels=[2, 0])
    assert pooled.shape == (2, model.pooled_dim) and torch.isfinite(pooled).all()
    assert torch.equal(pooled, again), "eval-mode forward must be deterministic"
    assert len(maps) == len(model.feature_info) > 0
    for fmap, info in zip(maps, model.feature_info, strict=True):
        assert fmap.shape[:2] == (2, info.channels) and torch.isfinite(fmap).all()
        assert _spatial_ok(SIZE, info.stride, fmap.shape[2]) and _spatial_ok(SIZE, info.stride, fmap.shape[3])
    strides = [i.stride for i in model.feature_info]
    assert strides == sorted(strides)
    assert torch.allclose(last[0], maps[-1]) and torch.allclose(picked[0], maps[2])
    assert model.meta.params == sum(p.numel() for p in model.parameters())
    assert "pooled=pre" in model.meta.architecture and model.meta.method == "random"


def test_resnet_levels_are_the_four_stages():
    model = build_backbone("open_clip/RN50", weights="random", input_size=SIZE)
    assert [(i.channels, i.stride) for i in model.feature_info] == [
        (256, 4),
        (512, 8),
        (1024, 16),
        (2048, 32),
    ]
    assert model.meta.family == "cnn"


def test_attention_pool_matches_open_clip_and_takes_any_grid():
    from open_clip.modified_resnet import AttentionPool2d

    from bob.backbones.open_clip_backbone import _attention_pool

    torch.manual_seed(0)
    pool = AttentionPool2d(spacial_dim=3, embed_dim=64, num_heads=4, output_dim=32).eval()
    x = torch.randn(2, 64, 3, 3)
    with torch.no_grad():
        assert torch.allclose(_attention_pool(pool, x, project=True), pool(x), atol=1e-5)
        pre = _attention_pool(pool, x, project=False)
        assert pre.shape == (2, 64) and torch.allclose(pool.c_proj(pre), pool(x), atol=1e-5)
        assert _attention_pool(pool, torch.randn(2, 64, 5, 4), project=True).shape == (2, 32)


@pytest.mark.parametrize(
    ("name", "dims"),
    [
        ("open_clip/RN50", (2048, 1024)),
        ("open_clip/ViT-B-32", (768, 512)),
        ("open_clip/convnext_tiny", (768, 1024)),
    ],
)
def test_pre_and_post_projection(name: str, dims: tuple[int, int]) -> None:
    """post = open_clip's own image-tower output (the joint embedding); pre = the same without projection."""
    model = build_backbone(name, weights="random", input_size=SIZE)
    assert model.pooled_dim == dims[0]
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        pre, post = model.forward_pooled(x), model.encode_image(x)
        assert pre.shape == (1, dims[0]) and post.shape == (1, dims[1])
        if name.endswith("RN50"):  # open_clip's own attention pool only runs at the trained 224 px
            assert torch.allclose(model.visual.attnpool.c_proj(pre), post, atol=1e-4)
        else:
            assert torch.allclose(post, model.visual(x), atol=1e-5)
        if name.endswith("ViT-B-32"):
            assert torch.allclose(pre @ model.visual.proj, post, atol=1e-5)


def test_pooled_post_is_a_backbone_arg():
    model = build_backbone(TINY, weights="random", input_size=SIZE, args={"pooled": "post"})
    assert model.meta.architecture.endswith("pooled=post)") and model.pooled_dim == 256
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(model.forward_pooled(x), model.visual(x), atol=1e-5)


def test_random_tower_is_the_one_create_model_builds():
    model = build_backbone(TINY, weights="random", seed=3)
    torch.manual_seed(3)
    reference = open_clip.create_model("ViT-S-32-alt", pretrained=None).visual
    ours, theirs = model.visual.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    other = build_backbone(TINY, weights="random", seed=4)
    assert not torch.equal(other.visual.conv1.weight, model.visual.conv1.weight)


def test_names_tags_and_transforms():
    ref = resolve_backbone("open_clip/ViT-L-14:laion2b_s32b_b82k", weights="random")
    assert ref.resolved_name == "open_clip/ViT-L-14:laion2b_s32b_b82k" and ref.args == {"pooled": "pre"}
    assert ref.data_config.mean == (0.5, 0.5, 0.5) and ref.data_config.crop_pct == 1.0
    squash = resolve_backbone("open_clip/PE-Core-T-16-384:meta", weights="random").data_config
    assert (squash.input_size, squash.crop_mode, squash.interpolation) == (384, "squash", "bilinear")
    bare = resolve_backbone("open_clip/ViT-B-32", weights="random")
    assert bare.resolved_name == "open_clip/ViT-B-32" and bare.data_config.interpolation == "bicubic"
    # Not in the static index as typed; the live check and open_clip's tag normalisation accept it.
    live = resolve_backbone("open_clip/ViT-B-16:LAION2B-S34B-B88K", weights="random")
    assert live.resolved_name == "open_clip/ViT-B-16:laion2b_s34b_b88k"


def test_bad_names_and_args():
    with pytest.raises(UsageError, match="ViT-B-16"):
        resolve_backbone("open_clip/ViT-B-17", weights="random")
    with pytest.raises(UsageError, match=r"no pretrained tag 'laion9b'.*laion2b_s34b_b88k"):
        resolve_backbone("open_clip/ViT-B-16:laion9b", weights="random")
    with pytest.raises(UsageError, match=r"need a tag.*openai"):
        resolve_backbone("open_clip/RN50", weights="pretrained")
    with pytest.raises(WeightsError, match="--weights random"):
        resolve_backbone("open_clip/ViT-S-32-alt", weights="pretrained")
    with pytest.raises(UsageError, match="pooled"):
        resolve_backbone("open_clip/RN50", weights="random", args={"pooled": "mid"})
    with pytest.raises(UsageError, match="only the arg 'pooled'"):
        resolve_backbone("open_clip/RN50", weights="random", args={"img_size": 64})


def test_pretrained_fails_fast_offline():
    start = time.monotonic()
    with pytest.raises(WeightsError, match=r"open_clip_model\.safetensors.*offline"):
        resolve_backbone("clip/vit_b16_laion2b", weights="pretrained")
    assert time.monotonic() - start < 5


def test_pretrained_file_from_the_weights_path(tmp_path, monkeypatch):
    """A mirror holding the hub file is found by name, verified, and its image tower loaded strictly."""
    from safetensors.torch import save_file

    torch.manual_seed(7)
    source = build_visual_tower("PE-Core-T-16-384")
    state = {f"visual.{k}": v.contiguous() for k, v in source.state_dict().items()}
    state["logit_scale"] = torch.tensor(2.0)  # text-side keys of a full checkpoint are ignored
    (tmp_path / "timm" / "PE-Core-T-16-384").mkdir(parents=True)
    save_file(state, str(tmp_path / "timm" / "PE-Core-T-16-384" / "open_clip_model.safetensors"))
    monkeypatch.setenv("BOB_WEIGHTS_PATH", str(tmp_path))
    ref = resolve_backbone("open_clip/PE-Core-T-16-384:meta", weights="pretrained")
    assert ref.weights.source == "hf-hub:timm/PE-Core-T-16-384/open_clip_model.safetensors"
    model = ref.build()
    assert model.meta.method == "vision-language"
    theirs = source.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.visual.state_dict().items())


def test_openai_release_is_checked_against_the_hash_in_its_url(tmp_path, monkeypatch):
    (tmp_path / "RN50.pt").write_bytes(b"not the OpenAI file")
    monkeypatch.setenv("BOB_WEIGHTS_PATH", str(tmp_path))
    with pytest.raises(
        WeightsError, match="afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"
    ):
        resolve_backbone("clip/rn50_openai", weights="pretrained")


class _Traced(torch.nn.Module):
    """Stands in for OpenAI's TorchScript release: `visual.*` fp16 weights plus non-tensor extras."""

    def __init__(self, visual: torch.nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.register_buffer("input_resolution", torch.tensor(224))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual.stem(x)


def test_torchscript_archive_loads_like_openais_release(tmp_path):
    torch.manual_seed(1)
    source = build_visual_tower("RN50").half()
    path = tmp_path / "RN50.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated, but it is OpenAI's release format
        torch.jit.trace(_Traced(source).float().eval(), torch.randn(1, 3, 32, 32)).half().save(str(path))
    model = build_backbone("open_clip/RN50:openai", weights=str(path), input_size=SIZE)
    assert model.meta.weights["kind"] == "file" and model.meta.method == "unknown"
    theirs = source.float().state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.visual.state_dict().items())


def test_local_checkpoint_and_lazy_text_tower(tmp_path, monkeypatch):
    """`--weights PATH` loads the image tower strictly now and the text tower only when asked."""
    torch.manual_seed(5)
    full = open_clip.create_model("ViT-S-32-alt", pretrained=None).eval()
    path = tmp_path / "my_clip.pt"
    torch.save(full.state_dict(), path)
    calls = []
    real_create = open_clip.create_model
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: calls.append(a) or real_create(*a, **k))
    model = build_backbone(TINY, weights=str(path), args={"pooled": "post"})
    assert calls == [], "building the backbone must not build the text tower"
    assert not any("token_embedding" in k for k in model.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.forward_pooled(x), full.encode_image(x), atol=1e-5)
    tokenizer, text = model.text_encoder()
    assert len(calls) == 1 and model.text_encoder()[1] is text  # built once, then reused
    assert not any(p is q for p in text.parameters() for q in model.parameters())
    tokens = tokenizer(["a photo of a cat", "a dog"])
    with torch.no_grad():
        assert torch.allclose(text(tokens), full.encode_text(tokens), atol=1e-5)
        assert text.encode(["a dog"]).shape == (1, 256)  # ViT-S-32-alt's joint width


def test_random_text_tower_matches_the_full_random_model():
    model = build_backbone(TINY, weights="random", seed=2)
    torch.manual_seed(2)
    full = open_clip.create_model("ViT-S-32-alt", pretrained=None).eval()
    tokenizer, text = model.text_encoder()
    tokens = tokenizer(["a cat"])
    with torch.no_grad():
        assert torch.allclose(
            text(tokens, normalize=True), full.encode_text(tokens, normalize=True), atol=1e-5
        )


def test_a_file_for_another_architecture_is_refused(tmp_path):
    path = tmp_path / "vit_s32.pt"
    torch.save(build_visual_tower("ViT-S-32-alt").state_dict(), path)  # a tower-only state dict
    with pytest.raises(WeightsError, match="does not match the architecture"):
        build_backbone("open_clip/RN50", weights=str(path))


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["name"])
def test_catalog_entries_resolve_and_count_their_params(entry: dict) -> None:
    ref = resolve_backbone(entry["name"], weights="random")
    assert ref.resolved_name == f"open_clip/{entry['target']}"
    assert ref.args["pooled"] == (entry.get("args") or {}).get("pooled", "pre")
    arch = entry["target"].split(":")[0]
    with torch.device("meta"):
        tower = build_visual_tower(arch)
    assert sum(p.numel() for p in tower.parameters()) == entry["params"]
    assert tower_family(tower) == entry["family"] and "bob" in entry["groups"]


def test_a_catalog_entry_builds_with_its_facts():
    model = build_backbone("clip/rn50_openai", weights="random", input_size=SIZE)
    assert (
        model.meta.params == 38316896 and model.meta.family == "cnn" and model.meta.meta_source == "catalog"
    )
    assert model.pooled_dim == 1024  # BoB's CLIP-ResNet features: the attention pool with its projection
    with torch.no_grad():
        assert model.forward_pooled(torch.randn(1, 3, SIZE, SIZE)).shape == (1, 1024)
