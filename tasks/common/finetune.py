"""End-to-end fine-tuning of a backbone with a linear classifier: the recipe the classification suites share.

`finetune_classifier` trains `backbone.trainable()` plus a new linear head on `forward_pooled` with
BoB's recipe (timm 0.6 `train.py` + the `*_ft.yaml` defaults):
  - AdamW with layer-wise lr decay (common/layer_decay.py), weight decay off for 1-D parameters;
  - timm's cosine schedule with linear warm-up, stepped every optimizer step;
  - timm's training transform (RandomResizedCrop, flip, RandAugment, colour jitter, random erasing)
    at the task resolution with the backbone's mean/std; mixup/cutmix with label smoothing through
    `timm.data.Mixup` and `SoftTargetCrossEntropy` (plain label-smoothed cross-entropy when both
    alphas are 0);
  - AMP on CUDA (bfloat16 where supported, else float16 with a grad scaler);
  - after every epoch the model is scored on `val` and the best epoch's weights are kept (ties keep
    the earlier epoch); with no `val`, the last epoch is kept.
With `distill` (common/distill.py) the targets are a teacher's soft labels instead (labelled and
unlabeled images). A non-finite loss stops the run with `TrainingDivergedError`. The head follows BoB's
`reset_classifier`: a new Linear with Xavier-normal weights and zero bias.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn

from bob.backbones.base import Backbone, pooled_width
from bob.backbones.meta import DataConfig
from bob.data.base import ImageSplit
from bob.errors import UsageError
from bob.tasks.common.layer_decay import layer_decay_groups
from bob.tasks.common.metrics import classification_metrics
from bob.tasks.common.train_loop import AfterStep, KeepBest, TrainLoop, autocast
from bob.transforms import eval_transform

if TYPE_CHECKING:
    from bob.tasks.common.distill import SoftTargets

RAND_AUGMENT = "rand-m9-mstd0.5-inc1"
_OPTIMIZER_NAMES = {"adamw": "AdamW", "momentum": "SGD with momentum"}
# (model, images, targets, criterion) -> the step's loss; see `finetune_classifier(loss_fn=...)`.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, nn.Module], torch.Tensor]


@dataclass
class FinetuneConfig:
    """BoB's fine-tuning recipe; only `epochs` and `warmup_epochs` are scaled down by the suites."""

    epochs: int = 100
    warmup_epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_lr: float = 1e-4
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    mixup: float = 0.8
    cutmix: float = 1.0
    label_smoothing: float = 0.1
    auto_augment: str | None = RAND_AUGMENT
    color_jitter: float = 0.4
    random_erasing: float = 0.25
    amp: bool = True
    # Additions for suites with other recipes (dg: SGD with momentum, milder crops); the defaults are BoB's.
    opt: str = "adamw"  # a timm optimizer name ("momentum" = SGD with momentum, no Nesterov)
    momentum: float = 0.9  # used by the SGD-type optimizers only
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range


@dataclass
class FinetuneResult:
    model: nn.Module  # the classifier with the selected epoch's weights loaded
    state_dict: dict[str, torch.Tensor]  # those weights, on the CPU
    best_epoch: int
    val_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)


class Classifier(nn.Module):
    """`backbone.forward_pooled` followed by a linear head."""

    def __init__(self, backbone: Backbone, num_classes: int, input_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(pooled_width(backbone, input_size), num_classes)
        nn.init.xavier_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_pooled(x))


class _LabelledImages(torch.utils.data.Dataset):
    def __init__(self, split: ImageSplit, transform: Any) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.split.image(index)), int(self.split.labels[index])


def train_transform(cfg: FinetuneConfig, data_config: DataConfig) -> Any:
    from timm.data import create_transform

    transform = create_transform(
        data_config.input_size,
        is_training=True,
        auto_augment=cfg.auto_augment,
        color_jitter=cfg.color_jitter,
        re_prob=cfg.random_erasing,
        re_mode="pixel",
        scale=tuple(cfg.crop_scale),
        interpolation=data_config.interpolation,
        mean=tuple(data_config.mean),
        std=tuple(data_config.std),
    )
    _patch_posterize(transform)
    return transform


