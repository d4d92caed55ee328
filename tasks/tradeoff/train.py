"""The brief training of a stitching layer (`stitch_steps`), on the one training loop."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from bob.tasks.common.train_loop import TrainLoop
from bob.tasks.tradeoff.stitching import StitchedViT

BATCH = 32  # images per step, drawn with replacement from the least-squares images


def _random_batches(
    n: int, steps: int, generator: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor]:
    """`steps` index batches drawn from `generator`, one per step, lazily (so the draws interleave
    with the steps exactly as a hand-written loop's would)."""
    for _ in range(steps):
        yield torch.randint(n, (min(BATCH, n),), generator=generator).to(device)


def train_stitch(
    module: StitchedViT, x: torch.Tensor, y: torch.Tensor, num_classes: int, steps: int, lr: float, seed: int
) -> tuple[float, float]:
    """Briefly train one stitching layer: Adam on cross-entropy through a temporary linear classifier on
    the stitch's pooled output, on images `x` with labels `y`; the anchors stay frozen (and in eval
    mode). Returns the first and last step's loss."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    module.eval()
    anchors = [*module.front.parameters(), *module.end.parameters()]
    was = [p.requires_grad for p in anchors]
    for p in anchors:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            dim = module.forward_pooled(x[:1]).shape[1]
        head = nn.Linear(dim, num_classes).to(x.device)
        optimizer = torch.optim.Adam([*module.layer.parameters(), *head.parameters()], lr=lr)

        def loss_of(idx: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(head(module.forward_pooled(x[idx])), y[idx])

        # The loop puts its model in train mode: give it only what trains (the layer and the head),
        # so the frozen anchors stay in eval mode.
        trained = nn.ModuleList([module.layer, head])
        batches = _random_batches(len(x), steps, gen, x.device)
        loop = TrainLoop(
            trained,
            optimizer,
            loss_of,
            batches,
            device=x.device,
            iterations=steps,
            what="stitching layer",
            hint="lower stitch_lr",
        ).run()
    finally:
        for p, flag in zip(anchors, was, strict=True):
            p.requires_grad_(flag)
    return loop.losses[0], loop.losses[-1]
