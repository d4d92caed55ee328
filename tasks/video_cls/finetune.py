"""`video-cls` fine-tune mode: backbone + temporal head trained end to end on random clips.

Each epoch draws one random clip per training video (random start, one random resized crop for the
clip, no flip; features.py) in a fresh random order. The frames of a batch of clips go through the
backbone together ([B·T, 3, S, S] → [B, T, D]), then the temporal head (model.py). Optimiser: AdamW with
BoB's layer-wise lr decay and weight-decay rules (tasks/common/layer_decay.py, the head at 10× the
backbone's rate), timm's per-step cosine schedule with one warm-up epoch, cross-entropy with label
smoothing 0.1, full precision (no AMP, on any device). The steps run in the shared training loop
(tasks/common/train_loop.py). The last epoch is kept (no validation split). Test: the same multi-view
scoring as linear mode, with the fine-tuned backbone, uncached.

Data-parallel (`bob run --gpus-per-run N`), every rank draws the same order of the training videos
(one generator, the run's seed), so every rank takes the same steps, and splits each step's clips
into N contiguous parts, one a rank (N must divide `ft_batch`). An epoch's last, smaller batch is split
as evenly as it goes, each rank's mean loss weighted by its share of it so that the averaged gradient
is the batch mean's; it is dropped when a rank would get fewer than two clips (the fixed-pool head's
BatchNorm cannot train on one), and the schedule counts the steps that are left. Clip starts and crop
boxes come from each rank's own streams (seed + rank). BatchNorm layers keep per-rank statistics while
training; rank 0's running statistics are copied to every rank before scoring. Each rank scores its
shard of the test videos and the view logits are gathered back in order, so the metrics are those of
one process with the same model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn

from bob import distributed
from bob.backbones.base import Backbone
from bob.context import RunContext
from bob.data.video import VideoSplit, Views
from bob.errors import UsageError
from bob.progress import Progress, progress_bar
from bob.tasks.common.data_parallel import per_device_batch, rank, record, world_size
from bob.tasks.common.layer_decay import layer_decay_groups
from bob.tasks.common.train_loop import AfterStep, Hook, TrainLoop, data_parallel
from bob.tasks.video_cls import VideoClsArgs
from bob.tasks.video_cls.features import ClipSpec, eval_view_features, gather_views, random_train_clip
from bob.tasks.video_cls.metrics import multi_view_metrics
from bob.tasks.video_cls.model import VideoClassifier, temporal_head

WEIGHT_DECAY = 0.05
LAYER_DECAY = 0.75
HEAD_LR_SCALE = 10.0
LABEL_SMOOTHING = 0.1
REAL_EPOCHS, GENERATED_EPOCHS = 30, 10
MIN_RANK_CLIPS = 2  # a rank's clips in a step, data-parallel: the fixed-pool head's BatchNorm1d needs 2


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
    batch = min(args.ft_batch, len(train))
    share = per_device_batch(batch, "ft_batch")  # before any work: the ranks must divide a step's clips
    if world_size() > 1 and share < MIN_RANK_CLIPS:
        raise UsageError(
            f"a data-parallel run of {world_size()} ranks gives each rank {share} of a step's {batch} clips; "
            f"the head's BatchNorm trains on {MIN_RANK_CLIPS} or more a rank: use ft_batch="
            f"{MIN_RANK_CLIPS * world_size()} or more."
        )
    backbone = ctx.build_backbone(input_size=spec.size)
    torch.manual_seed(ctx.seed)
    head = temporal_head(args.pool, _frame_dim(backbone, spec.size, ctx.device), ctx.num_classes)
    model = VideoClassifier(backbone, head).to(ctx.device)
    optimizer, grouping = _optimizer(backbone, head, args.ft_lr)
    epoch_record, steps_per_epoch = _train(ctx, model, optimizer, (train, spec), batch, epochs, args.ft_lr)
    with progress_bar(
        f"scoring {test.dataset}/test views", len(distributed.shard(len(test))), "videos"
    ) as bar:
        logits = score_views(model, test, spec, views, (args.frame_batch, ctx.num_classes), ctx.device, bar)
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
        "history": epoch_record.history,
    }
    shards = record(
        batch,
        split="each step's clips in contiguous parts over the ranks, from the same video order (seed) "
        "on every rank; an epoch's last batch split as evenly as it goes, each rank's loss weighted by "
        f"its share, dropped when a rank would get fewer than {MIN_RANK_CLIPS} clips",
        steps_per_epoch=steps_per_epoch,
        augmentation_seed="per rank: clip starts and crop boxes from seed + rank",
        evaluation="each rank scores its shard of the test videos; view logits gathered in order",
    )
    if shards is not None:
        protocol["data_parallel"] = shards
    return {"metrics": metrics, "protocol": protocol, "view_logits": logits}


def score_views(
    model: VideoClassifier,
    test: VideoSplit,
    spec: ClipSpec,
    views: Views,
    sizes: tuple[int, int],
    device: torch.device | str,
    bar: Progress,
) -> np.ndarray:
    """View logits [N, V, C] of every test video (`sizes`: frames per backbone forward, classes).
    Data-parallel, each rank scores its shard of the videos (`bar` counts them) and the logits are
    gathered back in the split's order: the rows are moved, never recomputed, so the metrics are one
    process's for the same model."""
    frame_batch, num_classes = sizes
    videos = distributed.shard(len(test))
    local = np.zeros((0, views.crops * views.clips, num_classes), dtype=np.float32)  # a rank with no video
    model.eval()
    if videos:
        rows, counts = eval_view_features(model.backbone, test, spec, views, frame_batch, device, bar, videos)
        with torch.inference_mode():
            local = np.stack(
                [
                    model.head(torch.from_numpy(v).to(device)).float().cpu().numpy()
                    for v in gather_views(rows, counts, spec, views)
                ]
            )
    return distributed.gather_rows(local, videos, len(test))


