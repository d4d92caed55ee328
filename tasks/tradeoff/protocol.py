"""The `tradeoff` suite's work: build the points (anchors, stitches), score and cost them, find the front."""

from __future__ import annotations

import dataclasses
import itertools
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bob.data.base import stratified_partition
from bob.errors import UsageError
from bob.features import extract_pooled, split_batches
from bob.pareto import hypervolume_2d, pareto_mask
from bob.progress import progress_bar
from bob.task import TaskOutput
from bob.tasks.common.args import ProbeArgs
from bob.tasks.common.probe import run_linear_probe
from bob.tasks.efficiency.measure import count_macs
from bob.tasks.tradeoff import REFERENCE_MARGIN, TradeoffArgs
from bob.tasks.tradeoff.stitching import (
    AnchorViT,
    StitchedViT,
    block_tokens,
    least_squares_layer,
    paired_stitches,
    train_stitch,
    vit_trunk,
)

if TYPE_CHECKING:
    from bob.context import RunContext


@dataclasses.dataclass
class Point:
    name: str
    kind: str  # "anchor" | "stitch" | "backbone"
    module: Any
    params: int
    stitch: dict[str, Any] | None = None
    macs: int = 0
    top1: float = 0.0


def _build_others(ctx: RunContext, args: TradeoffArgs) -> list[Any]:
    from bob.backbones import resolve_backbone

    weights = ctx.spec.weights if args.anchor_weights == "same" else args.anchor_weights
    size = ctx.data_config.input_size
    out = []
    for name in args.anchors:
        ref = resolve_backbone(name, weights, {}, ctx.seed)
        out.append(ref.build(size if size != ref.data_config.input_size else None).to(ctx.device).eval())
    return out


def _params(modules: list[Any], direct: list[Any] = ()) -> int:
    seen: dict[int, int] = {}
    for m in modules:
        for p in m.parameters():
            seen[id(p)] = p.numel()
    for p in direct:
        seen[id(p)] = p.numel()
    return sum(seen.values())


def _stitch_params(front: Any, end: Any, i: int, j: int, layer: Any) -> int:
    """Parameters a stitch runs: front's embedding and blocks ..i, the layer, end's blocks j+1.. and head norms."""
    direct = [p for n, p in front.named_parameters(recurse=False)]  # cls token, positions, registers
    used = [front.patch_embed, front.norm_pre, *front.blocks[: i + 1], layer, *end.blocks[j + 1 :], end.norm]
    used += [
        getattr(end, a)
        for a in ("fc_norm", "attn_pool")
        if isinstance(getattr(end, a, None), torch.nn.Module)
    ]
    return _params(used, direct)


def _stitch_points(ctx: RunContext, args: TradeoffArgs, backbones: list[Any], train: Any) -> list[Point]:
    trunks = [vit_trunk(b) for b in backbones]
    x = torch.stack(_first_images(ctx, train, args.ls_init_samples))
    y = torch.as_tensor(train.labels[: len(x)], dtype=torch.long, device=ctx.device)
    one = x[:1].to(ctx.device)
    anchors = [AnchorViT(t, b.meta.name) for t, b in zip(trunks, backbones, strict=True)]
    order = sorted(range(len(anchors)), key=lambda k: count_macs(anchors[k].forward_pooled, one))
    points = [Point(anchors[k].meta.name, "anchor", anchors[k], _params([trunks[k]])) for k in order]
    with progress_bar("initialising stitches", len(order) - 1, "pairs") as bar:
        for a, b in itertools.pairwise(order):
            front, end = trunks[a], trunks[b]
            tokens_f = block_tokens(front, x.to(ctx.device))
            tokens_e = block_tokens(end, x.to(ctx.device))
            for i, j in paired_stitches(
                len(front.blocks), len(end.blocks), args.stitch_kernel, args.stitch_stride
            ):
                layer = least_squares_layer(tokens_f[i].cpu(), tokens_e[j].cpu()).to(ctx.device)
                name = f"{backbones[a].meta.name}[..{i}] -> {backbones[b].meta.name}[{j + 1}..]"
                module = StitchedViT(front, end, i, j, layer, name)
                stitch: dict[str, Any] = {"front": a, "end": b, "i": i, "j": j}
                if args.stitch_steps:
                    first, last = train_stitch(
                        module,
                        x.to(ctx.device),
                        y,
                        ctx.num_classes,
                        args.stitch_steps,
                        args.stitch_lr,
                        ctx.seed,
                    )
                    stitch["train_loss"] = {"first": first, "last": last}
                points.append(Point(name, "stitch", module, _stitch_params(front, end, i, j, layer), stitch))
            bar.advance(1)
    return points


