"""Temporal pooling of per-frame features into one clip feature (numpy; the heads are in model.py).

Per-frame features `f_1 … f_T` ([..., T, D]) become a clip feature:
  - `mean`: mean_t f_t. Blind to frame order: a clip and its time reversal get the same feature, so
    motion direction (left vs right, grow vs shrink) is unlearnable by design. Kept as a baseline.
  - `mean+diff` (default): concat[mean_t f_t, mean_t (f_{t+1} − f_t)]. The second half telescopes to
    (f_T − f_1) / (T − 1) and flips sign under time reversal, so direction survives; still a fixed
    feature, so the probe on top stays linear.
  - `temporal-conv`: a learned head, not a fixed pooling (model.py).
"""

from __future__ import annotations

import numpy as np

from bob.tasks.video_cls import FIXED_POOLS


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


def pooled_dim(pool: str, frame_dim: int) -> int:
    return 2 * frame_dim if pool == "mean+diff" else frame_dim
