"""The tradeoff protocol: build the points (anchors, stitches or backbones), score each by a linear
probe and cost it in MACs, then find the Pareto front and its hypervolume."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from bob.backbones.meta import DataConfig
from bob.context import RunContext
from bob.data.base import ImageSplit, stratified_partition
from bob.errors import UsageError
from bob.features import extract_pooled, split_batches
from bob.pareto import hypervolume_2d, pareto_mask
from bob.progress import progress_bar
from bob.samples import SampleSet, make_samples
from bob.task import TaskOutput
from bob.tasks.common.args import ProbeArgs
from bob.tasks.common.cost import count_macs
from bob.tasks.common.probe import run_linear_probe
from bob.tasks.common.samples import save_samples, top1_predictions
from bob.tasks.tradeoff import Tradeoff, TradeoffArgs
from bob.tasks.tradeoff.points import Point, build_others, curve_points, stitch_points

REFERENCE_MARGIN = 1.05  # the hypervolume box reaches 5% past the most expensive point


def run(task: Tradeoff, ctx: RunContext) -> TaskOutput:
    args = task.args
    train_split, _ = ctx.split("train"), ctx.split("test")  # both loaded before any model is built
    own = ctx.build_backbone().eval()
    backbones = [own, *build_others(ctx, args)]
    if args.mode == "stitch":
        points = stitch_points(ctx, args, backbones, train_split)
        configs = [ctx.data_config] * len(points)
    else:
        points = curve_points(backbones)
        configs = [
            dataclasses.replace(b.data_config, input_size=ctx.data_config.input_size) for b in backbones
        ]
    chosen = _score_points(ctx, args, points, configs)
    return save_samples(ctx, _output(points, args, chosen, configs[0]), curve_samples(points, ctx))


def curve_samples(points: list[Point], ctx: RunContext) -> SampleSet:
    """Per test image, whether each point's probe got it right, with the points' MACs: a resample of
    the images moves every point's top-1 together, and the hypervolume is recomputed from them."""
    arrays = {
        "correct": np.stack([p.hits for p in points if p.hits is not None]),
        "macs": np.array([p.macs for p in points], dtype=np.float64),
    }
    params = {"margin": REFERENCE_MARGIN}
    return make_samples(
        "hypervolume", "hypervolume", arrays, units="image", truth=(ctx.split("test").labels,), params=params
    )


def _features(
    ctx: RunContext, module: torch.nn.Module, split: ImageSplit, data_config: DataConfig
) -> np.ndarray:
    batches = split_batches(split, data_config, ctx.batch_size, ctx.num_workers, torch.device(ctx.device))
    return extract_pooled(module, batches, len(split), torch.device(ctx.device))


def _score_points(
    ctx: RunContext, args: TradeoffArgs, points: list[Point], configs: list[DataConfig]
) -> float | None:
    """Each point's MACs and probe top-1 (set on the point); returns the probe's λ, chosen by the
    validation sweep on the first point (the cheapest anchor, or the run's backbone in curve mode)."""
    train_split, test_split = ctx.split("train"), ctx.split("test")  # cached by the context
    rest, held = stratified_partition(train_split.labels, args.val_fraction, seed=ctx.seed)
    probe = ProbeArgs()
    chosen: float | None = None
    y = train_split.labels
    with progress_bar("scoring points", len(points), "points") as bar:
        for point, config in zip(points, configs, strict=True):
            one = torch.zeros(1, 3, config.input_size, config.input_size, device=ctx.device)
            point.macs = count_macs(point.module.forward_pooled, one)
            xtr = _features(ctx, point.module, train_split, config)
            xte = _features(ctx, point.module, test_split, config)
            out = run_linear_probe(
                (xtr[rest], y[rest]),
                (xtr[held], y[held]),
                (xte, test_split.labels),
                ctx.num_classes,
                dataclasses.replace(probe, weight_decay=chosen),
                ctx.seed,
                ctx.device,
            )
            if chosen is None:
                chosen = out["protocol"]["selected_weight_decay"]
            point.top1 = out["metrics"]["top1"]
            point.hits = top1_predictions(out["test_logits"]) == test_split.labels
            bar.advance(1)
    return chosen


def _output(points: list[Point], args: TradeoffArgs, chosen: float | None, config: DataConfig) -> TaskOutput:
    xy = np.array([[p.macs, p.top1] for p in points], dtype=float)
    if not np.isfinite(xy).all() or (xy[:, 0] <= 0).any():
        raise UsageError("a point has no MACs or no accuracy; the curve cannot be scored.")
    on_front = pareto_mask(xy, (True, False))
    ref_x = REFERENCE_MARGIN * xy[:, 0].max()
    hv = hypervolume_2d(xy, (ref_x, 0.0), (True, False)) / ref_x  # the box is ref_x wide, top-1 1 high
    metrics: dict[str, float] = {
        "hypervolume": float(hv),
        "best_top1": float(xy[:, 1].max()),
        "num_points": float(len(points)),
        "num_pareto": float(on_front.sum()),
    }
    for p in points:
        if p.kind != "stitch":
            metrics[f"top1/{p.name}"] = p.top1
    protocol = {
        "mode": args.mode,
        "points": [_point_record(p, bool(f)) for p, f in zip(points, on_front, strict=True)],
        "accuracy": "linear probe on frozen pooled features (the linear-probe suite's head), λ chosen once "
        "on the first point's validation sweep and reused",
        "probe_weight_decay": chosen,
        "cost": "MACs of one image, torch FlopCounterMode (FLOPs / 2), at the task's input size",
        "input_size": config.input_size,
        "hypervolume_reference": "(1.05 x max MACs, top-1 0), normalised by that box's area",
        "stitching": _stitching_record(args) if args.mode == "stitch" else None,
    }
    return TaskOutput(metrics, protocol, {})


def _point_record(p: Point, pareto: bool) -> dict[str, Any]:
    return {
        "name": p.name,
        "kind": p.kind,
        "macs": p.macs,
        "gmacs": p.macs / 1e9,
        "params": p.params,
        "top1": p.top1,
        "pareto": pareto,
        **({"stitch": p.stitch} if p.stitch else {}),
    }


def _stitching_record(args: TradeoffArgs) -> dict[str, str]:
    training = (
        f"the layer alone, {args.stitch_steps} Adam steps (lr {args.stitch_lr}, batch 32) of "
        f"cross-entropy through a temporary linear classifier, on the same {args.ls_init_samples} "
        "images; anchors frozen"
        if args.stitch_steps
        else "none (least-squares init only)"
    )
    return {
        "windows": f"kernel {args.stitch_kernel}, stride {args.stitch_stride}",
        "pairs": "nearest anchors by MACs, front = cheaper",
        "init": f"least squares on the tokens of {args.ls_init_samples} train images",
        "training": training,
    }