def _first_images(ctx: RunContext, split: Any, n: int) -> list[Any]:
    """The first `n` train images under the run's eval transform (tensors), for least squares."""
    batches = split_batches(split, ctx.data_config, ctx.batch_size, 0, torch.device("cpu"))
    out: list[Any] = []
    for batch in batches:
        out.extend(batch)
        if len(out) >= n:
            break
    return out[:n]


def _features(ctx: RunContext, module: Any, split: Any, data_config: Any) -> np.ndarray:
    batches = split_batches(split, data_config, ctx.batch_size, ctx.num_workers, torch.device(ctx.device))
    return extract_pooled(module, batches, len(split), torch.device(ctx.device))


def run_tradeoff(ctx: RunContext, args: TradeoffArgs) -> TaskOutput:
    train_split, test_split = ctx.split("train"), ctx.split("test")
    own = ctx.build_backbone().eval()
    backbones = [own, *_build_others(ctx, args)]
    if args.mode == "stitch":
        points = _stitch_points(ctx, args, backbones, train_split)
        configs = [ctx.data_config] * len(points)
    else:
        points = [
            Point(b.meta.name, "backbone", b, sum(p.numel() for p in b.parameters())) for b in backbones
        ]
        configs = [
            dataclasses.replace(b.data_config, input_size=ctx.data_config.input_size) for b in backbones
        ]
    rest, held = stratified_partition(train_split.labels, args.val_fraction, seed=ctx.seed)
    probe = ProbeArgs()
    chosen: float | None = None
    with progress_bar("scoring points", len(points), "points") as bar:
        for point, config in zip(points, configs, strict=True):
            one = torch.zeros(1, 3, config.input_size, config.input_size, device=ctx.device)
            point.macs = count_macs(point.module.forward_pooled, one)
            xtr = _features(ctx, point.module, train_split, config)
            xte = _features(ctx, point.module, test_split, config)
            y = train_split.labels
            out = run_linear_probe(
                (xtr[rest], y[rest]),
                (xtr[held], y[held]),
                (xte, test_split.labels),
                ctx.num_classes,
                dataclasses.replace(probe, weight_decay=chosen),
                ctx.seed,
                ctx.device,
            )
            if chosen is None:  # the first point: the cheapest anchor (stitch) or the run's backbone (curve)
                chosen = out["protocol"]["selected_weight_decay"]
            point.top1 = out["metrics"]["top1"]
            bar.advance(1)
    return _output(points, args, chosen, configs[0])


def _output(points: list[Point], args: TradeoffArgs, chosen: float | None, config: Any) -> TaskOutput:
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
        "points": [
            {
                "name": p.name,
                "kind": p.kind,
                "macs": p.macs,
                "gmacs": p.macs / 1e9,
                "params": p.params,
                "top1": p.top1,
                "pareto": bool(f),
                **({"stitch": p.stitch} if p.stitch else {}),
            }
            for p, f in zip(points, on_front, strict=True)
        ],
        "accuracy": "linear probe on frozen pooled features (the linear-probe suite's head), λ chosen once "
        "on the first point's validation sweep and reused",
        "probe_weight_decay": chosen,
        "cost": "MACs of one image, torch FlopCounterMode (FLOPs / 2), at the task's input size",
        "input_size": config.input_size,
        "hypervolume_reference": "(1.05 x max MACs, top-1 0), normalised by that box's area",
        "stitching": (
            {
                "windows": f"kernel {args.stitch_kernel}, stride {args.stitch_stride}",
                "pairs": "nearest anchors by MACs, front = cheaper",
                "init": f"least squares on the tokens of {args.ls_init_samples} train images",
                "training": (
                    f"the layer alone, {args.stitch_steps} Adam steps (lr {args.stitch_lr}, batch 32) of "
                    f"cross-entropy through a temporary linear classifier, on the same {args.ls_init_samples} "
                    "images; anchors frozen"
                    if args.stitch_steps
                    else "none (least-squares init only)"
                ),
            }
            if args.mode == "stitch"
            else None
        ),
    }
    return TaskOutput(metrics, protocol, {})
