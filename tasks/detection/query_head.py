"""A query-based detection head (Sparse R-CNN / StageInteractor family) on bob's feature pyramid.

`head=query` in the detection suite. The same `BackboneWithPyramid` and torchvision transform as the
R-CNN head feed a set of N learnable queries — a box and a feature each — refined by K stages:

  1. RoIAlign (`MultiScaleRoIAlign`, 7×7) of every query's current box over the pyramid;
  2. self-attention among the queries;
  3. dynamic interaction: a 1×1 "dynamic conv" pair whose weights each query generates from its
     own feature, applied to its RoI feature (Sparse R-CNN's DynamicConv); StageInteractor's
     cross-stage reuse: each stage also applies the previous stage's generated filters, so the
     interaction of stage k sees the filters of stages k-1 and k;
  4. FFN, then a sigmoid classifier over the K classes and box deltas that refine the box.

Training is one-to-one: each stage's predictions are matched to the ground truth with the Hungarian
algorithm (scipy's `linear_sum_assignment`) on cost 2·focal + 5·L1 + 2·GIoU, and the matched pairs
pay sigmoid focal loss (α 0.25, γ 2), L1 on normalised boxes and GIoU loss with the same weights;
unmatched queries are background. Inference takes the 100 best (query, class) pairs of the last stage.

The module follows torchvision's detector interface — `model(images, targets)` returns a loss dict in
train mode, `model(images)` a list of `{boxes, labels, scores}` — so the R-CNN's training, prediction
(tasks/common/detector_train.py) and COCOeval run unchanged. Labels are 1..K as for torchvision (0 is
background).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, generalized_box_iou, sigmoid_focal_loss

from bob.tasks.common.pyramid import BackboneWithPyramid

Filters = tuple[torch.Tensor, torch.Tensor]  # a query's generated 1×1 filter pair

CLASS_WEIGHT, L1_WEIGHT, GIOU_WEIGHT = 2.0, 5.0, 2.0  # Sparse R-CNN / StageInteractor
BOX_DELTA_WEIGHTS = (2.0, 2.0, 1.0, 1.0)
DYNAMIC_DIM = 64
POOL = 7
DETECTIONS_PER_IMAGE = 100


def _apply_deltas(boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """R-CNN box parametrisation (weights 2, 2, 1, 1), on absolute xyxy boxes."""
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = BOX_DELTA_WEIGHTS
    dw = (deltas[:, 2] / ww).clamp(max=math.log(1000.0 / 16))
    dh = (deltas[:, 3] / wh).clamp(max=math.log(1000.0 / 16))
    px, py = deltas[:, 0] / wx * widths + cx, deltas[:, 1] / wy * heights + cy
    pw, ph = torch.exp(dw) * widths, torch.exp(dh) * heights
    return torch.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], dim=1)


class DynamicInteraction(nn.Module):
    """Each query's feature generates two 1×1 filters applied to its own RoI feature."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.generate = nn.Linear(dim, 2 * dim * DYNAMIC_DIM)
        self.norm1, self.norm2 = nn.LayerNorm(DYNAMIC_DIM), nn.LayerNorm(dim)
        self.out = nn.Sequential(nn.Linear(dim * POOL * POOL, dim), nn.LayerNorm(dim), nn.ReLU(inplace=True))

    def filters(self, queries: torch.Tensor) -> Filters:
        params = self.generate(queries)  # [Q, 2·C·D]
        first = params[:, : self.dim * DYNAMIC_DIM].view(-1, self.dim, DYNAMIC_DIM)
        second = params[:, self.dim * DYNAMIC_DIM :].view(-1, DYNAMIC_DIM, self.dim)
        return first, second

    def interact(self, roi: torch.Tensor, filters: Filters) -> torch.Tensor:
        first, second = filters  # roi: [Q, 49, C]
        roi = F.relu(self.norm1(torch.bmm(roi, first)))
        return F.relu(self.norm2(torch.bmm(roi, second)))

    def forward(self, roi: torch.Tensor, filters: list[Filters]) -> torch.Tensor:
        for f in filters:
            roi = self.interact(roi, f)
        return self.out(roi.flatten(1))


