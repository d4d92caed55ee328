"""Self-supervised checkpoints in their original release layouts: synthetic files written the way each
release lays its keys out (wrapper dicts, DDP prefixes, momentum encoders, heads, decoders) must load
strictly through bob and reproduce the source model's features; anything else is refused by name.

ViT-L and ConvNeXt-XL stay out of the fast tests: their layouts are exercised on small siblings of
the same family (ViT-Ti for MAE, ConvNeXt-Atto for VICRegL), and the slow test builds the real ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from bob.backbones import build_backbone, resolve_backbone
from bob.backbones import ssl_checkpoints as ssl
from bob.backbones.catalog import catalog_entries
from bob.errors import WeightsError
from bob.weights import WeightsRequest, sha256_file

ENTRIES = {e["name"]: e for e in catalog_entries() if e["adapter"] == "ssl"}
ATTO = ((2, 2, 6, 2), (40, 80, 160, 320))
XLARGE = ((3, 3, 27, 3), (256, 512, 1024, 2048))


def _sibling(name: str, target: str, fmt: str, source: str) -> dict[str, Any]:
    """A catalog entry for a small architecture of a release's family, in the same key layout."""
    return {
        **ENTRIES[name],
        "name": f"test/{target}-{fmt}",
        "target": target,
        "args": {"format": fmt},
        "source": source,
        "sha256": None,
    }


MAE_TINY = _sibling(
    "mae/vit_base_patch16", "vit_tiny_patch16_224", "mae_vit", ENTRIES["mae/vit_base_patch16"]["source"]
)
MOCOV3_TINY = _sibling(
    "mocov3/vit_small", "vit_tiny_patch16_224", "mocov3_vit", ENTRIES["mocov3/vit_small"]["source"]
)
VICREGL_ATTO = _sibling(
    "vicregl/convnext_xlarge_alpha0.75",
    "convnext_atto",
    "vicregl_convnext",
    ENTRIES["vicregl/convnext_xlarge_alpha0.75"]["source"],
)


def _load(entry: dict[str, Any] | str, weights: str, input_size: int | None = None):
    """Through bob's registry for catalog names; straight through the adapter for test siblings."""
    if isinstance(entry, str):
        return build_backbone(entry, weights=weights, input_size=input_size)
    request = WeightsRequest.parse(weights)
    return ssl.resolve(entry["target"], request, {}, 0, catalog=entry).build(input_size)


def _jitter(model: nn.Module) -> nn.Module:
    """Make every float tensor (BN statistics and layer norms included) matter to the output."""
    torch.manual_seed(1)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.02 * torch.randn_like(t))
    return model.eval()


def _timm_source(entry: dict[str, Any]) -> nn.Module:
    fmt = ssl.FORMATS[entry["args"]["format"]]
    extra = {k: v for k, v in entry["args"].items() if k != "format"}
    return _jitter(ssl.create_model(entry["target"], {**fmt.model_args, **extra}))


# ------------------------------------------------------------- sources in the original layouts


