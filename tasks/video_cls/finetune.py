"""`video-cls` fine-tune mode: backbone + temporal head trained end to end on random clips.

Each epoch draws one random clip per training video (random start, one random resized crop for the
clip, no flip; features.py) in a fresh random order. The frames of a batch of clips go through the
backbone together ([B·T, 3, S, S] → [B, T, D]), then the temporal head (model.py). Optimiser: AdamW with
BoB's layer-wise lr decay and weight-decay rules (tasks/common/layer_decay.py, the head at 10× the
backbone's rate), timm's per-step cosine schedule with one warm-up epoch, cross-entropy with label
smoothing 0.1, full precision (no AMP, on any device). The steps run in the shared training loop
(tasks/common/train_loop.py). The last epoch is kept (no validation split). Test: the same multi-view
scoring as linear mode, with the fine-tuned backbone, uncached.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn

from bob.backbones.base import Backbone
from bob.context import RunContext
from bob.data.video import VideoSplit, Views
from bob.errors import UsageError
from bob.progress import progress_bar
from bob.tasks.common.layer_decay import layer_decay_groups
from bob.tasks.common.train_loop import AfterStep, Hook, TrainLoop
from bob.tasks.video_cls import VideoClsArgs
from bob.tasks.video_cls.features import ClipSpec, eval_view_features, gather_views, random_train_clip
from bob.tasks.video_cls.metrics import multi_view_metrics
from bob.tasks.video_cls.model import VideoClassifier, temporal_head

WEIGHT_DECAY = 0.05
LAYER_DECAY = 0.75
HEAD_LR_SCALE = 10.0
LABEL_SMOOTHING = 0.1
REAL_EPOCHS, GENERATED_EPOCHS = 30, 10


def _frame_dim(backbone: Backbone, size: int, device: torch.device | str) -> int:
    if backbone.meta.pooled_dim:
        return int(backbone.meta.pooled_dim)
    backbone.eval()
    with torch.no_grad():
        return int(backbone.forward_pooled(torch.zeros(1, 3, size, size, device=device)).shape[1])


def _optimizer(backbone: Backbone, head: nn.Module, lr: float) -> tuple[torch.optim.Optimizer, str]:
    trainable = {id(p) for p in backbone.trainable().parameters()}
    if not trainable:
        raise UsageError(f"{backbone.meta.name}: trainable() has no parameters; it cannot be fine-tuned.")
    for p in backbone.parameters():
        p.requires_grad_(id(p) in trainable)
    groups = layer_decay_groups(backbone, head, WEIGHT_DECAY, LAYER_DECAY)
    head_ids = {id(p) for p in head.parameters()}
    for group in groups.groups:
        if any(id(p) in head_ids for p in group["params"]):
            group["lr_scale"] = group.get("lr_scale", 1.0) * HEAD_LR_SCALE
    return create_optimizer_v2(groups.groups, opt="adamw", lr=lr, weight_decay=WEIGHT_DECAY), groups.grouping


class _EpochRecord(Hook):
    """The mean training loss of every epoch, for the protocol's history."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def after_epoch(self, loop: TrainLoop) -> None:
        self.history.append({"epoch": loop.epoch, "train_loss": loop.epoch_mean_loss()})


def finetune_video(
    ctx: RunContext, train: VideoSplit, test: VideoSplit, spec: ClipSpec, views: Views, args: VideoClsArgs
) -> dict[str, Any]:
    """Fine-tune backbone + head on `train`'s random clips, score `test`'s views; metrics and protocol."""
    epochs = args.ft_epochs or (GENERATED_EPOCHS if ctx.info.kind != "real" else REAL_EPOCHS)
    backbone = ctx.build_backbone(input_size=spec.size)
    torch.manual_seed(ctx.seed)
    head = temporal_head(args.pool, _frame_dim(backbone, spec.size, ctx.device), ctx.num_classes)
    model = VideoClassifier(backbone, head).to(ctx.device)
    optimizer, grouping = _optimizer(backbone, head, args.ft_lr)
    batch = min(args.ft_batch, len(train))
    record = _train(ctx, model, optimizer, (train, spec), batch, epochs, args.ft_lr)
    model.eval()
    with progress_bar(f"scoring {test.dataset}/test views", len(test), "videos") as bar:
        rows, counts = eval_view_features(backbone, test, spec, views, args.frame_batch, ctx.device, bar)
    with torch.inference_mode():
        logits = np.stack(
            [
                head(torch.from_numpy(v).to(ctx.device)).float().cpu().numpy()
                for v in gather_views(rows, counts, spec, views)
            ]
        )
    metrics = multi_view_metrics(logits, test.labels, ctx.num_classes)
    protocol = {
        "epochs": epochs,
        "lr": args.ft_lr,
        "head_lr_scale": HEAD_LR_SCALE,
        "weight_decay": WEIGHT_DECAY,
        "layer_decay": LAYER_DECAY,
        "layer_decay_grouping": grouping,
        "optimizer": "AdamW (timm create_optimizer_v2)",
        "schedule": "timm CosineLRScheduler per step, 1 warm-up epoch",
        "label_smoothing": LABEL_SMOOTHING,
        "train_batch_clips": batch,
        "train_sampling": "one random clip per video per epoch",
        "model_selection": "last epoch",
        "history": record.history,
    }
    return {"metrics": metrics, "protocol": protocol, "view_logits": logits}


def _train(
    ctx: RunContext,
    model: VideoClassifier,
    optimizer: torch.optim.Optimizer,
    data: tuple[VideoSplit, ClipSpec],
    batch: int,
    epochs: int,
    lr: float,
) -> _EpochRecord:
    """`epochs` passes over the training videos (`data`: the split and how its clips are cut), `batch`
    clips a step, the cosine schedule updated after every step; returns the per-epoch record."""
    train, spec = data
    steps_per_epoch = math.ceil(len(train) / batch)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=max(2, epochs * steps_per_epoch),  # a one-step schedule makes timm warn
        lr_min=1e-6,
        warmup_t=steps_per_epoch,
        warmup_lr_init=1e-6,
        t_in_epochs=False,
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    # One generator draws each epoch's order and every clip's start, in the order the steps need them;
    # the crop boxes come from torch's global generator (features.random_train_clip).
    rng = np.random.default_rng(ctx.seed)

    def batches(epoch: int) -> Iterator[np.ndarray]:
        order = rng.permutation(len(train))
        for i in range(0, len(order), batch):
            yield order[i : i + batch]

    def loss_of(idx: np.ndarray) -> torch.Tensor:
        clips = torch.stack([random_train_clip(train.frames(int(j)), spec, rng) for j in idx])
        labels = torch.from_numpy(train.labels[idx]).to(ctx.device)
        return loss_fn(model(clips.to(ctx.device)), labels)

    record = _EpochRecord()
    TrainLoop(
        model,
        optimizer,
        loss_of,
        batches,
        device=ctx.device,
        epochs=epochs,
        hooks=[AfterStep(lambda step: scheduler.step_update(num_updates=step)), record],
        what="the video classifier on clips",
        hint=f"lower ft_lr (now {lr})",
        total_steps=epochs * steps_per_epoch,
    ).run()
    return record
