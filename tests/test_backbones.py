"""The backbone contract over a spread of timm and torchvision architectures (random weights, tiny inputs),
plus name resolution and weight loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bob.backbones import build_backbone, resolve_backbone
from bob.backbones.timm_backbone import TimmBackbone
from bob.errors import UsageError, WeightsError

SIZE = 64
TIMM = [
    "timm/resnet18",
    "timm/efficientnet_b0",
    "timm/mobilenetv3_small_100",
    "timm/convnext_atto",
    "timm/vit_tiny_patch16_224",
    "timm/deit_tiny_patch16_224",
    "timm/swin_tiny_patch4_window7_224",
    "timm/swinv2_cr_tiny_ns_224",
    "timm/pvt_v2_b0",
    "timm/coatnet_nano_rw_224",
]
TORCHVISION = [
    "torchvision/resnet18",
    "torchvision/mobilenet_v2",
    "torchvision/efficientnet_b0",
    "torchvision/convnext_tiny",
    "torchvision/regnet_y_400mf",
    "torchvision/shufflenet_v2_x0_5",
    "torchvision/swin_t",
    "torchvision/vit_b_16",
]


def _spatial_ok(size: int, stride: int, got: int) -> bool:
    return got in (size // stride, math.ceil(size / stride))


@pytest.mark.parametrize("name", TIMM + TORCHVISION)
def test_contract(name: str) -> None:
    model = build_backbone(name, weights="random", input_size=SIZE)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        pooled = model.forward_pooled(x)
        maps = model.forward_features(x)
        again = model.forward_pooled(x)
    assert pooled.shape == (2, model.pooled_dim) == (2, model.meta.pooled_dim)
    assert torch.isfinite(pooled).all()
    assert torch.equal(pooled, again), "eval-mode forward must be deterministic"
    assert len(maps) == len(model.feature_info) > 0
    for fmap, info in zip(maps, model.feature_info, strict=True):
        assert fmap.ndim == 4 and fmap.shape[:2] == (2, info.channels), (name, fmap.shape, info)
        assert _spatial_ok(SIZE, info.stride, fmap.shape[2]) and _spatial_ok(SIZE, info.stride, fmap.shape[3])
        assert torch.isfinite(fmap).all()
    strides = [i.stride for i in model.feature_info]
    assert strides == sorted(strides)
    assert model.meta.params == sum(p.numel() for p in model.parameters())
    assert model.meta.family in ("cnn", "vit", "hierarchical", "hybrid")
    with torch.no_grad():
        last = model.forward_features(x, levels=[-1])
    assert len(last) == 1 and torch.allclose(last[0], maps[-1])


@pytest.mark.parametrize(
    "name", ["timm/resnet18", "timm/vit_tiny_patch16_224", "timm/swin_tiny_patch4_window7_224"]
)
def test_timm_pooled_sits_on_forward_intermediates(name: str) -> None:
    model = build_backbone(name, weights="random", input_size=SIZE)
    assert isinstance(model, TimmBackbone)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        pooled, maps = model.forward_pooled_and_features(x)
        assert torch.allclose(pooled, model.forward_pooled(x), atol=1e-5)
        for a, b in zip(maps, model.forward_features(x), strict=True):
            assert torch.allclose(a, b, atol=1e-5)


def test_vit_tokens_drop_the_class_token():
    model = build_backbone("timm/vit_tiny_patch16_224", weights="random", input_size=SIZE)
    with torch.no_grad():
        maps = model.forward_features(torch.randn(1, 3, SIZE, SIZE), levels=[0])
    assert maps[0].shape == (1, 192, SIZE // 16, SIZE // 16)


def test_random_init_is_seeded():
    a = build_backbone("timm/resnet18", weights="random", seed=3, input_size=SIZE)
    b = build_backbone("timm/resnet18", weights="random", seed=3, input_size=SIZE)
    c = build_backbone("timm/resnet18", weights="random", seed=4, input_size=SIZE)
    wa, wb, wc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_bare_names_resolve_to_explicit_tags():
    assert resolve_backbone("torchvision/mobilenet_v2", weights="random").resolved_name == (
        "torchvision/mobilenet_v2.IMAGENET1K_V1"
    )
    timm_ref = resolve_backbone("timm/resnet50", weights="random")
    assert timm_ref.resolved_name.startswith("timm/resnet50.") and timm_ref.data_config.input_size == 224


def test_unknown_torchvision_weights_tag():
    with pytest.raises(UsageError, match="IMAGENET1K_V1"):
        resolve_backbone("torchvision/mobilenet_v2.IMAGENET1K_V9", weights="random")


def test_timm_arch_without_weights_asks_for_random():
    with pytest.raises(WeightsError, match="--weights random"):
        resolve_backbone("timm/test_resnet", weights="pretrained")


def test_pretrained_mobilenet_recognises_a_cat(weights_dir):
    """End to end: mirror lookup, sha256 check, torchvision's loader, our transform, pooled features.

    The ImageNet classifier from the same file, applied to our pooled features of scikit-image's cat
    photo, must predict a cat class (ImageNet 281-285).
    """
    from PIL import Image
    from skimage import data

    from bob.backbones.checkpoints import load_state_dict_file
    from bob.transforms import eval_transform

    ref = resolve_backbone("torchvision/mobilenet_v2", weights="pretrained")
    assert ref.weights.sha256 == "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
    assert ref.weights.verified == "sha256-prefix"
    model = ref.build()
    x = eval_transform(ref.data_config)(Image.fromarray(data.chelsea())).unsqueeze(0)
    state = load_state_dict_file(weights_dir / "mobilenet_v2-b0353104.pth")
    with torch.no_grad():
        logits = model.forward_pooled(x) @ state["classifier.1.weight"].T + state["classifier.1.bias"]
    assert 281 <= int(logits.argmax()) <= 285


def test_weights_from_a_local_file_load_strictly(tmp_path):
    import torchvision

    torch.manual_seed(0)
    source = torchvision.models.resnet18()
    path = tmp_path / "my_resnet18.pth"
    torch.save(source.state_dict(), path)
    model = build_backbone("torchvision/resnet18", weights=str(path))
    assert model.meta.weights["kind"] == "file" and len(model.meta.weights["sha256"]) == 64
    source.fc = torch.nn.Identity()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(model.forward_pooled(x), source.eval()(x), atol=1e-6)


def test_a_file_for_another_architecture_is_refused(tmp_path):
    import timm

    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", num_classes=0).state_dict(), path)
    with pytest.raises(WeightsError, match="unexpected keys"):
        build_backbone("timm/resnet18", weights=str(path))


def test_backbone_output_contract_violations_are_named():
    from bob.backbones.base import check_pooled
    from bob.errors import BackboneContractError

    with pytest.raises(BackboneContractError, match="expected \\[B, D\\]"):
        check_pooled("m", torch.zeros(2, 3, 4), 2)
    with pytest.raises(BackboneContractError, match="non-finite"):
        check_pooled("m", torch.tensor([[np.nan, 1.0]]), 1)
    with pytest.raises(BackboneContractError, match="Tensor"):
        check_pooled("m", [1, 2], 2)
