"""SSCD copy-detection descriptors (the two releases BoB's retrieval used), offline: TorchScript
archives generated here in the release's structure (a Classy Vision ResNe(X)t trunk under `backbone`,
GeM + projection + L2 norm under `embeddings`) load strictly through the ssl adapter and give the
source model's descriptors; the catalog entries name the exact release files."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bob.backbones import build_backbone
from bob.backbones import ssl_checkpoints as ssl
from bob.backbones.catalog import catalog_entries
from bob.errors import WeightsError
from bob.weights import WeightsRequest

ENTRIES = {e["name"]: e for e in catalog_entries() if e["adapter"] == "ssl"}
RELEASE = "https://dl.fbaipublicfiles.com/sscd-copy-detection/"
# The releases are TorchScript archives; torch.jit.trace writes the test's own ones.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")


class _ClassyBottleneck(nn.Module):
    """Classy Vision's bottleneck layer: conv block, then its own bn, the shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, mid: int, stride: int, groups: int) -> None:
        super().__init__()
        self.convolutional_block = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, cout, 1, bias=False),
        )  # fmt: skip
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn(self.convolutional_block(x)) + residual)


class _ClassyResNeXt(nn.Module):
    def __init__(self, layers: tuple[int, ...], groups: int, width: int, wrapped: bool) -> None:
        super().__init__()
        stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        self.initial_block = nn.Sequential(OrderedDict(_module=stem)) if wrapped else stem
        stages, cin = [], 64
        for s, n in enumerate(layers):
            cout, mid = 256 * 2**s, width * groups * 2**s
            blocks = OrderedDict()
            for i in range(n):
                layer = _ClassyBottleneck(cin if i == 0 else cout, cout, mid, 1 if s == 0 or i else 2, groups)
                blocks[f"block{s}-{i}"] = nn.Sequential(OrderedDict(_module=layer)) if wrapped else layer
            stages.append(nn.Sequential(blocks))
            cin = cout
        self.blocks = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.initial_block(x))


class _SSCDModel(nn.Module):
    def __init__(self, trunk: nn.Module, dim: int) -> None:
        super().__init__()
        self.backbone = trunk
        self.embeddings = nn.Sequential(ssl.GeMPool(3.0), nn.Linear(2048, dim), ssl.L2Normalize())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embeddings(self.backbone(x))


def _release(tmp_path: Path, layers, groups: int, width: int, dim: int, wrapped: bool = False):
    """A TorchScript archive in the release's structure, with BN statistics that matter."""
    torch.manual_seed(0)
    model = _SSCDModel(_ClassyResNeXt(layers, groups, width, wrapped), dim).eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.add_(0.02 * torch.randn_like(t)) if "running_var" not in name else t.uniform_(0.5, 1.5)
    path = tmp_path / "sscd.torchscript.pt"
    torch.jit.trace(model, torch.randn(1, 3, 64, 64)).save(str(path))
    return model, path


def _sibling(name: str, target: str, dim: int) -> dict[str, Any]:
    return {**ENTRIES[name], "name": f"test/{target}-sscd", "target": target,
            "args": {"format": "sscd", "descriptor_dim": dim, "gem_p": 3.0}}  # fmt: skip


def _load(entry: dict[str, Any], path: Path):
    return ssl.resolve(entry["target"], WeightsRequest.parse(str(path)), {}, 0, catalog=entry).build(64)


def test_catalog_names_the_two_releases_bob_used():
    im, disc = ENTRIES["sscd/resnet50_imagenet_mixup"], ENTRIES["sscd/resnext101_32x4d_disc_large"]
    assert im["source"] == RELEASE + "sscd_imagenet_mixup.torchscript.pt"
    assert disc["source"] == RELEASE + "sscd_disc_large.torchscript.pt"
    assert (im["target"], disc["target"]) == ("resnet50", "resnext101_32x4d")
    # BoB ran SSCD in retrieval only: not in group `bob`, whose members run every BoB task
    assert "bob" not in im.get("groups", []) and "bob" not in disc.get("groups", [])
    for entry, dim in ((im, 512), (disc, 1024)):
        backbone = build_backbone(entry["name"], weights="random", input_size=64)
        assert backbone.pooled_dim == dim and backbone.meta.params == entry["params"]
        out = backbone.forward_pooled(torch.rand(2, 3, 64, 64))
        assert out.shape == (2, dim) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("wrapped", [False, True])
def test_resnext_release_loads_strictly_and_gives_its_descriptors(tmp_path, wrapped):
    # ResNeXt-50 32x4d: the grouped layout of sscd_disc_large on a smaller depth
    source, path = _release(tmp_path, (3, 4, 6, 3), 32, 4, 1024, wrapped)
    backbone = _load(_sibling("sscd/resnext101_32x4d_disc_large", "resnext50_32x4d", 1024), path)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = source(x)
        assert torch.allclose(backbone.forward_pooled(x), expected, atol=1e-5)
        pooled, maps = backbone.forward_pooled_and_features(x, None)
        assert torch.allclose(pooled, expected, atol=1e-5)
        assert torch.allclose(maps[-1], source.backbone(x), atol=1e-5)  # the trunk's last map
        assert [m.shape[1] for m in backbone.forward_features(x)] == [64, 256, 512, 1024, 2048]


def test_torchvision_layout_file_loads_too(tmp_path):
    """`.torchvision.pt` releases: torchvision ResNet-50 names with the projection as backbone.fc."""
    source, path = _release(tmp_path, (3, 4, 6, 3), 1, 64, 512)
    entry = ENTRIES["sscd/resnet50_imagenet_mixup"]
    state = ssl.remap_state_dict(ssl.read_tensors(path), ssl.FORMATS["sscd"])[0]  # timm names
    tv = {("backbone.fc." + k[len("embeddings.1.") :] if k.startswith("embeddings.1.") else k): v
          for k, v in state.items()}  # fmt: skip
    tv_path = tmp_path / "sscd.torchvision.pt"
    torch.save(tv, tv_path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(_load(entry, tv_path).forward_pooled(x), source(x), atol=1e-5)


def test_a_file_of_another_layout_is_refused_by_name(tmp_path):
    _, path = _release(tmp_path, (3, 4, 6, 3), 1, 64, 512)
    with pytest.raises(WeightsError, match="sscd"):
        _load(ENTRIES["sscd/resnext101_32x4d_disc_large"], path)  # a ResNet-50 file for the ResNeXt
