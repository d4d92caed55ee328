"""`video-cls/<dataset>`: video classification from per-frame backbone features (CVRL linear evaluation).

Every frame of a clip goes through the image backbone's `forward_pooled` (features.py); a temporal
pooling (temporal_pool.py, default the order-aware `mean+diff`) or a small temporal-conv head
(model.py) turns the [T, D] frame features into a clip prediction.

Modes:
  - `linear` (default): the backbone is frozen. Training features are `train_clips` seeded random
    clips per video (random start, random resized crop, no flip), cached once; test features are the
    `views` (CVRL: 10 uniformly spaced clips × 3 crops), cached once. Fixed pools get the
    linear-probe protocol (tasks/common/probe.py: L2 softmax head, λ swept on a held-out 20 % of the
    training *videos*); `temporal-conv` trains its head with AdamW (heads.py).
  - `finetune`: backbone and head train end to end on one fresh random clip per video per epoch
    (finetune.py); scored on the same views, uncached. Trains data-parallel under
    `bob run --gpus-per-run N` (finetune.py says how).
Prediction: the softmax averaged over a video's views (top-1 on that is the main metric; metrics.py);
the mean single-view top-1 is reported too. The protocol is run.py; the datasets' loaders data.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.data.video import Views
from bob.errors import UsageError
from bob.task import Task, run_arg
from bob.tasks.common.args import ProbeArgs

MODES = ("linear", "finetune")
# The temporal poolings (temporal_pool.py and model.py): fixed features first, then the learned head.
POOLS: tuple[str, ...] = ("mean", "mean+diff", "temporal-conv")
FIXED_POOLS: tuple[str, ...] = ("mean", "mean+diff")


@dataclass
class VideoClsArgs(ProbeArgs):
    mode: str = run_arg("linear", "linear (frozen backbone, cached features) or finetune (end to end)")
    pool: str = run_arg("mean+diff", "temporal pooling: mean | mean+diff | temporal-conv")
    clip_len: int | None = run_arg(None, "frames per clip (default: 32 on real videos, 8 on generated)")
    stride: int | None = run_arg(None, "temporal stride between a clip's frames (default 2)")
    views: str = run_arg("10x3", "test views CLIPSxCROPS: uniformly spaced clips × 1 or 3 spatial crops")
    train_clips: int = run_arg(2, "linear mode: seeded random clips per training video (cached)")
    frame_batch: int = run_arg(128, "frames per backbone forward")
    head_epochs: int = run_arg(60, "temporal-conv head epochs (linear mode)")
    head_lr: float = run_arg(1e-3, "temporal-conv head AdamW learning rate")
    head_weight_decay: float = run_arg(5e-2, "temporal-conv head AdamW weight decay")
    ft_epochs: int | None = run_arg(None, "finetune mode: epochs (default: 30 real, 10 generated)")
    ft_lr: float = run_arg(3e-4, "finetune mode: AdamW peak learning rate (head: 10×)")
    ft_batch: int = run_arg(8, "finetune mode: clips per step")

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'.")
        if self.pool not in POOLS:
            raise UsageError(f"pool must be one of {', '.join(POOLS)}, got '{self.pool}'.")
        Views.parse(self.views)
        for name in ("clip_len", "stride", "ft_epochs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value}.")
        if self.clip_len is not None and self.clip_len < 2 and self.pool != "mean":
            raise UsageError(
                f"pool {self.pool} needs clips of at least 2 frames (clip_len), got {self.clip_len}."
            )
        for name in ("train_clips", "frame_batch", "head_epochs", "ft_batch"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if min(self.head_lr, self.ft_lr) <= 0 or self.head_weight_decay < 0:
            raise UsageError("head_lr and ft_lr must be positive, head_weight_decay non-negative.")


class VideoCls(Task):
    suite = "video-cls"
    version = "1"
    main_metric = "top1"
    task_types: ClassVar[tuple[str, ...]] = ("video",)
    data_parallel = True  # mode=finetune: each step's clips split over the ranks (finetune.py)
    not_data_parallel: ClassVar[dict[tuple[str, str], str]] = {
        ("mode", "linear"): "fits heads on cached frozen features (nothing to train data-parallel)",
    }
    description = (
        "per-frame features, order-aware temporal pooling (mean+diff); linear (frozen) or fine-tuned; "
        "top-1 of the softmax averaged over clips × crops (CVRL: 10×3)"
    )
    Args = VideoClsArgs
    check_args: ClassVar[dict[str, str]] = {
        "views": "2x1",
        "train_clips": "1",
        "epochs": "2",
        "min_steps": "20",
        "weight_decay": "0.001",
    }
    check_dataset: ClassVar[str] = "moving-sprites-mini"
