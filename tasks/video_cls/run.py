"""The video-cls protocol: check both splits, cut clips, then the linear (frozen, cached features) or the
fine-tune mode (finetune.py); see the package docstring."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from bob.backbones.base import Backbone
from bob.context import RunContext
from bob.data.base import stratified_partition
from bob.data.video import VideoSplit, Views, require_video_split
from bob.errors import UsageError
from bob.progress import progress_bar
from bob.task import TaskOutput
from bob.tasks.common.probe import run_linear_probe
from bob.tasks.common.samples import classification_samples, save_samples
from bob.tasks.video_cls import FIXED_POOLS, VideoCls, VideoClsArgs
from bob.tasks.video_cls.features import (
    RRC_RATIO,
    RRC_SCALE,
    ClipSpec,
    eval_view_features,
    gather_views,
    train_view_features,
)
from bob.tasks.video_cls.finetune import finetune_video
from bob.tasks.video_cls.heads import fit_temporal_conv
from bob.tasks.video_cls.metrics import multi_view_metrics, view_averaged
from bob.tasks.video_cls.temporal_pool import pool_frames

# (clip_len, stride) when not given: CVRL's 32 × 2 on real videos, 8 × 2 on the generated 24-frame clips.
REAL_CLIP, GENERATED_CLIP = (32, 2), (8, 2)
# The cached features of one split: (features, labels, metadata), as `ctx.cached` expects them.
Extracted = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def run(task: VideoCls, ctx: RunContext) -> TaskOutput:
    args: VideoClsArgs = task.args  # type: ignore[assignment]
    train = require_video_split(ctx.split("train"), task.name)
    test = require_video_split(ctx.split("test"), task.name)
    default = GENERATED_CLIP if ctx.info.kind != "real" else REAL_CLIP
    cfg = ctx.data_config
    spec = ClipSpec(args.clip_len or default[0], args.stride or default[1], cfg.input_size, cfg.mean, cfg.std)
    views = Views.parse(args.views)
    _check_readable(train, test)
    if args.mode == "finetune":
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
    output = TaskOutput(out["metrics"], out["protocol"], out.get("artifacts", {}))
    samples = classification_samples(view_averaged(out["view_logits"]), test.labels, units="video")
    return save_samples(ctx, output, samples)


def _check_readable(train: VideoSplit, test: VideoSplit) -> None:
    """Same classes in both splits, two classes at least, and every video file decodable, before any work."""
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


def _train_features(ctx: RunContext, train: VideoSplit, spec: ClipSpec, args: VideoClsArgs) -> np.ndarray:
    """[N, K, T, D]: frame features of `train_clips` seeded random clips per training video; cached."""
    key = {
        "transform": {**spec.to_dict(), "crop": "random resized", "scale": RRC_SCALE, "ratio": RRC_RATIO},
        "views": {"random_clips": args.train_clips, "seed": ctx.seed},
        "dataset": train.describe(),
        "dtype": "float32",
    }

    def extract(backbone: Backbone) -> Extracted:
        with progress_bar(f"extracting {train.dataset}/train clips", len(train), "videos") as bar:
            feats = train_view_features(
                backbone, train, spec, args.train_clips, ctx.seed, args.frame_batch, ctx.device, bar
            )
        return feats, train.labels, {}

    return ctx.cached("train", key, extract, "per-frame pooled, random clips").features


def _test_views(
    ctx: RunContext, test: VideoSplit, spec: ClipSpec, views: Views, args: VideoClsArgs
) -> Iterator[np.ndarray]:
    """Per test video, its views' frame features [V, T, D], one video at a time (all at once can be
    far larger than the cached rows they are cut from)."""
    key = {"transform": spec.to_dict(), "views": str(views), "dataset": test.describe(), "dtype": "float32"}

    def extract(backbone: Backbone) -> Extracted:
        with progress_bar(f"extracting {test.dataset}/test views", len(test), "videos") as bar:
            rows, counts = eval_view_features(backbone, test, spec, views, args.frame_batch, ctx.device, bar)
        return rows, test.labels, {"frame_counts": counts.tolist()}

    hit = ctx.cached("test", key, extract, "per-frame pooled, test views")
    return gather_views(hit.features, np.asarray(hit.meta["frame_counts"]), spec, views)


def _linear(
    ctx: RunContext, train: VideoSplit, test: VideoSplit, spec: ClipSpec, views: Views, args: VideoClsArgs
) -> dict[str, Any]:
    """Linear mode: a probe on a fixed pooling, or the temporal-conv head, on cached frozen features."""
    train_feats = _train_features(ctx, train, spec, args)  # [N, K, T, D]
    test_views = _test_views(ctx, test, spec, views, args)  # per video [V, T, D]
    rest, held = stratified_partition(train.labels, args.val_fraction, seed=ctx.seed)
    if args.pool not in FIXED_POOLS:
        return fit_temporal_conv(ctx, train_feats, train.labels, test_views, test.labels, args)
    out = _fixed_pool_probe(ctx, (train_feats, train.labels), (test_views, test.labels), (rest, held), args)
    out["protocol"]["val_source"] = f"stratified {args.val_fraction:.0%} of train videos (seed {ctx.seed})"
    return out


def _fixed_pool_probe(
    ctx: RunContext,
    train_xy: tuple[np.ndarray, np.ndarray],
    test_xy: tuple[Iterator[np.ndarray], np.ndarray],
    partition: tuple[np.ndarray, np.ndarray],
    args: VideoClsArgs,
) -> dict[str, Any]:
    """CLIP-style linear probe on pooled clip features (train videos `partition`ed into fit and
    validation rows); its head then scores every test view."""
    (train_feats, train_labels), (test_views, test_labels), (rest, held) = train_xy, test_xy, partition
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
        "head": "linear probe (tasks/common/probe.py) on pooled clip features",
        "probe_rows": "num_train / num_val count training clips, num_test counts test views",
    }
    protocol["train_clips_per_video"] = k
    return {"metrics": metrics, "protocol": protocol, "artifacts": {"head": head_path}, "view_logits": logits}
