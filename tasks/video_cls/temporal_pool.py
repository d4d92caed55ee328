"""Temporal pooling of per-frame features into one clip feature, and the small temporal-conv head.

Per-frame features `f_1 … f_T` ([..., T, D]) become a clip feature:
  - `mean`: mean_t f_t. Blind to frame order: a clip and its time reversal get the same feature, so
    motion direction (left vs right, grow vs shrink) is unlearnable by design. Kept as a baseline.
  - `mean+diff` (default): concat[mean_t f_t, mean_t (f_{t+1} − f_t)]. The second half telescopes to
    (f_T − f_1) / (T − 1) and flips sign under time reversal, so direction survives; still a fixed
    feature, so the probe on top stays linear.
  - `temporal-conv`: a learned head, not a fixed pooling. Each step t = 2…T carries
    [f_t, f_t − f_{t−1}], batch-normalised per channel (frame differences are much smaller than the
    frames; unscaled, the head fits appearance and ignores them), then a depthwise Conv1d over time
    (kernel 3) → GELU → mean over time → dropout 0.5 → linear classifier. Order-aware by its input.
`mean` and `mean+diff` are numpy functions; the head imports torch only when built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

POOLS: tuple[str, ...] = ("mean", "mean+diff", "temporal-conv")
FIXED_POOLS: tuple[str, ...] = ("mean", "mean+diff")
TCONV_KERNEL = 3
TCONV_DROPOUT = 0.5


def pool_frames(frames: np.ndarray, pool: str) -> np.ndarray:
    """[..., T, D] per-frame features → [..., D] (`mean`) or [..., 2D] (`mean+diff`)."""
    if pool not in FIXED_POOLS:
        raise ValueError(f"pool_frames takes one of {FIXED_POOLS}, got '{pool}'")
    mean = frames.mean(axis=-2)
    if pool == "mean":
        return mean.astype(np.float32)
    if frames.shape[-2] < 2:
        raise ValueError("mean+diff pooling needs clips of at least 2 frames")
    diff = np.diff(frames, axis=-2).mean(axis=-2)
    return np.concatenate([mean, diff], axis=-1).astype(np.float32)


def pool_frames_torch(frames: Any, pool: str) -> Any:
    """The same pooling on a torch tensor [B, T, D] (used when the backbone is fine-tuned)."""
    import torch

    mean = frames.mean(dim=1)
    if pool == "mean":
        return mean
    return torch.cat([mean, torch.diff(frames, dim=1).mean(dim=1)], dim=1)


def pooled_dim(pool: str, frame_dim: int) -> int:
    return 2 * frame_dim if pool == "mean+diff" else frame_dim


def temporal_head(pool: str, frame_dim: int, num_classes: int) -> Any:
    """The trainable clip head for `pool`: [B, T, D] → logits [B, C]."""
    from torch import nn

    class FixedPoolHead(nn.Module):
        """Parameter-free temporal pooling, batch-normalised (the learned counterpart of the linear
        probe's standardisation: the difference half is far smaller than the mean half), then linear."""

        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm1d(pooled_dim(pool, frame_dim))
            self.fc = nn.Linear(pooled_dim(pool, frame_dim), num_classes)

        def forward(self, frames: Any) -> Any:
            return self.fc(self.norm(pool_frames_torch(frames, pool)))

    class TemporalConvHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            width = 2 * frame_dim
            self.norm = nn.BatchNorm1d(width)
            self.conv = nn.Conv1d(width, width, TCONV_KERNEL, padding=TCONV_KERNEL // 2, groups=width)
            self.act = nn.GELU()
            self.drop = nn.Dropout(TCONV_DROPOUT)
            self.fc = nn.Linear(width, num_classes)

        def forward(self, frames: Any) -> Any:
            import torch

            steps = torch.cat([frames[:, 1:], torch.diff(frames, dim=1)], dim=2)  # [B, T-1, 2D]
            hidden = self.act(self.conv(self.norm(steps.transpose(1, 2))))  # [B, 2D, T-1]
            return self.fc(self.drop(hidden.mean(dim=2)))

    if pool in FIXED_POOLS:
        return FixedPoolHead()
    if pool == "temporal-conv":
        return TemporalConvHead()
    raise ValueError(f"unknown pool '{pool}'; valid: {', '.join(POOLS)}")
