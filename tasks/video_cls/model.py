"""The trainable clip heads ([B, T, D] frame features → logits [B, C]) and the fine-tuned video classifier.

  - fixed pools (`mean`, `mean+diff`; temporal_pool.py) as a head: the same pooling on a torch tensor,
    batch-normalised (the learned counterpart of the linear probe's standardisation: the difference
    half is far smaller than the mean half), then linear;
  - `temporal-conv`: each step t = 2…T carries [f_t, f_t − f_{t−1}], batch-normalised per channel
    (frame differences are much smaller than the frames; unscaled, the head fits appearance and ignores
    them), then a depthwise Conv1d over time (kernel 3) → GELU → mean over time → dropout 0.5 → linear
    classifier. Order-aware by its input.
`VideoClassifier` runs a backbone over every frame of a batch of clips, then a head (finetune.py).
"""

from __future__ import annotations

import torch
from torch import nn

from bob.backbones.base import Backbone
from bob.tasks.video_cls import FIXED_POOLS, POOLS
from bob.tasks.video_cls.temporal_pool import pooled_dim

TCONV_KERNEL = 3
TCONV_DROPOUT = 0.5


def pool_frames_torch(frames: torch.Tensor, pool: str) -> torch.Tensor:
    """`temporal_pool.pool_frames` on a torch tensor [B, T, D] (used when the backbone is fine-tuned)."""
    mean = frames.mean(dim=1)
    if pool == "mean":
        return mean
    return torch.cat([mean, torch.diff(frames, dim=1).mean(dim=1)], dim=1)


class FixedPoolHead(nn.Module):
    """Parameter-free temporal pooling, batch-normalised, then linear."""

    def __init__(self, pool: str, frame_dim: int, num_classes: int) -> None:
        super().__init__()
        self.pool = pool
        self.norm = nn.BatchNorm1d(pooled_dim(pool, frame_dim))
        self.fc = nn.Linear(pooled_dim(pool, frame_dim), num_classes)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(pool_frames_torch(frames, self.pool)))


class TemporalConvHead(nn.Module):
    """[f_t, f_t − f_{t−1}] → BatchNorm → depthwise Conv1d → GELU → mean over time → dropout → linear."""

    def __init__(self, frame_dim: int, num_classes: int) -> None:
        super().__init__()
        width = 2 * frame_dim
        self.norm = nn.BatchNorm1d(width)
        self.conv = nn.Conv1d(width, width, TCONV_KERNEL, padding=TCONV_KERNEL // 2, groups=width)
        self.act = nn.GELU()
        self.drop = nn.Dropout(TCONV_DROPOUT)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        steps = torch.cat([frames[:, 1:], torch.diff(frames, dim=1)], dim=2)  # [B, T-1, 2D]
        hidden = self.act(self.conv(self.norm(steps.transpose(1, 2))))  # [B, 2D, T-1]
        return self.fc(self.drop(hidden.mean(dim=2)))


def temporal_head(pool: str, frame_dim: int, num_classes: int) -> nn.Module:
    """The trainable clip head for `pool`: [B, T, D] → logits [B, C]."""
    if pool in FIXED_POOLS:
        return FixedPoolHead(pool, frame_dim, num_classes)
    if pool == "temporal-conv":
        return TemporalConvHead(frame_dim, num_classes)
    raise ValueError(f"unknown pool '{pool}'; valid: {', '.join(POOLS)}")


class VideoClassifier(nn.Module):
    """The backbone over every frame of a batch of clips ([B, T, 3, S, S] → [B, T, D]), then the head."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        b, t = clips.shape[:2]
        frames = self.backbone.forward_pooled(clips.flatten(0, 1))
        return self.head(frames.view(b, t, -1))