def _patch_posterize(transform: Any) -> None:
    """RandAugment's `inc` posterize keeps 4 down to 0 bits; Pillow ≥ 12 rejects 0 bits, which older
    Pillow (and the TF reference) turn into a black image. Restore that meaning for timm's ops."""
    from timm.data import auto_augment

    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):
            if op.aug_fn is auto_augment.posterize:
                op.aug_fn = _posterize_zero_bits_black


def _posterize_zero_bits_black(img: Any, bits_to_keep: int, **kwargs: Any) -> Any:
    from PIL import Image
    from timm.data import auto_augment

    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return auto_augment.posterize(img, bits_to_keep, **kwargs)


def evaluate(
    model: nn.Module,
    split: ImageSplit,
    data_config: DataConfig,
    device: Any,
    batch_size: int = 128,
    num_workers: int = 0,
    amp: bool = True,
) -> np.ndarray:
    """Logits [N, C] of `model` on `split` with the eval transform, in inference mode."""
    loader = torch.utils.data.DataLoader(
        _LabelledImages(split, eval_transform(data_config)),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
    )
    model.eval()
    outs = []
    with torch.inference_mode(), autocast(device, amp):
        for x, _ in loader:
            outs.append(model(x.to(device, non_blocking=True)).float().cpu())
    return torch.cat(outs).numpy()


