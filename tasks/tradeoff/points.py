"""The points of a tradeoff curve: the backbones as they are (curve mode), or the anchors and every
stitch between neighbouring anchors (stitch mode), each with the parameters it runs."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from bob.backbones import resolve_backbone
from bob.backbones.base import Backbone
from bob.context import RunContext
from bob.data.base import ImageSplit
from bob.features import split_batches
from bob.progress import progress_bar
from bob.tasks.common.cost import count_macs
from bob.tasks.tradeoff import TradeoffArgs
from bob.tasks.tradeoff.stitching import (
    AnchorViT,
    StitchedViT,
    block_tokens,
    least_squares_layer,
    paired_stitches,
    vit_trunk,
)
from bob.tasks.tradeoff.train import train_stitch


@dataclasses.dataclass
class Point:
    name: str
    kind: str  # "anchor" | "stitch" | "backbone"
    module: nn.Module  # with `forward_pooled`
    params: int
    stitch: dict[str, Any] | None = None
    macs: int = 0
    top1: float = 0.0
    hits: np.ndarray | None = None  # per test image: the probe's top-1 is right (what top1 averages)


def build_others(ctx: RunContext, args: TradeoffArgs) -> list[Backbone]:
    """The `anchors`, at the run's input size, on the run's device, in eval mode."""
    weights = ctx.spec.weights if args.anchor_weights == "same" else args.anchor_weights
    size = ctx.data_config.input_size
    out = []
    for name in args.anchors:
        ref = resolve_backbone(name, weights, {}, ctx.seed)
        out.append(ref.build(size if size != ref.data_config.input_size else None).to(ctx.device).eval())
    return out


def curve_points(backbones: list[Backbone]) -> list[Point]:
    return [Point(b.meta.name, "backbone", b, sum(p.numel() for p in b.parameters())) for b in backbones]


def _params(modules: list[nn.Module], direct: Iterable[nn.Parameter] = ()) -> int:
    seen: dict[int, int] = {}
    for m in modules:
        for p in m.parameters():
            seen[id(p)] = p.numel()
    for p in direct:
        seen[id(p)] = p.numel()
    return sum(seen.values())


def _stitch_params(front: nn.Module, end: nn.Module, i: int, j: int, layer: nn.Module) -> int:
    """Parameters a stitch runs: front's embedding and blocks ..i, the layer, end's blocks j+1.. and head norms."""
    direct = [p for n, p in front.named_parameters(recurse=False)]  # cls token, positions, registers
    used = [front.patch_embed, front.norm_pre, *front.blocks[: i + 1], layer, *end.blocks[j + 1 :], end.norm]
    used += [
        getattr(end, a)
        for a in ("fc_norm", "attn_pool")
        if isinstance(getattr(end, a, None), torch.nn.Module)
    ]
    return _params(used, direct)


def first_images(ctx: RunContext, split: ImageSplit, n: int) -> list[torch.Tensor]:
    """The first `n` train images under the run's eval transform (tensors), for least squares."""
    batches = split_batches(split, ctx.data_config, ctx.batch_size, 0, torch.device("cpu"))
    out: list[torch.Tensor] = []
    for batch in batches:
        out.extend(batch)
        if len(out) >= n:
            break
    return out[:n]


def stitch_points(
    ctx: RunContext, args: TradeoffArgs, backbones: list[Backbone], train: ImageSplit
) -> list[Point]:
    """The anchors sorted by MACs, then every stitch of each neighbouring pair (front = cheaper)."""
    trunks = [vit_trunk(b) for b in backbones]
    x = torch.stack(first_images(ctx, train, args.ls_init_samples))
    y = torch.as_tensor(train.labels[: len(x)], dtype=torch.long, device=ctx.device)
    one = x[:1].to(ctx.device)
    anchors = [AnchorViT(t, b.meta.name) for t, b in zip(trunks, backbones, strict=True)]
    order = sorted(range(len(anchors)), key=lambda k: count_macs(anchors[k].forward_pooled, one))
    points = [Point(anchors[k].meta.name, "anchor", anchors[k], _params([trunks[k]])) for k in order]
    with progress_bar("initialising stitches", len(order) - 1, "pairs") as bar:
        for a, b in itertools.pairwise(order):
            points += _pair_stitches(ctx, args, backbones, trunks, (a, b), (x, y))
            bar.advance(1)
    return points


def _pair_stitches(
    ctx: RunContext,
    args: TradeoffArgs,
    backbones: list[Backbone],
    trunks: list[nn.Module],
    pair: tuple[int, int],
    images: tuple[torch.Tensor, torch.Tensor],
) -> list[Point]:
    """Every stitch of anchors `pair` (front, end): least-squares layers on the tokens of `images`,
    each then trained `stitch_steps` steps when asked."""
    (a, b), (x, y) = pair, images
    front, end = trunks[a], trunks[b]
    tokens_f = block_tokens(front, x.to(ctx.device))
    tokens_e = block_tokens(end, x.to(ctx.device))
    points = []
    for i, j in paired_stitches(len(front.blocks), len(end.blocks), args.stitch_kernel, args.stitch_stride):
        layer = least_squares_layer(tokens_f[i].cpu(), tokens_e[j].cpu()).to(ctx.device)
        name = f"{backbones[a].meta.name}[..{i}] -> {backbones[b].meta.name}[{j + 1}..]"
        module = StitchedViT(front, end, i, j, layer, name)
        stitch: dict[str, Any] = {"front": a, "end": b, "i": i, "j": j}
        if args.stitch_steps:
            first, last = train_stitch(
                module, x.to(ctx.device), y, ctx.num_classes, args.stitch_steps, args.stitch_lr, ctx.seed
            )
            stitch["train_loss"] = {"first": first, "last": last}
        points.append(Point(name, "stitch", module, _stitch_params(front, end, i, j, layer), stitch))
    return points