class QueryStage(nn.Module):
    def __init__(self, dim: int, num_classes: int, heads: int = 8) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads if dim % heads == 0 else 1, batch_first=True)
        self.norm_attn, self.norm_inter, self.norm_ffn = (
            nn.LayerNorm(dim),
            nn.LayerNorm(dim),
            nn.LayerNorm(dim),
        )
        self.interaction = DynamicInteraction(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(inplace=True), nn.Linear(4 * dim, dim))
        self.cls = nn.Sequential(
            nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(inplace=True), nn.Linear(dim, num_classes)
        )
        self.reg = nn.Sequential(
            nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(inplace=True), nn.Linear(dim, 4)
        )
        prior = -math.log((1 - 0.01) / 0.01)  # focal-loss prior: 1% foreground at the start
        nn.init.constant_(self.cls[-1].bias, prior)
        nn.init.zeros_(self.reg[-1].weight)
        nn.init.zeros_(self.reg[-1].bias)

    def forward(
        self, roi: torch.Tensor, queries: torch.Tensor, boxes: torch.Tensor, previous_filters: Filters | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Filters]:
        b, n, c = queries.shape
        attended = self.attention(queries, queries, queries, need_weights=False)[0]
        queries = self.norm_attn(queries + attended).reshape(b * n, c)
        own = self.interaction.filters(queries)
        filters = [*([previous_filters] if previous_filters is not None else []), own]
        queries = self.norm_inter(queries + self.interaction(roi, filters))
        queries = self.norm_ffn(queries + self.ffn(queries))
        logits = self.cls(queries).view(b, n, -1)
        boxes = _apply_deltas(boxes.reshape(b * n, 4), self.reg(queries)).view(b, n, 4)
        return logits, boxes, queries.view(b, n, c), own