def finetune_classifier(
    backbone: Backbone,
    train: ImageSplit,
    val: ImageSplit | None,
    num_classes: int,
    cfg: FinetuneConfig,
    data_config: DataConfig,
    device: torch.device | str,
    seed: int,
    num_workers: int = 0,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    distill: SoftTargets | None = None,
    loss_fn: LossFn | None = None,
) -> FinetuneResult:
    """Fine-tune `backbone` + a new head on `train`; select the epoch on `val` (else the last one).

    `on_epoch`, if given, is called with each epoch's record (epoch, train_loss, lr and, with a
    `val`, val_top1) once that epoch is scored: an in-protocol search reports it to Ray Tune.
    `distill`, if given, holds a teacher's logits for every row of `train` (see common/distill.py).
    `loss_fn(model, x, y, criterion)`, if given, computes a step's loss in place of
    `criterion(model(x), y)` (e.g. a style-adversarial step with two forward passes).
    """
    if distill is not None and loss_fn is not None:
        raise UsageError("fine-tuning takes a teacher (distill) or a custom loss_fn, not both.")
    device = torch.device(device)
    torch.manual_seed(seed)
    batch_size = _train_batch_size(len(train), cfg.batch_size)
    model = _classifier(backbone, num_classes, data_config.input_size).to(device)
    groups = layer_decay_groups(backbone, model.head, cfg.weight_decay, cfg.layer_decay)
    optimizer = create_optimizer_v2(
        groups.groups, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum
    )
    transform = train_transform(cfg, data_config)
    loader = torch.utils.data.DataLoader(
        _LabelledImages(train, transform) if distill is None else distill.dataset(train, transform),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,  # mixup pairs a batch with its own reversal: it needs an even, full batch
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(loader)
    total_steps, warmup_steps = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    scheduler = CosineLRScheduler(
        optimizer,
        # A one-step schedule (a smoke run) starts at the same lr either way; 2 keeps timm from warning.
        t_initial=max(2, total_steps),
        lr_min=cfg.min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=cfg.warmup_lr,
        t_in_epochs=False,
    )
    mixup, criterion = _mixup_and_loss(cfg, num_classes)

    def loss_of(batch: Any) -> torch.Tensor:
        if distill is not None:
            from bob.tasks.common.distill import batch_loss

            kd, smoothing = distill.config, cfg.label_smoothing
            return batch_loss(model, batch, mixup, kd, num_classes, smoothing, device)
        x, y = (t.to(device, non_blocking=True) for t in batch)
        if mixup is not None:
            x, y = mixup(x, y)
        if loss_fn is not None:
            return loss_fn(model, x, y, criterion)
        return criterion(model(x), y)

    history: list[dict[str, float]] = []

    def score(loop: TrainLoop) -> tuple[float, dict[str, float]]:
        record = {"epoch": loop.epoch, "train_loss": loop.epoch_mean_loss(), "lr": _top_lr(optimizer)}
        val_metrics: dict[str, float] = {}
        value = float(loop.epoch)  # no val: the last epoch wins
        if val is not None:
            logits = evaluate(model, val, data_config, device, batch_size, num_workers, cfg.amp)
            val_metrics = classification_metrics(logits, val.labels, num_classes)
            record["val_top1"] = value = val_metrics["top1"]
        history.append(record)
        if on_epoch is not None:
            on_epoch(dict(record))
        return value, val_metrics

    best = KeepBest(score)
    loop = TrainLoop(
        model,
        optimizer,
        loss_of,
        loader,
        device=device,
        epochs=cfg.epochs,
        amp=cfg.amp,
        hooks=[AfterStep(lambda step: scheduler.step_update(num_updates=step)), best],
        what="classifier",
        hint=f"lower the learning rate (task arg lr, now {cfg.lr}) or turn off amp",
        steps_per_epoch=steps_per_epoch,
    ).run()
    protocol = {
        **asdict(cfg),
        "optimizer": f"{_OPTIMIZER_NAMES.get(cfg.opt, cfg.opt)} (timm create_optimizer_v2)",
        "schedule": "timm CosineLRScheduler, per step, linear warm-up",
        "layer_decay_grouping": groups.grouping,
        "layer_decay_depths": groups.num_layers,
        "train_transform": "timm create_transform(is_training=True)",
        "mixup_active": mixup is not None,
        "loss": type(criterion).__name__ if distill is None else "distillation (tasks/common/distill.py)",
        "amp": str(loop.amp_dtype).removeprefix("torch.") if loop.amp_dtype is not None else "off",
        "train_batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
        "model_selection": "best val top-1 (earliest on ties)" if val is not None else "last epoch",
        "best_epoch": best.best_epoch,
        "num_train": len(train),
        "num_val": len(val) if val is not None else 0,
    }
    return FinetuneResult(model, best.best_state, best.best_epoch, best.best_extras, history, protocol)


def _classifier(backbone: Backbone, num_classes: int, input_size: int) -> Classifier:
    """Freeze what `trainable()` leaves out, then wrap backbone and head."""
    trainable = {id(p) for p in backbone.trainable().parameters()}
    for p in backbone.parameters():
        p.requires_grad_(id(p) in trainable)
    if not trainable:
        raise UsageError(f"{backbone.meta.name}: trainable() has no parameters; it cannot be fine-tuned.")
    return Classifier(backbone, num_classes, input_size)


def _train_batch_size(n: int, wanted: int) -> int:
    """The largest even batch ≤ `wanted` that fits `n` samples (mixup needs even batches)."""
    size = min(wanted, n) // 2 * 2
    if size < 2:
        raise UsageError(f"fine-tuning needs at least 2 training images, got {n}.")
    return size


def _mixup_and_loss(cfg: FinetuneConfig, num_classes: int) -> tuple[Any, nn.Module]:
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=cfg.mixup,
            cutmix_alpha=cfg.cutmix,
            label_smoothing=cfg.label_smoothing,
            num_classes=num_classes,
        )
        return mixup, SoftTargetCrossEntropy()
    if cfg.label_smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=cfg.label_smoothing)
    return None, nn.CrossEntropyLoss()


def _top_lr(optimizer: torch.optim.Optimizer) -> float:
    return max(g["lr"] for g in optimizer.param_groups)
