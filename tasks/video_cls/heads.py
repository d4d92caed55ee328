"""The temporal-conv head on frozen per-frame features (`video-cls`, `pool=temporal-conv`, linear mode).

Frame features are standardised with train statistics (per dimension, over all training frames);
the head (model.py) trains with AdamW, cosine decay to zero stepped per batch, cross-entropy, on the
cached random training clips in minibatches reshuffled every epoch by a seeded generator, with fixed
hyperparameters (no search: the head is not convex, so a λ sweep like the linear probe's would not be
the same protocol). It then scores every test view.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from bob.context import RunContext
from bob.tasks.common.linear_head import Standardizer
from bob.tasks.common.train_loop import AfterStep, TrainLoop
from bob.tasks.video_cls import VideoClsArgs
from bob.tasks.video_cls.metrics import multi_view_metrics
from bob.tasks.video_cls.model import temporal_head

HEAD_BATCH = 64


def fit_temporal_conv(
    ctx: RunContext,
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_views: Iterable[np.ndarray],
    test_labels: np.ndarray,
    args: VideoClsArgs,
) -> dict[str, Any]:
    """Train the head on the [N, K, T, D] training clips, score the test views; metrics, protocol and
    the saved head."""
    n, k, t, d = train_feats.shape
    std = Standardizer.fit(train_feats.reshape(-1, d))
    x = torch.from_numpy(std(train_feats).reshape(n * k, t, d)).to(ctx.device)
    y = torch.from_numpy(np.repeat(train_labels, k)).to(ctx.device)
    torch.manual_seed(ctx.seed)
    head = temporal_head("temporal-conv", d, ctx.num_classes).to(ctx.device)
    _train_head(head, x, y, args, ctx)
    head.eval()
    with torch.inference_mode():
        logits = np.stack(
            [head(torch.from_numpy(std(v)).to(ctx.device)).float().cpu().numpy() for v in test_views]
        )
    metrics = multi_view_metrics(logits, test_labels, ctx.num_classes)
    state = {k_: v.cpu() for k_, v in head.state_dict().items()}
    path = ctx.save_artifact(
        "head",
        {
            "state_dict": state,
            "mean": torch.from_numpy(std.mean),
            "std": torch.from_numpy(std.std),
            "pool": "temporal-conv",
            "classes": list(ctx.classes),
        },
    )
    protocol = {
        "head": "temporal-conv: [f_t, f_t - f_t-1] → BatchNorm → depthwise Conv1d(k=3) → GELU → mean over time "
        "→ dropout 0.5 → linear",
        "optimizer": "AdamW, cosine to zero",
        "head_epochs": args.head_epochs,
        "head_lr": args.head_lr,
        "head_weight_decay": args.head_weight_decay,
        "head_batch_size": HEAD_BATCH,
        "features": "per-frame pooled, standardised with train statistics",
        "train_clips_per_video": k,
        "num_train_clips": int(n * k),
    }
    return {"metrics": metrics, "protocol": protocol, "artifacts": {"head": path}, "view_logits": logits}


def _train_head(
    head: nn.Module, x: torch.Tensor, y: torch.Tensor, args: VideoClsArgs, ctx: RunContext
) -> TrainLoop:
    """AdamW on minibatches of (x, y), cosine to zero over all steps."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.head_lr, weight_decay=args.head_weight_decay)
    total = args.head_epochs * math.ceil(len(x) / HEAD_BATCH)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total))
    )
    generator = torch.Generator().manual_seed(ctx.seed)
    loss_fn = nn.CrossEntropyLoss()

    def batches(epoch: int) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(x), generator=generator).to(ctx.device)
        for i in range(0, len(x), HEAD_BATCH):
            yield order[i : i + HEAD_BATCH]

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        return loss_fn(head(x[idx]), y[idx])

    return TrainLoop(
        head,
        optimizer,
        loss_of,
        batches,
        device=ctx.device,
        epochs=args.head_epochs,
        hooks=[AfterStep(lambda _: scheduler.step())],
        what="the temporal-conv head",
        hint=f"lower head_lr (now {args.head_lr})",
        progress_unit="epochs",
    ).run()
