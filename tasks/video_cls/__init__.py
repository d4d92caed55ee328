"""`video-cls/<dataset>`: video classification from per-frame backbone features (CVRL linear evaluation).

Every frame of a clip goes through the image backbone's `forward_pooled`; a temporal pooling
(tasks/temporal_pool.py, default the order-aware `mean+diff`) or a small temporal-conv head turns the
[T, D] frame features into a clip prediction.

Modes:
  - `linear` (default): the backbone is frozen. Training features are `train_clips` seeded random
    clips per video (random start, random resized crop, no flip), cached once; test features are the
    `views` (CVRL: 10 uniformly spaced clips × 3 crops), cached once. Fixed pools get the
    linear-probe protocol (tasks/linear_probe.py: L2 softmax head, λ swept on a held-out 20 % of the
    training *videos*); `temporal-conv` trains its head with AdamW.
  - `finetune`: backbone and head train end to end on one fresh random clip per video per epoch
    (tasks/video_finetune.py); scored on the same views, uncached.
Prediction: the softmax averaged over a video's views (top-1 on that is the main metric); the mean
single-view top-1 is reported too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bob.errors import UsageError
from bob.task import Task, TaskOutput, run_arg
from bob.tasks.common.args import ProbeArgs
from bob.tasks.video_cls.temporal_pool import FIXED_POOLS, POOLS

if TYPE_CHECKING:
    from bob.context import RunContext

MODES = ("linear", "finetune")
# (clip_len, stride) when not given: CVRL's 32 × 2 on real videos, 8 × 2 on the generated 24-frame clips.
REAL_CLIP, GENERATED_CLIP = (32, 2), (8, 2)


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
        from bob.data.video import Views

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

    def run(self, ctx: RunContext) -> TaskOutput:
        from bob.data.video import Views, require_video_split
        from bob.tasks.video_cls.features import RRC_RATIO, RRC_SCALE, ClipSpec

        args: VideoClsArgs = self.args  # type: ignore[assignment]
        train = require_video_split(ctx.split("train"), self.name)
        test = require_video_split(ctx.split("test"), self.name)
        default = GENERATED_CLIP if ctx.info.kind != "real" else REAL_CLIP
        cfg = ctx.data_config
        spec = ClipSpec(
            args.clip_len or default[0], args.stride or default[1], cfg.input_size, cfg.mean, cfg.std
        )
        views = Views.parse(args.views)
        _check_readable(ctx, train, test)
        if args.mode == "finetune":
            from bob.tasks.video_cls.finetune import finetune_video

            out = finetune_video(ctx, train, test, spec, views, args)
        else:
            out = _linear(ctx, train, test, spec, views, args)
        out["protocol"].update(
            {
                "mode": args.mode,
                "pool": args.pool,
                "clip": spec.to_dict(),
                "views": str(views),
                "view_layout": "uniformly spaced clips × crops along the long side (1: centre; 3: both ends + centre)",
                "view_aggregation": "mean of softmax probabilities",
                "train_clip_sampling": "uniform random start; one random resized crop per clip (area "
                f"{RRC_SCALE[0]}-{RRC_SCALE[1]}, aspect {RRC_RATIO[0]}-{RRC_RATIO[1]}); no flip",
                "num_train_videos": len(train),
                "num_test_videos": len(test),
            }
        )
        return TaskOutput(out["metrics"], out["protocol"], out.get("artifacts", {}))


def _check_readable(ctx: RunContext, train: Any, test: Any) -> None:
    from bob.progress import progress_bar

    if train.classes != test.classes:
        only = sorted(set(train.classes) ^ set(test.classes))
        raise UsageError(
            f"{train.dataset}: the train and test splits have different classes (in one split only: "
            f"{', '.join(only[:10]) or 'none; the order differs'}); labels would not line up."
        )
    for split in (train, test):
        if len(np.unique(split.labels)) < 2:
            raise UsageError(f"{split.dataset}/{split.split} needs videos of at least 2 classes.")
        if split.decodes_files:
            with progress_bar(f"checking {split.dataset}/{split.split} videos", len(split), "videos") as bar:
                split.check_readable(bar)


def multi_view_metrics(view_logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Metrics of the view-averaged softmax ([N, V, C] logits), plus the mean single-view top-1."""
    from scipy.special import softmax

    from bob.tasks.common.metrics import classification_metrics

    probs = softmax(view_logits, axis=-1)
    metrics = classification_metrics(probs.mean(axis=1), labels, num_classes)
    metrics["top1_single_view"] = float((view_logits.argmax(-1) == labels[:, None]).mean())
    return metrics


