"""`tradeoff/<dataset>`: SN-Net stitching (windows, least squares, stitched forward), curves, fronts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bob.backbones import build_backbone
from bob.errors import UsageError
from bob.pareto import hypervolume_2d, pareto_mask
from bob.task import parse_task_args
from bob.tasks.tradeoff import TradeoffArgs
from bob.tasks.tradeoff.stitching import (
    AnchorViT,
    StitchedViT,
    block_tokens,
    least_squares_layer,
    paired_stitches,
    vit_trunk,
)


def test_sliding_windows_give_sn_nets_34_stitches_per_pair():
    pairs = paired_stitches(12, 12, kernel=2, stride=1)
    assert len(pairs) == 34  # SN-Net: 71 configurations = 3 anchors + 2 pairs x 34
    assert all(abs(i - j) <= 1 for i, j in pairs)
    assert paired_stitches(12, 12, kernel=1, stride=4) == [(0, 0), (4, 4), (8, 8)]
    assert len(paired_stitches(4, 6, kernel=2, stride=1)) == 10  # the shallower anchor bounds the windows
    with pytest.raises(UsageError, match="larger than"):
        paired_stitches(4, 4, kernel=5, stride=1)
    with pytest.raises(UsageError, match="positive"):
        paired_stitches(4, 4, kernel=2, stride=0)


def test_least_squares_recovers_an_affine_map():
    torch.manual_seed(0)
    x = torch.randn(20, 5, 8)
    w, b = torch.randn(8, 6), torch.randn(6)
    layer = least_squares_layer(x, x @ w + b)
    assert torch.allclose(layer.weight.T, w, atol=1e-4) and torch.allclose(layer.bias, b, atol=1e-4)
    with pytest.raises(UsageError, match="token count"):
        least_squares_layer(x, torch.randn(20, 4, 6))


def _vit(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone(name, "random", input_size=32).eval()


def test_anchor_path_equals_the_backbone_and_self_stitches_are_exact():
    vit = _vit("timm/vit_tiny_patch16_224")
    trunk = vit_trunk(vit)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        pooled = vit.forward_pooled(x)
        assert torch.allclose(AnchorViT(trunk, "a").forward_pooled(x), pooled, atol=1e-5)
        tokens = block_tokens(trunk, x)
        for i in (0, 5, 11):  # a model stitched to itself at the same block is the model
            layer = least_squares_layer(tokens[i], tokens[i])
            out = StitchedViT(trunk, trunk, i, i, layer, "self").forward_pooled(x)
            assert torch.allclose(out, pooled, atol=1e-3)


def test_stitches_between_two_widths_run_and_non_vits_are_refused():
    tiny, small = _vit("timm/vit_tiny_patch16_224"), _vit("timm/vit_small_patch16_224", 1)
    ft, fs = vit_trunk(tiny), vit_trunk(small)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        layer = least_squares_layer(block_tokens(ft, x)[3], block_tokens(fs, x)[4])
        out = StitchedViT(ft, fs, 3, 4, layer, "t->s").forward_pooled(x)
    assert out.shape == (4, small.pooled_dim) and torch.isfinite(out).all()
    with pytest.raises(UsageError, match="VisionTransformer"):
        vit_trunk(build_backbone("timm/resnet18", "random"))


def test_args_are_validated():
    for bad, match in (
        ({}, "at least one more backbone"),
        ({"anchors": "timm/resnet18", "mode": "zigzag"}, "mode"),
        ({"anchors": "timm/resnet18", "ls_init_samples": "0"}, "ls_init_samples"),
        ({"anchors": "timm/resnet18", "anchor_weights": "some"}, "anchor_weights"),
    ):
        with pytest.raises(UsageError, match=match):
            parse_task_args(TradeoffArgs, bad, "tradeoff/shapes-mini").validate()


def _run(tmp_path, backbone, *args):
    from tests.test_cli import bob

    task_args = [a for arg in args for a in ("-a", arg)]
    proc = bob(
        "run", "-b", backbone, "-w", "random", "-t", "tradeoff/shapes-mini", *task_args, "-a", "image_size=32",
        "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "r").rglob("*.json")
    return json.loads(path.read_text())


def _check_front(result):
    points = result["protocol"]["points"]
    xy = np.array([[p["macs"], p["top1"]] for p in points], dtype=float)
    assert [p["pareto"] for p in points] == pareto_mask(xy, (True, False)).tolist()
    ref = 1.05 * xy[:, 0].max()
    assert result["metrics"]["hypervolume"] == pytest.approx(hypervolume_2d(xy, (ref, 0.0)) / ref)
    return points


@pytest.mark.slow
def test_stitch_run_scores_every_stitch_and_its_front(tmp_path):
    result = _run(
        tmp_path, "timm/vit_tiny_patch16_224", "anchors=timm/vit_small_patch16_224", "stitch_kernel=1",
        "stitch_stride=4", "ls_init_samples=16", "stitch_steps=3",
    )  # fmt: skip
    points = _check_front(result)
    assert [p["kind"] for p in points] == ["anchor", "anchor", "stitch", "stitch", "stitch"]
    anchors, stitches = points[:2], points[2:]
    assert anchors[0]["macs"] < anchors[1]["macs"]  # sorted by cost; stitches in between
    assert all(anchors[0]["macs"] < s["macs"] < anchors[1]["macs"] for s in stitches)
    assert [(s["stitch"]["i"], s["stitch"]["j"]) for s in stitches] == [(0, 0), (4, 4), (8, 8)]
    assert all(set(s["stitch"]["train_loss"]) == {"first", "last"} for s in stitches)
    assert "3 Adam steps" in result["protocol"]["stitching"]["training"]
    assert result["metrics"]["num_points"] == 5


@pytest.mark.slow
def test_curve_run_over_any_backbones(tmp_path):
    result = _run(tmp_path, "timm/resnet18", "mode=curve", "anchors=timm/test_resnet")
    points = _check_front(result)
    assert [p["kind"] for p in points] == ["backbone", "backbone"]
    assert {"top1/timm/resnet18", "top1/timm/test_resnet"} <= set(result["metrics"])


def test_brief_training_lowers_the_stitchs_loss_and_touches_only_the_layer():
    from bob.tasks.tradeoff.train import train_stitch

    tiny, small = _vit("timm/vit_tiny_patch16_224"), _vit("timm/vit_small_patch16_224", 1)
    ft, fs = vit_trunk(tiny), vit_trunk(small)
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 4
    with torch.no_grad():
        layer = least_squares_layer(block_tokens(ft, x)[5], block_tokens(fs, x)[5])
    module = StitchedViT(ft, fs, 5, 5, layer, "t->s")
    before = {
        k: v.clone()
        for k, v in {**ft.state_dict(), **{f"e.{k}": v for k, v in fs.state_dict().items()}}.items()
    }
    weight = layer.weight.detach().clone()
    first, last = train_stitch(module, x, y, 4, steps=30, lr=1e-2, seed=0)
    assert last < first
    assert not torch.equal(layer.weight, weight)
    after = {**ft.state_dict(), **{f"e.{k}": v for k, v in fs.state_dict().items()}}
    assert all(torch.equal(before[k], after[k]) for k in before)  # the anchors did not move
    assert all(p.requires_grad for p in ft.parameters())  # and their flags are restored
