"""The vis protocol: frozen frame maps once, train the neck and the clip query head, score YouTube-VIS AP."""

from __future__ import annotations

import time
from typing import Any

import torch

from bob.context import RunContext
from bob.errors import UsageError
from bob.samples import SampleSet
from bob.task import TaskOutput
from bob.tasks.common.samples import save_samples
from bob.tasks.vis import REAL_IMAGE_SIZE, Vis, VisArgs
from bob.tasks.vis.data import VisSplit
from bob.tasks.vis.metrics import vis_metrics
from bob.tasks.vis.train import FrameMaps, predict, train_head


def run(task: Vis, ctx: RunContext) -> TaskOutput:
    args: VisArgs = task.args  # type: ignore[assignment]
    train, test = _splits(task, ctx)
    max_frames = max(s[0] for s in (*train.sizes, *test.sizes))
    size = args.image_size or ctx.info.image_size or REAL_IMAGE_SIZE
    backbone = ctx.build_backbone(input_size=size)
    torch.manual_seed(ctx.seed)
    maps = FrameMaps(backbone, args.dim, size, ctx.device)
    start = time.perf_counter()
    train_maps, test_maps = maps.extract(train, "train"), maps.extract(test, "test")
    extract_s = time.perf_counter() - start
    start = time.perf_counter()
    head, history = train_head(maps, train, train_maps, args, len(train.classes), max_frames, ctx.seed)
    train_s = time.perf_counter() - start
    results = predict(maps, head, test, test_maps, args.mask_threshold)
    samples: dict[str, SampleSet] = {}
    metrics, summary = vis_metrics(test.gt(), results, samples)
    protocol: dict[str, Any] = {
        "model": "frozen backbone → trainable pyramid neck → clip query head (shared queries, dot-product masks)",
        "backbone_mode": "frozen",
        "pyramid": maps.body.plan.describe(),
        "mask_stride": maps.mask_stride,
        "memory_stride": maps.memory_stride,
        "image_size": size,
        "matching": "Hungarian (scipy linear_sum_assignment) per clip on whole tracks; cost summed over frames",
        "optimizer": "AdamW",
        "schedule": "cosine to 0, per step",
        **args.identity(),
        "metric": "YouTube-VIS AP/AR: whole-track mask IoU (sum of intersections / sum of unions), "
        "pycocotools COCOeval (IoU .50:.95, 101 recall points, maxDets 1/10/100)",
        "num_results": len(results),
        "extract_s": round(extract_s, 2),
        "train_s": round(train_s, 2),
        **history,
        "cocoeval_summary": summary,
        "data": {"train": train.describe(), "test": test.describe()},
    }
    return save_samples(ctx, TaskOutput(metrics, protocol), samples["ap"])


def _splits(task: Vis, ctx: RunContext) -> tuple[VisSplit, VisSplit]:
    """The train and test splits: annotated instance tracks over the same categories."""
    train, test = ctx.split("train"), ctx.split("test")
    for split in (train, test):
        if not isinstance(split, VisSplit):
            raise UsageError(
                f"{task.name}: split '{split.split}' has no instance tracks; pick a vis dataset."
            )
        if len(split) == 0 or split.num_tracks() == 0:
            raise UsageError(f"{task.name}: split '{split.split}' has no annotated instance tracks.")
    if train.classes != test.classes:
        raise UsageError(f"{task.name}: train and test declare different categories; they must match.")
    return train, test  # type: ignore[return-value]