def _mocov3(entry: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    model = _timm_source(entry)
    dim = model.num_features
    state = {f"module.base_encoder.{k}": v for k, v in model.state_dict().items()}
    state |= {  # the projection MLP in place of the classifier, the momentum encoder, the predictor
        "module.base_encoder.head.0.weight": torch.randn(16, dim),
        "module.base_encoder.head.1.running_mean": torch.zeros(16),
        "module.base_encoder.head.1.num_batches_tracked": torch.tensor(5),
        "module.momentum_encoder.cls_token": torch.randn(1, 1, dim),
        "module.momentum_encoder.blocks.0.attn.qkv.weight": torch.randn(3 * dim, dim),
        "module.predictor.0.weight": torch.randn(16, 16),
    }
    optimizer = {"state": {}, "param_groups": [{"lr": 1.5e-4, "params": [0, 1]}]}
    return model, {"epoch": 300, "arch": "vit_small", "state_dict": state, "optimizer": optimizer}


def _dino_vit(entry: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    model = _timm_source(entry)
    state = model.state_dict()
    # DINO's own ViT names, checked here so a timm rename cannot go unnoticed.
    assert {
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.11.attn.qkv.bias",
        "norm.weight",
    } <= set(state)
    return model, state


def _mae(entry: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    model = _timm_source(entry)
    state = dict(model.state_dict())
    assert "norm.weight" in state and "fc_norm.weight" not in state
    state |= {
        "mask_token": torch.zeros(1, 1, 512),
        "decoder_embed.weight": torch.randn(512, model.num_features),
        "decoder_pos_embed": torch.zeros(1, 197, 512),
        "decoder_blocks.0.norm1.weight": torch.ones(512),
        "decoder_norm.weight": torch.ones(512),
        "decoder_pred.weight": torch.randn(768, 512),
    }
    return model, {"model": state}


def _torchvision_resnet50() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    _jitter(model)
    return model


def _dino_resnet(entry: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    model = _torchvision_resnet50()
    state = model.state_dict()  # with torchvision's classifier, which the format drops
    model.fc = nn.Identity()
    return model, state


def _vicreg_resnet(entry: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    # VICReg's ResNet pads by 1 then convolves with padding 2: torchvision's stem, same names, no fc.
    model = _torchvision_resnet50()
    model.fc = nn.Identity()
    return model, model.state_dict()


def _vicreg_full(entry: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    model, backbone = _vicreg_resnet(entry)
    state = {f"module.backbone.{k}": v for k, v in backbone.items()}
    state |= {
        "module.projector.0.weight": torch.randn(32, 2048),
        "module.projector.1.running_var": torch.ones(32),
    }
    return model, {"epoch": 1000, "model": state, "optimizer": {"state": {}, "param_groups": []}}


class _ChannelsFirstNorm(nn.Module):
    """LayerNorm over channels of an NCHW map, computed the way the original ConvNeXt code does."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        x = (x - u) / torch.sqrt((x - u).pow(2).mean(1, keepdim=True) + 1e-6)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class _Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(nn.functional.gelu(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class _VICRegLConvNeXt(nn.Module):
    """VICRegL's ConvNeXt module tree (no layer scale); its linear-eval feature is the mean of the
    final LayerNorm applied to every position."""

    def __init__(self, depths: tuple[int, ...], dims: tuple[int, ...]) -> None:
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), _ChannelsFirstNorm(dims[0]))
        downs = [
            nn.Sequential(_ChannelsFirstNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            for i in range(3)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downs])
        self.stages = nn.ModuleList(
            nn.Sequential(*[_Block(d) for _ in range(n)]) for n, d in zip(depths, dims, strict=True)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        return self.norm(x.flatten(2).transpose(1, 2)).mean(1)


def _vicregl(depths_dims: tuple) -> Callable[[dict[str, Any]], tuple[nn.Module, dict[str, Any]]]:
    def make(entry: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
        model = _jitter(_VICRegLConvNeXt(*depths_dims))
        return model, model.state_dict()

    return make


CASES = {
    "mocov3/vit_small": ("mocov3/vit_small", _mocov3, "vit-s-300ep.pth.tar"),
    "dino/vit_small_patch16": ("dino/vit_small_patch16", _dino_vit, "dino_deitsmall16_pretrain.pth"),
    "dino/resnet50": ("dino/resnet50", _dino_resnet, "dino_resnet50_pretrain.pth"),
    "vicreg/resnet50": ("vicreg/resnet50", _vicreg_resnet, "resnet50.pth"),
    "vicreg/resnet50-fullckpt": ("vicreg/resnet50", _vicreg_full, "resnet50_fullckpt.pth"),
    "mae-layout/vit_tiny": (MAE_TINY, _mae, "mae_pretrain_vit_base.pth"),
    "vicregl-layout/convnext_atto": (VICREGL_ATTO, _vicregl(ATTO), "convnext_xlarge_alpha0.75.pth"),
}


def _entry(spec: dict[str, Any] | str) -> dict[str, Any]:
    return ENTRIES[spec] if isinstance(spec, str) else spec


def _write(tmp_path: Path, case: str) -> tuple[Any, nn.Module, Path]:
    spec, make, filename = CASES[case]
    source, checkpoint = make(_entry(spec))
    path = tmp_path / filename
    torch.save(checkpoint, path)
    return spec, source, path


def _assert_same_features(model, source: nn.Module, size: int = 224, atol: float = 1e-5) -> None:
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        got, want = model.forward_pooled(x), source(x)
    assert got.shape == want.shape == (1, model.pooled_dim)
    assert torch.allclose(got, want, atol=atol, rtol=1e-4), (got - want).abs().max()


# --------------------------------------------------------------------------------------------- tests


def test_catalog_entries_match_their_architectures():
    assert {
        "mocov3/vit_small",
        "mocov3/vit_base",
        "dino/resnet50",
        "dino/vit_small_patch16",
        "dino/vit_base_patch16",
        "mae/vit_base_patch16",
        "mae/vit_large_patch16",
        "vicreg/resnet50",
        "vicregl/convnext_xlarge_alpha0.75",
    } <= set(ENTRIES)
    for name, entry in ENTRIES.items():
        ref = resolve_backbone(name, weights="random")
        with torch.device("meta"):  # exact parameter counts without allocating ViT-L or ConvNeXt-XL
            model = ref.build()
        assert model.meta.params == entry["params"], name
        assert entry["args"]["format"] in ssl.FORMATS
        assert entry["sha256"] is None or len(entry["sha256"]) == 64
        assert ref.data_config.mean == ssl.IMAGENET_MEAN and ref.data_config.crop_pct == 0.875


@pytest.mark.parametrize("case", list(CASES))
def test_original_layout_loads_strictly_and_reproduces_the_source(tmp_path, case):
    spec, source, path = _write(tmp_path, case)
    model = _load(spec, str(path))
    assert model.meta.weights["kind"] == "file" and len(model.meta.weights["sha256"]) == 64
    own = set(model.model.state_dict())
    remapped, _ = ssl.remap_state_dict(
        ssl.load_state_dict_file(path), ssl.FORMATS[_entry(spec)["args"]["format"]]
    )
    assert set(remapped) == own  # zero missing, zero unexpected after the declared drops
    _assert_same_features(model, source, size=224 if "vit" in case else 64, atol=1e-4)


def test_remap_table_for_the_original_convnext_names():
    fmt = ssl.FORMATS["vicregl_convnext"]
    names = {
        "downsample_layers.0.0.weight": "stem.0.weight",
        "downsample_layers.0.1.bias": "stem.1.bias",
        "downsample_layers.2.0.weight": "stages.2.downsample.0.weight",
        "downsample_layers.3.1.bias": "stages.3.downsample.1.bias",
        "stages.2.26.dwconv.weight": "stages.2.blocks.26.conv_dw.weight",
        "stages.0.1.norm.bias": "stages.0.blocks.1.norm.bias",
        "stages.3.2.pwconv1.weight": "stages.3.blocks.2.mlp.fc1.weight",
        "stages.3.2.pwconv2.bias": "stages.3.blocks.2.mlp.fc2.bias",
        "stages.1.0.gamma": "stages.1.blocks.0.gamma",
        "norm.weight": "norm_pre.weight",
        "module.backbone.norm.bias": "norm_pre.bias",
    }
    state = {k: torch.zeros(1) for k in [*names, "module.projector.0.weight", "module.classifier.bias"]}
    remapped, dropped = ssl.remap_state_dict(state, fmt)
    assert set(remapped) == set(names.values()) and dropped == [
        "module.projector.0.weight",
        "module.classifier.bias",
    ]
    assert all(ssl.remap_state_dict({k: torch.zeros(1)}, fmt)[0].keys() == {v} for k, v in names.items())


def test_missing_and_unknown_keys_are_named(tmp_path):
    _, checkpoint = _mae(MAE_TINY)
    state = checkpoint["model"]
    missing = {k: v for k, v in state.items() if k != "blocks.3.attn.qkv.bias"}
    torch.save({"model": missing}, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"missing keys: blocks\.3\.attn\.qkv\.bias.*mae_vit"):
        _load(MAE_TINY, str(tmp_path / "missing.pth"))
    torch.save({"model": {**state, "blocks.0.attn.rel_pos": torch.zeros(3)}}, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"unexpected keys: blocks\.0\.attn\.rel_pos"):
        _load(MAE_TINY, str(tmp_path / "extra.pth"))


def test_mocov3_keys_outside_the_base_encoder_are_refused(tmp_path):
    _, checkpoint = _mocov3(MOCOV3_TINY)
    checkpoint["state_dict"]["module.queue"] = torch.zeros(4)
    torch.save(checkpoint, tmp_path / "vit-s-300ep.pth.tar")
    with pytest.raises(WeightsError, match=r"unexpected keys: module\.queue.*mocov3_vit"):
        _load(MOCOV3_TINY, str(tmp_path / "vit-s-300ep.pth.tar"))


def test_mirror_file_is_checked_against_the_catalog_sha256(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    source, checkpoint = _mae(MAE_TINY)
    release = mirror / "mae_pretrain_vit_base.pth"
    torch.save(checkpoint, release)
    monkeypatch.setenv("BOB_WEIGHTS_PATH", str(mirror))
    wrong = {**MAE_TINY, "sha256": "ab" * 32}
    with pytest.raises(WeightsError, match="Checksum mismatch"):
        _load(wrong, "pretrained")
    right = {**MAE_TINY, "sha256": sha256_file(release)}
    model = _load(right, "pretrained")
    assert model.meta.weights["verified"] == "sha256" and model.meta.weights["kind"] == "pretrained"
    assert model.meta.method == "ssl:mae" and model.meta.weights["source"].endswith(
        "mae_pretrain_vit_base.pth"
    )
    _assert_same_features(model, source)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_pretrained_offline_fails_fast_naming_the_release_file(name):
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=ENTRIES[name]["source"].rsplit("/", 1)[-1].replace(".", r"\.")):
        resolve_backbone(name, weights="pretrained")
    assert time.perf_counter() - start < 2.0


def test_random_init_is_seeded_and_keeps_the_release_architecture():
    a, b, c = (
        ssl.resolve("vit_tiny_patch16_224", WeightsRequest("random"), {}, seed, catalog=MOCOV3_TINY).build(64)
        for seed in (3, 3, 4)
    )
    assert torch.equal(a.model.cls_token, b.model.cls_token)
    assert not torch.equal(a.model.cls_token, c.model.cls_token)
    assert a.meta.method == "random" and a.meta.family == "vit" and a.meta.weights["seed"] == 3
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert a.forward_pooled(x).shape == (2, 192)
        assert a.forward_features(x, levels=[-1])[0].shape == (2, 192, 4, 4)
    with torch.device("meta"):
        moco_small = build_backbone("mocov3/vit_small", weights="random")
    assert moco_small.model.blocks[0].attn.num_heads == 12
    convnext = _load(VICREGL_ATTO, "random")
    assert not any("gamma" in k for k in convnext.model.state_dict()) and hasattr(convnext.model, "norm_pre")


def test_other_input_sizes_resample_the_position_embedding(tmp_path):
    _, source, path = _write(tmp_path, "mae-layout/vit_tiny")
    model = _load(MAE_TINY, str(path), input_size=64)
    assert model.model.pos_embed.shape == (1, 1 + 4 * 4, 192) and model.data_config.input_size == 64
    assert torch.equal(model.model.pos_embed[:, 0], source.pos_embed[:, 0])
    with torch.no_grad():
        assert torch.isfinite(model.forward_pooled(torch.randn(1, 3, 64, 64))).all()


def test_transforms_follow_each_release_recipe():
    assert resolve_backbone("dino/vit_small_patch16", weights="random").data_config.interpolation == "bicubic"
    assert resolve_backbone("mae/vit_base_patch16", weights="random").data_config.interpolation == "bicubic"
    moco = resolve_backbone("mocov3/vit_small", weights="random").data_config
    assert (moco.interpolation, moco.input_size, moco.std) == ("bilinear", 224, ssl.IMAGENET_STD)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "make"),
    [
        pytest.param(name, make, id=name)
        for name, make in [
            ("mae/vit_large_patch16", _mae),
            ("mae/vit_base_patch16", _mae),
            ("mocov3/vit_base", _mocov3),
            ("dino/vit_base_patch16", _dino_vit),
            ("vicregl/convnext_xlarge_alpha0.75", _vicregl(XLARGE)),
        ]
    ],
)
def test_big_release_architectures_load_their_layout(request, tmp_path, name, make):
    if "not slow" in (request.config.option.markexpr or ""):
        pytest.skip("builds ViT-L and ConvNeXt-XL; run with -m slow")
    source, checkpoint = make(ENTRIES[name])
    path = tmp_path / ENTRIES[name]["source"].rsplit("/", 1)[-1]
    torch.save(checkpoint, path)
    del checkpoint
    model = build_backbone(name, weights=str(path))
    path.unlink()  # up to 1.2 GB (ViT-L); nothing reads it again
    assert model.meta.params == ENTRIES[name]["params"]
    _assert_same_features(model, source, size=224 if "vit" in name else 64, atol=1e-4)