class QueryDetector(nn.Module):
    """Backbone + pyramid + N learnable queries refined over `stages` stages; torchvision's interface."""

    def __init__(
        self,
        body: BackboneWithPyramid,
        num_classes: int,
        image_size: int,
        num_queries: int = 100,
        stages: int = 6,
    ) -> None:
        super().__init__()
        self.backbone, self.num_classes = body, num_classes
        config = body.backbone.data_config
        self.transform = GeneralizedRCNNTransform(image_size, image_size, list(config.mean), list(config.std))
        dim = body.out_channels
        self.roi_pool = MultiScaleRoIAlign(body.feature_names, POOL, 2)
        self.query_boxes = nn.Embedding(num_queries, 4)  # normalised cx, cy, w, h: the whole image at first
        nn.init.constant_(self.query_boxes.weight[:, :2], 0.5)
        nn.init.constant_(self.query_boxes.weight[:, 2:], 1.0)
        self.query_features = nn.Embedding(num_queries, dim)
        self.stages = nn.ModuleList(QueryStage(dim, num_classes) for _ in range(stages))

    def _initial_boxes(self, sizes: list[tuple[int, int]]) -> torch.Tensor:
        cxcywh = self.query_boxes.weight
        xyxy = torch.cat([cxcywh[:, :2] - 0.5 * cxcywh[:, 2:], cxcywh[:, :2] + 0.5 * cxcywh[:, 2:]], dim=1)
        scale = torch.tensor([[w, h, w, h] for h, w in sizes], dtype=xyxy.dtype, device=xyxy.device)
        return xyxy[None] * scale[:, None]

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, Any]] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        original = [tuple(im.shape[-2:]) for im in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        sizes = batch.image_sizes
        b = len(sizes)
        boxes = self._initial_boxes(sizes)
        queries = self.query_features.weight[None].expand(b, -1, -1)
        outputs, filters = [], None
        for stage in self.stages:
            roi = self.roi_pool(features, list(boxes.detach().unbind(0)), sizes)  # [B·N, C, 7, 7]
            roi = roi.flatten(2).transpose(1, 2)
            # the first stage refines the learnable query boxes (they train through it); later
            # stages start from the previous stage's boxes without gradient, as in Sparse R-CNN
            logits, refined, queries, filters = stage(roi, queries, boxes, filters)
            outputs.append((logits, refined))
            boxes = refined.detach()
        if self.training:
            return self.losses(outputs, targets, sizes)
        detections = self.postprocess(*outputs[-1], sizes)
        return self.transform.postprocess(detections, sizes, original)

    def postprocess(
        self, logits: torch.Tensor, boxes: torch.Tensor, sizes: list[tuple[int, int]]
    ) -> list[dict[str, torch.Tensor]]:
        out = []
        for cls, box, (h, w) in zip(logits.sigmoid(), boxes, sizes, strict=True):
            scores, flat = cls.flatten().topk(min(DETECTIONS_PER_IMAGE, cls.numel()))
            query, label = flat // self.num_classes, flat % self.num_classes
            kept = box[query]
            kept = torch.stack(
                [
                    kept[:, 0].clamp(0, w),
                    kept[:, 1].clamp(0, h),
                    kept[:, 2].clamp(0, w),
                    kept[:, 3].clamp(0, h),
                ],
                1,
            )
            out.append({"boxes": kept, "scores": scores, "labels": label + 1})
        return out

    def losses(
        self,
        outputs: list[tuple[torch.Tensor, torch.Tensor]],
        targets: list[dict[str, Any]],
        sizes: list[tuple[int, int]],
    ) -> dict[str, torch.Tensor]:
        total = {"loss_focal": 0.0, "loss_l1": 0.0, "loss_giou": 0.0}
        num_gt = max(1, sum(len(t["boxes"]) for t in targets))
        for logits, boxes in outputs:
            for key, value in stage_losses(logits, boxes, targets, sizes, self.num_classes).items():
                total[key] = total[key] + value / num_gt
        n = len(outputs)
        return {k: v / n for k, v in total.items()}


def match(
    cls_logits: torch.Tensor,
    boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    scale: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hungarian one-to-one matching of queries to ground truth; returns (query idx, gt idx)."""
    if len(gt_labels) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    with torch.no_grad():
        prob = cls_logits.sigmoid()[:, gt_labels]  # [N, G]
        alpha, gamma = 0.25, 2.0
        pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
        neg = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
        cost = (
            CLASS_WEIGHT * (pos - neg)
            + L1_WEIGHT * torch.cdist(boxes / scale, gt_boxes / scale, p=1)
            - GIOU_WEIGHT * generalized_box_iou(boxes, gt_boxes)
        )
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def stage_losses(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    targets: list[dict[str, Any]],
    sizes: list[tuple[int, int]],
    num_classes: int,
) -> dict[str, torch.Tensor]:
    """Focal, L1 (normalised boxes) and GIoU losses of one stage, summed over images (weights applied)."""
    focal = l1 = giou = logits.sum() * 0.0
    for cls, box, target, (h, w) in zip(logits, boxes, targets, sizes, strict=True):
        gt_labels = target["labels"] - 1
        gt_boxes = target["boxes"]
        scale = torch.tensor([w, h, w, h], dtype=box.dtype, device=box.device)
        q, g = match(cls, box, gt_labels, gt_boxes, scale)
        q, g = q.to(box.device), g.to(box.device)
        onehot = torch.zeros_like(cls)
        onehot[q, gt_labels[g]] = 1.0
        focal = focal + sigmoid_focal_loss(cls, onehot, alpha=0.25, gamma=2.0, reduction="sum")
        if len(q):
            l1 = l1 + (box[q] / scale - gt_boxes[g] / scale).abs().sum()
            giou = giou + (1 - torch.diag(generalized_box_iou(box[q], gt_boxes[g]))).sum()
    return {"loss_focal": CLASS_WEIGHT * focal, "loss_l1": L1_WEIGHT * l1, "loss_giou": GIOU_WEIGHT * giou}
