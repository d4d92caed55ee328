"""A small clip-level query head over per-frame pyramid features, trained with track-level Hungarian matching.

Per frame, the frozen backbone's maps go through the shared neck (`BackboneWithPyramid` of
tasks/common/pyramid.py: an FPN, or ViTDet's simple pyramid for plain ViTs). Then, per clip:
  - `num_queries` learnable queries, shared by all frames of the clip, attend (a small transformer
    decoder) to the stride-16 tokens of every frame of the clip, each token tagged with its frame;
  - each query gives class logits (K classes + "no object") and a mask embedding; its mask in frame t
    is the dot product of that embedding with frame t's stride-4 pyramid map (Mask2Former-style).
  - memory tokens and mask maps both get a learned linear embedding of their (y, x) position.
One query is one track: it keeps its identity across the clip by construction.

Training matches queries to ground-truth tracks per clip with scipy's `linear_sum_assignment` on
    cost = w_class · (−p(class)) + w_dice · Σ_t dice_t + w_mask · Σ_t BCE_t
(dice and BCE per frame, summed over the clip's frames), and minimises the same terms for matched
queries plus cross-entropy towards "no object" (weight `no_object_weight`) for the others.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F

MASK_LEVEL, MEMORY_LEVEL = "0", "2"  # stride-4 maps for masks, stride-16 tokens for the decoder


class ClipQueryHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, num_queries: int, layers: int, max_frames: int) -> None:
        super().__init__()
        self.queries = nn.Embedding(num_queries, dim)
        self.frame_embed = nn.Embedding(max_frames, dim)
        self.pos = nn.Linear(2, dim)  # (y, x) in [-1, 1] → added to memory tokens and mask maps
        layer = nn.TransformerDecoderLayer(dim, 4, 4 * dim, dropout=0.0, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.cls = nn.Linear(dim, num_classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, memory: torch.Tensor, mask_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory [B, T, C, h, w], mask_maps [B, T, C, H, W] → logits [B, Q, K+1], mask logits [B, Q, T, H, W]."""
        b, t, c = memory.shape[:3]
        tokens = memory.flatten(3).transpose(2, 3)  # [B, T, hw, C]
        tokens = tokens + self.frame_embed.weight[:t, None, :] + self._pos(*memory.shape[-2:]).flatten(0, 1)
        tokens = tokens.reshape(b, -1, c)
        q = self.decoder(self.queries.weight.expand(b, -1, -1), tokens)
        mask_maps = mask_maps + self._pos(*mask_maps.shape[-2:]).permute(2, 0, 1)
        masks = torch.einsum("bqc,btchw->bqthw", self.mask_embed(q), mask_maps)
        return self.cls(q), masks

    def _pos(self, h: int, w: int) -> torch.Tensor:
        """[h, w, C] embedding of every position's normalised (y, x)."""
        ys = torch.linspace(-1, 1, h, device=self.pos.weight.device)
        xs = torch.linspace(-1, 1, w, device=self.pos.weight.device)
        return self.pos(torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1))


def _dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame dice loss between every pred [Q, T, P] (probabilities) and target [G, T, P] → [Q, G, T]."""
    inter = torch.einsum("qtp,gtp->qgt", pred, target)
    sums = pred.sum(-1)[:, None, :] + target.sum(-1)[None, :, :]
    return 1 - (2 * inter + 1) / (sums + 1)


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame mean BCE of every pred [Q, T, P] (logits) against every target [G, T, P] → [Q, G, T]."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (
        torch.einsum("qtp,gtp->qgt", pos, target) + torch.einsum("qtp,gtp->qgt", neg, 1 - target)
    ) / logits.shape[-1]


def match_tracks(
    logits: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    weights: tuple[float, float, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hungarian matching of queries to whole ground-truth tracks: (query indexes, track indexes).

    logits [Q, K+1], masks [Q, T, P] (mask logits), labels [G], targets [G, T, P] in [0, 1].
    """
    with torch.no_grad():
        w_cls, w_dice, w_mask = weights
        prob = logits.softmax(-1)[:, labels]  # [Q, G]
        cost = -w_cls * prob
        cost = cost + w_dice * _dice(masks.sigmoid(), targets).sum(-1) + w_mask * _bce(masks, targets).sum(-1)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def clip_loss(
    logits: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    weights: tuple[float, float, float],
    no_object_weight: float,
) -> torch.Tensor:
    """Loss of one clip: class CE over all queries + dice and BCE (summed over frames) of matched queries."""
    num_classes = logits.shape[-1] - 1
    class_weight = torch.ones(num_classes + 1, device=logits.device)
    class_weight[-1] = no_object_weight
    goal = torch.full((logits.shape[0],), num_classes, dtype=torch.long, device=logits.device)
    w_cls, w_dice, w_mask = weights
    if len(labels) == 0:
        return w_cls * F.cross_entropy(logits, goal, class_weight)
    rows, cols = match_tracks(logits, masks, labels, targets, weights)
    goal[rows] = labels[cols]
    loss = w_cls * F.cross_entropy(logits, goal, class_weight)
    m, t = masks[rows], targets[cols]
    dice = torch.diagonal(_dice(m.sigmoid(), t), dim1=0, dim2=1).sum(0)  # [G] summed over frames
    bce = torch.diagonal(_bce(m, t), dim1=0, dim2=1).sum(0)
    return loss + (w_dice * dice + w_mask * bce).mean()
