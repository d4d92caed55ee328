"""Composite backbones, `composite(<backbone>)` (CBNetV2): wiring, contract, and the dense suites on one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from bob.backbones import build_backbone, resolve_backbone
from bob.errors import BackboneContractError, UnknownNameError, UsageError
from bob.spec import make_spec

NAMES = ["timm/resnet18", "timm/convnext_atto", "torchvision/mobilenet_v2"]


def _pair(name: str):
    torch.manual_seed(0)
    single = build_backbone(name, "random").eval()
    composite = build_backbone(f"composite({name})", "random").eval()
    return single, composite


@pytest.mark.parametrize("name", NAMES)
def test_untrained_composite_computes_the_single_backbone(name):
    """Zero-initialised connections: a fresh composite equals its lead, i.e. the plain backbone."""
    single, composite = _pair(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(single.forward_pooled(x), composite.forward_pooled(x))
        for a, b in zip(single.forward_features(x), composite.forward_features(x), strict=True):
            assert torch.equal(a, b)
    assert composite.feature_info == single.feature_info
    assert composite.meta.name == f"composite({name})"
    assert composite.meta.params == sum(p.numel() for p in composite.parameters())


@pytest.mark.parametrize("name", NAMES[:2])
def test_dense_higher_level_composition_wiring(name):
    """Lead level l ≥ 1 takes every assisting level i ≥ l, projected to the channels of its input."""
    _, composite = _pair(name)
    n = len(composite.feature_info)
    assert sorted(composite.connections, key=int) == [str(level) for level in range(1, n)]
    for level, conns in composite.connections.items():
        sources = range(int(level), n)
        assert [c.proj.in_channels for c in conns] == [composite.feature_info[i].channels for i in sources]
        assert len({c.proj.out_channels for c in conns}) == 1
    params = sum(p.numel() for p in composite.connections.parameters())
    assert composite.meta.params == 2 * sum(p.numel() for p in composite.assist.parameters()) + params


def test_connections_change_the_lead_and_train():
    single, composite = _pair("timm/resnet18")
    a, b = composite.assist.state_dict(), composite.lead.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # both copies start from the same weights
    for conns in composite.connections.values():
        for conn in conns:
            torch.nn.init.ones_(conn.norm.weight)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        deepest_single = single.forward_features(x, [-1])[0]
    composite.train()
    out = composite.forward_features(x, [-1])[0]
    assert out.shape == deepest_single.shape and not torch.allclose(out, deepest_single)
    out.mean().backward()
    for part in (composite.assist, composite.lead, composite.connections):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_composite_has_its_own_identity_and_args():
    inner = resolve_backbone("timm/resnet18", "random")
    ref = resolve_backbone("composite(timm/resnet18)", "random")
    assert ref.resolved_name == f"composite({inner.resolved_name})"
    assert ref.identity() != inner.identity()
    assert ref.args["composite"] == {"connections": "dhlc", "zero_init": True}
    plain = resolve_backbone("composite(timm/resnet18)", "random", {"composite_zero_init": False})
    assert plain.args["composite"]["zero_init"] is False and plain.identity() != ref.identity()
    built = plain.build()
    assert any(c.norm.weight.abs().sum() > 0 for conns in built.connections.values() for c in conns)


def test_bad_names_and_unsupported_backbones_fail_clearly():
    with pytest.raises(UnknownNameError, match="resnet_nope"):
        make_spec("composite(timm/resnet_nope)", "linear-probe/shapes-mini")
    with pytest.raises(UsageError, match="composites of composites"):
        make_spec("composite(composite(timm/resnet18))", "linear-probe/shapes-mini")
    spec = make_spec("composite(timm/resnet18)", "detection/scenes-mini", weights="random")
    assert spec.backbone == "composite(timm/resnet18)"
    with pytest.raises(BackboneContractError, match="NCHW maps"):
        build_backbone("composite(timm/vit_tiny_patch16_224)", "random", input_size=64)


def test_detector_trains_a_step_on_a_composite():
    from bob.data.scenes import generate_scenes
    from bob.tasks.common.detector_data import DetectionDataset
    from bob.tasks.common.rcnn import build_detector
    from tests.test_detection import _split

    torch.manual_seed(0)
    backbone = build_backbone("composite(timm/resnet18)", "random")
    model = build_detector(backbone, 5, masks=True, image_size=64, fpn_channels=32, rois_per_image=32)
    split = _split(generate_scenes(2, size=64, seed=1))
    batch = [DetectionDataset(split, [0, 1], masks=True)[i] for i in range(2)]
    model.train()
    losses = model([b[0] for b in batch], [b[1] for b in batch])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.connections.parameters())


def test_bob_run_on_a_composite(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bob.cli", "run", "-b", "composite(timm/resnet18)", "-w", "random",
         "-t", "knn/shapes-mini", "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "r").rglob("*.json")
    result = json.loads(path.read_text())
    assert result["status"] == "ok" and result["backbone"]["name"] == "composite(timm/resnet18)"
    assert result["backbone"]["adapter"] == "composite+timm"
    assert result["backbone"]["resolved_name"].startswith("composite(timm/resnet18")
