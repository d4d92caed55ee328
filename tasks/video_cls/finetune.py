"""`video-cls` fine-tune mode: backbone + temporal head trained end to end on random clips.

Each epoch draws one random clip per training video (random start, one random resized crop for the
clip, no flip; tasks/video_features.py). The frames of a batch of clips go through the backbone
together ([B·T, 3, S, S] → [B, T, D]), then the temporal head. Optimiser: AdamW with BoB's
layer-wise lr decay and weight-decay rules (tasks/layer_decay.py, the head at 10× the backbone's
rate), timm's per-step cosine schedule with one warm-up epoch, cross-entropy with label smoothing
0.1. The last epoch is kept (no validation split). Test: the same multi-view scoring as linear mode,
with the fine-tuned backbone, uncached.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from bob.errors import TrainingDivergedError, UsageError
from bob.progress import progress_bar
from bob.tasks.video_cls.features import eval_view_features, gather_views, random_train_clip
from bob.tasks.video_cls.temporal_pool import temporal_head

WEIGHT_DECAY = 0.05
LAYER_DECAY = 0.75
HEAD_LR_SCALE = 10.0
LABEL_SMOOTHING = 0.1
REAL_EPOCHS, GENERATED_EPOCHS = 30, 10


class VideoClassifier(nn.Module):
    def __init__(self, backbone: Any, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        b, t = clips.shape[:2]
        frames = self.backbone.forward_pooled(clips.flatten(0, 1))
        return self.head(frames.view(b, t, -1))


def _frame_dim(backbone: Any, size: int, device: Any) -> int:
    if backbone.meta.pooled_dim:
        return int(backbone.meta.pooled_dim)
    backbone.eval()
    with torch.no_grad():
        return int(backbone.forward_pooled(torch.zeros(1, 3, size, size, device=device)).shape[1])


def _optimizer(backbone: Any, head: nn.Module, lr: float) -> tuple[Any, str]:
    from timm.optim import create_optimizer_v2

    from bob.tasks.common.layer_decay import layer_decay_groups

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


def finetune_video(ctx: Any, train: Any, test: Any, spec: Any, views: Any, args: Any) -> dict[str, Any]:
    from timm.scheduler import CosineLRScheduler

    from bob.tasks.video_cls import multi_view_metrics

    epochs = args.ft_epochs or (GENERATED_EPOCHS if ctx.info.kind != "real" else REAL_EPOCHS)
    backbone = ctx.build_backbone(input_size=spec.size)
    torch.manual_seed(ctx.seed)
    head = temporal_head(args.pool, _frame_dim(backbone, spec.size, ctx.device), ctx.num_classes)
    model = VideoClassifier(backbone, head).to(ctx.device)
    optimizer, grouping = _optimizer(backbone, head, args.ft_lr)
    batch = min(args.ft_batch, len(train))
    steps_per_epoch = math.ceil(len(train) / batch)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=max(2, epochs * steps_per_epoch),  # see finetune_loop: 1 makes timm warn
        lr_min=1e-6,
        warmup_t=steps_per_epoch,
        warmup_lr_init=1e-6,
        t_in_epochs=False,
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    rng = np.random.default_rng(ctx.seed)
    history, step = [], 0
    with progress_bar("fine-tuning on clips", epochs * steps_per_epoch, "steps") as bar:
        for epoch in range(1, epochs + 1):
            model.train()
            order, losses = rng.permutation(len(train)), []
            for i in range(0, len(order), batch):
                idx = order[i : i + batch]
                clips = torch.stack([random_train_clip(train.frames(int(j)), spec, rng) for j in idx])
                labels = torch.from_numpy(train.labels[idx]).to(ctx.device)
                loss = loss_fn(model(clips.to(ctx.device)), labels)
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"video fine-tuning diverged at epoch {epoch}, step {step + 1}; lower ft_lr (now {args.ft_lr})."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                scheduler.step_update(num_updates=step)
                losses.append(float(loss.detach()))
                bar.advance(1)
            history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses)})
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
        "history": history,
    }
    return {"metrics": metrics, "protocol": protocol}
