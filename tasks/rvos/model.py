"""A small ReferFormer-style head: language as queries over a per-frame pyramid, dynamic mask kernels.

For a video of T frames and one expression:
  1. every frame goes through the backbone and the shared `BackboneWithPyramid` neck
     (tasks/common/pyramid.py: FPN, or ViTDet's simple pyramid for plain ViTs) → `dim`-channel maps
     at strides 4-32 (+ pool);
  2. the expression's sentence embedding (fixed text encoder) is projected to `dim` and added to each
     of `num_queries` learned query embeddings — ReferFormer's "language as queries";
  3. the same queries are decoded in every frame (`layers` torch TransformerDecoder layers:
     self-attention, cross-attention over that frame's stride-8/16/32 tokens plus a learned level
     embedding, FFN), so query `q` in frame t and in frame t' is the same instance — ReferFormer's
     links across frames by query index;
  4. each decoded query gives a score (is it the referred object?) and a dynamic 1×1 kernel (an
     MLP) that is dot-multiplied with the frame's stride-4 mask features, which are gated by the text
     (a simplified cross-modal FPN) → one mask logit map per query and frame.
Training matches the ground-truth track to one query index per video (lowest cost summed over frames:
mask BCE + dice − score), then applies sigmoid focal loss on scores, BCE and dice on the matched
masks. Inference takes the query with the highest score averaged over frames (ReferFormer's rule).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import sigmoid_focal_loss

from bob.backbones.base import Backbone
from bob.tasks.common.pyramid import BackboneWithPyramid

LOSS_WEIGHTS = {"score": 2.0, "mask": 2.0, "dice": 5.0}  # ReferFormer's cls / mask / dice coefficients


class ReferringHead(nn.Module):
    def __init__(
        self,
        backbone: Backbone,
        text_dim: int,
        *,
        dim: int = 64,
        num_queries: int = 5,
        layers: int = 1,
        heads: int = 4,
        frozen: bool = True,
        norm_eval: bool = True,
    ) -> None:
        super().__init__()
        self.body = BackboneWithPyramid(backbone, dim, frozen=frozen, norm_eval=norm_eval)
        self.levels = len(self.body.plan.strides)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.LayerNorm(dim))
        self.queries = nn.Embedding(num_queries, dim)
        self.level_embed = nn.Parameter(torch.randn(self.levels, dim) * 0.02)
        layer = nn.TransformerDecoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.score = nn.Linear(dim, 1)
        self.kernel = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.mask_conv = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(8, dim), nn.ReLU())
        self.text_gate = nn.Linear(dim, dim)

    def backbone_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's levels that feed the neck (no gradient when the backbone is frozen)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.body.frozen):
            return self.body.backbone.forward_features(x, list(self.body.plan.levels))

    def forward(self, maps: list[torch.Tensor], text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """maps: backbone levels of B×T frames ([B·T, C, h, w] each); text: [B, text_dim].

        Returns scores [B, T, Q] and mask logits [B, T, Q, H/4, W/4] (stride of the finest level)."""
        b = text.shape[0]
        t = maps[0].shape[0] // b
        pyramid = list(self.body.neck(OrderedDict((str(i), m) for i, m in enumerate(maps))).values())
        finest, coarse = pyramid[0], pyramid[1 : self.levels]
        memory = torch.cat(
            [m.flatten(2).transpose(1, 2) + self.level_embed[i + 1] for i, m in enumerate(coarse)], dim=1
        )
        sentence = self.text_proj(text)  # [B, D]
        frame_text = sentence.repeat_interleave(t, dim=0)  # [B·T, D]
        queries = self.queries.weight[None] + frame_text[:, None]
        decoded = self.decoder(queries, memory)  # [B·T, Q, D]
        scores = self.score(decoded).squeeze(-1)
        gate = torch.sigmoid(self.text_gate(frame_text))[:, :, None, None]
        features = self.mask_conv(finest) * gate
        masks = torch.einsum("nqd,ndhw->nqhw", self.kernel(decoded), features)
        return scores.view(b, t, -1), masks.view(b, t, *masks.shape[1:])


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − dice over the last two dims; logits and target broadcast."""
    p = logits.sigmoid().flatten(-2)
    g = target.flatten(-2)
    return 1 - (2 * (p * g).sum(-1) + 1) / (p.sum(-1) + g.sum(-1) + 1)


def referring_loss(
    scores: torch.Tensor, masks: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Match the target track [B, T, H, W] (float 0/1) to one query per video, then the weighted loss."""
    logits = F.interpolate(masks.flatten(0, 1), size=target.shape[-2:], mode="bilinear", align_corners=False)
    logits = logits.view(*masks.shape[:3], *target.shape[-2:])  # [B, T, Q, H, W]
    tgt = target[:, :, None].expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, tgt, reduction="none").mean((-2, -1))
    dice = _dice(logits, tgt)
    with torch.no_grad():
        cost = (bce + dice - scores.sigmoid()).sum(1)  # [B, Q]
        matched = cost.argmin(1)
    onehot = F.one_hot(matched, scores.shape[-1]).float()[:, None].expand_as(scores)
    pick = matched[:, None].expand(-1, scores.shape[1])[..., None]
    parts = {
        "score": sigmoid_focal_loss(scores, onehot, reduction="mean"),
        "mask": bce.gather(2, pick).mean(),
        "dice": dice.gather(2, pick).mean(),
    }
    total = sum(LOSS_WEIGHTS[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def best_query_masks(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The mask logits [B, T, h, w] of each video's query with the highest mean score over frames."""
    best = scores.sigmoid().mean(1).argmax(1)  # [B]
    index = best[:, None, None, None, None].expand(-1, masks.shape[1], 1, *masks.shape[-2:])
    return masks.gather(2, index).squeeze(2)