def rank_steps(order: np.ndarray, batch: int) -> list[tuple[np.ndarray, float]]:
    """This rank's clips of each step of an epoch whose videos come in `order`, `batch` a step, and
    the weight of its mean loss: every step whole at weight 1 in one process. Data-parallel, rank r
    takes the r-th of N contiguous parts of each step (module docstring); a part of the last, smaller
    batch is weighted by N × its share of that batch, so the mean over the ranks of the weighted
    losses (what DDP's gradient average gives) is the batch's mean loss."""
    steps = [order[i : i + batch] for i in range(0, len(order), batch)]
    world = world_size()
    if world == 1:
        return [(step, 1.0) for step in steps]
    if steps and len(steps[-1]) < MIN_RANK_CLIPS * world:
        steps = steps[:-1]
    out = []
    for step in steps:
        part = np.array_split(step, world)[rank()]
        out.append((part, world * len(part) / len(step)))
    return out


def _train(
    ctx: RunContext,
    model: VideoClassifier,
    optimizer: torch.optim.Optimizer,
    data: tuple[VideoSplit, ClipSpec],
    batch: int,
    epochs: int,
    lr: float,
) -> tuple[_EpochRecord, int]:
    """`epochs` passes over the training videos (`data`: the split and how its clips are cut), `batch`
    clips a step, the cosine schedule updated after every step; returns the per-epoch record and the
    steps of an epoch. Data-parallel, each rank trains on its part of every step (`rank_steps`)
    through the DDP-wrapped model."""
    train, spec = data
    steps_per_epoch = len(rank_steps(np.arange(len(train)), batch))
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
    # the crop boxes come from torch's global generator (features.random_train_clip). Data-parallel,
    # the order comes from the run's seed on every rank and the clips from each rank's own streams.
    rng = np.random.default_rng(ctx.seed)
    clip_rng = rng
    if distributed.active():
        clip_rng = np.random.default_rng([ctx.seed, rank()])
        torch.manual_seed(ctx.seed + rank())
    net = data_parallel(model)  # the model itself in one process

    def batches(epoch: int) -> Iterator[tuple[np.ndarray, float]]:
        yield from rank_steps(rng.permutation(len(train)), batch)

    def loss_of(step: tuple[np.ndarray, float]) -> torch.Tensor:
        idx, weight = step
        clips = torch.stack([random_train_clip(train.frames(int(j)), spec, clip_rng) for j in idx])
        labels = torch.from_numpy(train.labels[idx]).to(ctx.device)
        x = clips.to(ctx.device)
        if net is not model:
            # The frames are channels-last views (HWC arrays permuted); the conv weights' gradients
            # would follow, and DDP, whose gradient buckets are contiguous, warns and copies them.
            x = x.contiguous()
        loss = loss_fn(net(x), labels)
        return loss * weight if weight != 1.0 else loss

    epoch_record = _EpochRecord()
    TrainLoop(
        net,
        optimizer,
        loss_of,
        batches,
        device=ctx.device,
        epochs=epochs,
        hooks=[AfterStep(lambda step: scheduler.step_update(num_updates=step)), epoch_record],
        what="the video classifier on clips",
        hint=f"lower ft_lr (now {lr})",
        total_steps=epochs * steps_per_epoch,
    ).run()
    return epoch_record, steps_per_epoch