def _train_features(ctx: RunContext, train: Any, spec: Any, args: VideoClsArgs) -> np.ndarray:
    from bob.progress import progress_bar
    from bob.tasks.video_cls.features import RRC_RATIO, RRC_SCALE, train_view_features

    key = {
        "transform": {**spec.to_dict(), "crop": "random resized", "scale": RRC_SCALE, "ratio": RRC_RATIO},
        "views": {"random_clips": args.train_clips, "seed": ctx.seed},
        "dataset": train.describe(),
        "dtype": "float32",
    }

    def extract(backbone: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        with progress_bar(f"extracting {train.dataset}/train clips", len(train), "videos") as bar:
            feats = train_view_features(
                backbone, train, spec, args.train_clips, ctx.seed, args.frame_batch, ctx.device, bar
            )
        return feats, train.labels, {}

    return ctx.cached("train", key, extract, "per-frame pooled, random clips").features


def _test_views(
    ctx: RunContext, test: Any, spec: Any, views: Any, args: VideoClsArgs
) -> Iterator[np.ndarray]:
    """Per test video, its views' frame features [V, T, D], one video at a time (all at once can be
    far larger than the cached rows they are cut from)."""
    from bob.progress import progress_bar
    from bob.tasks.video_cls.features import eval_view_features, gather_views

    key = {"transform": spec.to_dict(), "views": str(views), "dataset": test.describe(), "dtype": "float32"}

    def extract(backbone: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        with progress_bar(f"extracting {test.dataset}/test views", len(test), "videos") as bar:
            rows, counts = eval_view_features(backbone, test, spec, views, args.frame_batch, ctx.device, bar)
        return rows, test.labels, {"frame_counts": counts.tolist()}

    hit = ctx.cached("test", key, extract, "per-frame pooled, test views")
    return gather_views(hit.features, np.asarray(hit.meta["frame_counts"]), spec, views)


def _linear(
    ctx: RunContext, train: Any, test: Any, spec: Any, views: Any, args: VideoClsArgs
) -> dict[str, Any]:
    from bob.data.base import stratified_partition

    train_feats = _train_features(ctx, train, spec, args)  # [N, K, T, D]
    test_views = _test_views(ctx, test, spec, views, args)  # per video [V, T, D]
    rest, held = stratified_partition(train.labels, args.val_fraction, seed=ctx.seed)
    if args.pool in FIXED_POOLS:
        out = _fixed_pool_probe(ctx, train_feats, train.labels, test_views, test.labels, rest, held, args)
    else:
        from bob.tasks.video_cls.heads import fit_temporal_conv

        return fit_temporal_conv(ctx, train_feats, train.labels, test_views, test.labels, args)
    out["protocol"]["val_source"] = f"stratified {args.val_fraction:.0%} of train videos (seed {ctx.seed})"
    return out


def _fixed_pool_probe(
    ctx, train_feats, train_labels, test_views, test_labels, rest, held, args
) -> dict[str, Any]:
    """CLIP-style linear probe on pooled clip features; its head then scores every test view."""
    from bob.tasks.common.probe import run_linear_probe
    from bob.tasks.video_cls.temporal_pool import pool_frames

    pooled = pool_frames(train_feats, args.pool)  # [N, K, P]
    k = pooled.shape[1]

    def rows(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return pooled[idx].reshape(-1, pooled.shape[-1]), np.repeat(train_labels[idx], k)

    test_pooled = np.stack([pool_frames(v, args.pool) for v in test_views])  # [N, V, P]
    n, v, p = test_pooled.shape
    flat_test = (test_pooled.reshape(n * v, p), np.repeat(test_labels, v))
    out = run_linear_probe(rows(rest), rows(held), flat_test, ctx.num_classes, args, ctx.seed, ctx.device)
    head = out["head"]
    std = (test_pooled - head["mean"].numpy()) / head["std"].numpy()
    logits = std @ head["weight"].numpy() + head["bias"].numpy()  # [N, V, C]
    metrics = multi_view_metrics(logits, test_labels, ctx.num_classes)
    head_path = ctx.save_artifact("head", {**head, "pool": args.pool, "classes": list(ctx.classes)})
    protocol = {
        **out["protocol"],
        "head": "linear probe (tasks/linear_probe.py) on pooled clip features",
        "probe_rows": "num_train / num_val count training clips, num_test counts test views",
    }
    protocol["train_clips_per_video"] = k
    return {"metrics": metrics, "protocol": protocol, "artifacts": {"head": head_path}}
