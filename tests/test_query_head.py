"""The detection suite's query-based head (`head=query`): matching, losses, training and a full run."""

from __future__ import annotations

import json

import pytest
import torch

from bob.data.scenes import generate_scenes
from bob.task import parse_task_args
from bob.tasks.detection import DetectionArgs
from tests.test_detection import _split


def _detector(stages: int = 2, queries: int = 10, frozen: bool = False):
    from bob.backbones import build_backbone
    from bob.tasks.common.pyramid import BackboneWithPyramid
    from bob.tasks.detection.query_head import QueryDetector

    torch.manual_seed(0)
    backbone = build_backbone("timm/resnet18", "random")
    body = BackboneWithPyramid(backbone, 32, frozen=frozen)
    return QueryDetector(body, 5, 64, num_queries=queries, stages=stages)


def _batch(n: int = 2):
    from bob.tasks.common.detector_data import DetectionDataset

    split = _split(generate_scenes(n, size=64, seed=1))
    items = [DetectionDataset(split, list(range(n)), masks=False)[i] for i in range(n)]
    return [b[0] for b in items], [b[1] for b in items]


def test_hungarian_matching_is_one_to_one_and_finds_the_exact_boxes():
    from bob.tasks.detection.query_head import match

    gt_boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 50.0], [5.0, 30.0, 15.0, 60.0]])
    gt_labels = torch.tensor([2, 0, 2])
    boxes = torch.rand(6, 4) * 30
    boxes[:, 2:] += boxes[:, :2] + 1
    boxes[4], boxes[1], boxes[5] = gt_boxes  # queries 4, 1, 5 sit exactly on the ground truth
    logits = torch.full((6, 3), -4.0)
    logits[4, 2] = logits[1, 0] = logits[5, 2] = 4.0
    q, g = match(logits, boxes, gt_labels, gt_boxes, torch.tensor([64.0, 64.0, 64.0, 64.0]))
    assert sorted(zip(g.tolist(), q.tolist(), strict=True)) == [(0, 4), (1, 1), (2, 5)]
    empty_q, empty_g = match(logits, boxes, gt_labels[:0], gt_boxes[:0], torch.ones(4))
    assert len(empty_q) == len(empty_g) == 0


def test_box_losses_vanish_on_perfect_predictions():
    from bob.tasks.detection.query_head import stage_losses

    gt = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 30.0]]), "labels": torch.tensor([3])}
    boxes = torch.tensor([[[4.0, 4.0, 20.0, 30.0], [0.0, 0.0, 64.0, 64.0]]])
    logits = torch.full((1, 2, 5), -20.0)
    logits[0, 0, 2] = 20.0
    losses = stage_losses(logits, boxes, [gt], [(64, 64)], 5)
    assert losses["loss_l1"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_focal"].item() < 1e-6


def test_query_detector_trains_and_predicts_in_torchvision_format():
    model = _detector()
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_focal", "loss_l1", "loss_giou"}
    sum(losses.values()).backward()
    assert model.query_boxes.weight.grad is not None and model.query_features.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.backbone.parameters())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det, image in zip(out, images, strict=True):
        h, w = image.shape[-2:]
        assert set(det) == {"boxes", "labels", "scores"} and len(det["boxes"]) == 50  # 10 queries × 5 classes
        assert det["labels"].min() >= 1 and det["labels"].max() <= 5
        assert (det["boxes"][:, 0::2] <= w).all() and (det["boxes"][:, 1::2] <= h).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()


@pytest.mark.slow
def test_query_detector_learns_a_small_batch():
    model = _detector(stages=2, queries=10)
    images, targets = _batch(2)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    model.train()
    history = []
    for _ in range(40):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss))
    assert history[-1] < 0.5 * history[0]


def test_head_args_are_validated_and_keep_old_run_ids():
    from bob.errors import UnknownNameError, UsageError

    old = parse_task_args(DetectionArgs, {}, "detection/scenes").identity()
    assert "head" not in old and "num_queries" not in old  # R-CNN runs keep their ids
    query = parse_task_args(DetectionArgs, {"head": "query"}, "detection/scenes").identity()
    assert query["head"] == "query" and "rois_per_image" not in query and "anchor_size" not in query
    with pytest.raises(UnknownNameError, match="quarry"):
        parse_task_args(DetectionArgs, {"head": "quarry"}, "detection/scenes").validate()
    with pytest.raises(UsageError, match="num_queries"):
        parse_task_args(DetectionArgs, {"head": "query", "num_queries": "0"}, "detection/scenes").validate()


@pytest.mark.slow
def test_bob_run_with_the_query_head(tmp_path):
    from tests.test_cli import bob

    proc = bob(
        "run", "-b", "timm/resnet18", "-w", "random", "-t", "detection/scenes-mini",
        "--task-arg", "head=query", "--task-arg", "iters=3", "--task-arg", "batch_size=2",
        "--task-arg", "fpn_channels=32", "--task-arg", "num_queries=20", "--task-arg", "query_stages=2",
        "--task-arg", "augment=flip", "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "r").rglob("*.json")
    result = json.loads(path.read_text())
    assert result["status"] == "ok" and "box_ap" in result["metrics"] and "mask_ap" not in result["metrics"]
    assert result["protocol"]["head"] == "query" and "Hungarian" in result["protocol"]["assignment"]
