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
  - gradient accumulation (`accum_steps` batches per optimizer step, as BoB's `accum_iter`), so
    one device reaches BoB's effective batch;
  - after every epoch the model is scored on `val` and the best epoch's weights are kept (ties keep
    the earlier epoch); with no `val`, the last epoch is kept.
With `distill` (common/distill_loss.py; the teacher comes from common/distill.py) the targets are a teacher's soft labels instead (labelled and
unlabeled images). A non-finite loss stops the run with `TrainingDivergedError`. The head follows BoB's
`reset_classifier`: a new Linear with Xavier-normal weights and zero bias.
The suites call it through common/finetune_run.py, which adds what a run brings: a fresh trainable
backbone, the validation holdout, the test split's metrics and the saved checkpoint.

Data-parallel (a run bob launched on several ranks, bob/distributed.py): the run keeps its batch,
accumulation and effective batch, hence its id and its lr. Each optimizer step's batches are
split over the ranks (`WindowSampler`): fewer accumulation micro-steps per rank when the ranks divide
`accum_steps`, else a smaller batch per rank. Augmentation is drawn per sample from (seed, epoch,
index), so what a sample sees does not depend on the rank it lands on, and `evaluate` scores each
rank's shard of a split and gathers the logits back into dataset order: the metrics are those of the
same model in one process. What was split is recorded in the protocol's `data_parallel`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import Mixup, auto_augment, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn
from torchvision.transforms import Compose

from bob import distributed
from bob.backbones.base import Backbone, pooled_width
from bob.backbones.meta import DataConfig
from bob.data.base import ImageSplit
from bob.errors import UsageError
from bob.tasks.common.data_parallel import world_size
from bob.tasks.common.distill_loss import ImageTransform, SoftTargets, batch_loss
from bob.tasks.common.layer_decay import ParamGroups, layer_decay_groups
from bob.tasks.common.metrics import classification_metrics
from bob.tasks.common.recipe import FinetuneConfig
from bob.tasks.common.train_loop import AfterStep, Hook, KeepBest, TrainLoop, autocast, data_parallel
from bob.transforms import eval_transform

_OPTIMIZER_NAMES = {"adamw": "AdamW", "momentum": "SGD with momentum"}
# (model, images, targets, criterion) -> the step's loss; see `finetune_classifier(loss_fn=...)`.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, nn.Module], torch.Tensor]


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


class LabelledImages(torch.utils.data.Dataset):
    """(transformed image, label) pairs of a split, for a DataLoader."""

    def __init__(self, split: ImageSplit, transform: ImageTransform) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.split.image(index)), int(self.split.labels[index])


def train_transform(cfg: FinetuneConfig, data_config: DataConfig) -> Compose:
    """timm's training transform at the task resolution with the backbone's mean/std."""
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


def _patch_posterize(transform: Compose) -> None:
    """RandAugment's `inc` posterize keeps 4 down to 0 bits; Pillow ≥ 12 rejects 0 bits, which older
    Pillow (and the TF reference) turn into a black image. Restore that meaning for timm's ops."""
    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):
            if op.aug_fn is auto_augment.posterize:
                op.aug_fn = _posterize_zero_bits_black


def _posterize_zero_bits_black(img: Image.Image, bits_to_keep: int, **kwargs: Any) -> Image.Image:
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return auto_augment.posterize(img, bits_to_keep, **kwargs)


def evaluate(
    model: nn.Module,
    split: ImageSplit,
    data_config: DataConfig,
    device: torch.device | str,
    batch_size: int = 128,
    num_workers: int = 0,
    amp: bool = True,
) -> np.ndarray:
    """Logits [N, C] of `model` on `split` with the eval transform, in inference mode. Data-parallel,
    each rank scores its shard and every rank gets all N rows, in order."""
    images: torch.utils.data.Dataset = LabelledImages(split, eval_transform(data_config))
    rows = None
    if distributed.active():
        rows = distributed.shard(len(split))
        images = torch.utils.data.Subset(images, rows)
    loader = torch.utils.data.DataLoader(
        images,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
    )
    model.eval()
    outs = []
    with torch.inference_mode(), autocast(device, amp):
        for x, _ in loader:
            outs.append(model(x.to(device, non_blocking=True)).float().cpu())
    if rows is None:
        return torch.cat(outs).numpy()
    local = torch.cat(outs).numpy() if outs else np.zeros((0, 0), dtype=np.float32)
    return distributed.gather_rows(local, rows, len(split))


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
    `distill`, if given, holds a teacher's logits for every row of `train` (see common/distill_loss.py).
    `loss_fn(model, x, y, criterion)`, if given, computes a step's loss in place of
    `criterion(model(x), y)` (e.g. a style-adversarial step with two forward passes).
    """
    if distill is not None and loss_fn is not None:
        raise UsageError("fine-tuning takes a teacher (distill) or a custom loss_fn, not both.")
    device = torch.device(device)
    torch.manual_seed(seed)  # the head's initialisation; the loader shuffles with its own generator
    batch_size = _train_batch_size(len(train), cfg.batch_size)
    model, groups, optimizer = _model_and_optimizer(backbone, num_classes, cfg, data_config, device)
    transform = train_transform(cfg, data_config)
    images = LabelledImages(train, transform) if distill is None else distill.dataset(train, transform)
    mixup, criterion = _mixup_and_loss(cfg, num_classes)
    hooks: list[Hook] = []
    shards: dict[str, Any] = {}
    if distributed.active():
        loader, accum, shards, epochs_hook = _sharded_train_loader(
            images, batch_size, cfg, mixup is not None, device, seed, num_workers
        )
        hooks.append(epochs_hook)
    else:
        loader = _train_loader(images, batch_size, device, seed, num_workers)
        # A window cannot span epochs: an epoch of fewer batches than accum_steps steps once, on all of them.
        accum = min(cfg.accum_steps, len(loader)) or 1
    scheduler = _cosine_schedule(optimizer, cfg, math.ceil(len(loader) / accum))
    net = data_parallel(model)  # the model itself in one process
    loss_of = _batch_loss(net, mixup, criterion, cfg, num_classes, device, distill, loss_fn)
    score = _EpochScore(
        optimizer,
        val,
        lambda split: evaluate(model, split, data_config, device, batch_size, num_workers, cfg.amp),
        num_classes,
        on_epoch,
    )
    best = KeepBest(score)
    loop = TrainLoop(
        net,
        optimizer,
        loss_of,
        loader,
        device=device,
        epochs=cfg.epochs,
        amp=cfg.amp,
        accum_steps=accum,
        hooks=[*hooks, AfterStep(lambda step: scheduler.step_update(num_updates=step)), best],
        what="classifier",
        hint=f"lower the learning rate (task arg lr, now {cfg.lr}) or turn off amp",
    ).run()
    protocol = _protocol(cfg, groups, loop, best, mixup, criterion, distill, train, val, batch_size)
    if shards:
        accum = shards["accum_steps"]
        protocol["data_parallel"] = shards
    protocol.update({"accum_steps": accum, "effective_batch": batch_size * accum})
    if accum != cfg.accum_steps:
        protocol["accum_steps_requested"] = cfg.accum_steps
    return FinetuneResult(model, best.best_state, best.best_epoch, best.best_extras, score.history, protocol)


def _train_loader(
    images: torch.utils.data.Dataset, batch_size: int, device: torch.device, seed: int, num_workers: int
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        images,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,  # mixup pairs a batch with its own reversal: it needs an even, full batch
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device.type == "cuda",
    )


class SeededSamples(torch.utils.data.Dataset):
    """A dataset whose random transforms draw from (seed, epoch, index): python's, numpy's and torch's
    generators are seeded before each sample (and mixup, after a batch, draws from its last sample's
    seed), so a sample's augmentation is the same whichever rank, and however many, load it."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2)
        sample_seed = int(state[0]) << 32 | int(state[1])
        random.seed(sample_seed)
        np.random.seed(int(state[0]))
        torch.manual_seed(sample_seed)
        return self.dataset[index]


class WindowSampler(torch.utils.data.DistributedSampler):
    """This rank's share of every optimizer step, for a DataLoader of `rank_batch` without shuffle.

    Each epoch draws one permutation from (seed, epoch), as `DistributedSampler` does, cuts it into
    micro-batches of `batch` (the tail that fills none is dropped, as one process drops it) and groups
    them into windows of `accum` (an epoch's last window may be shorter, as in one process). With
    `split_accum`, rank r takes the r-th run of a window's micro-batches (a shorter last window loses
    the micro-batches the ranks cannot share); else it takes the r-th slice of every micro-batch."""

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        batch: int,
        accum: int,
        split_accum: bool,
        seed: int,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=True)
        self.batch, self.accum, self.split_accum = batch, accum, split_accum

    def _windows(self, order: list[int]) -> list[list[list[int]]]:
        micro = [
            order[k : k + self.batch] for k in range(0, len(order) // self.batch * self.batch, self.batch)
        ]
        return [micro[w : w + self.accum] for w in range(0, len(micro), self.accum)]

    def _mine(self, order: list[int]) -> list[int]:
        world, rank, out = self.num_replicas, self.rank, []
        for window in self._windows(order):
            if self.split_accum:
                share = len(window) // world
                for micro in window[rank * share : (rank + 1) * share]:
                    out.extend(micro)
            else:
                piece = self.batch // world
                for micro in window:
                    out.extend(micro[rank * piece : (rank + 1) * piece])
        return out

    def __iter__(self) -> Any:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(self._mine(torch.randperm(len(self.dataset), generator=g).tolist()))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._mine(list(range(len(self.dataset)))))  # type: ignore[arg-type]


class _NewEpoch(Hook):
    """Tell the sampler and the seeded samples the epoch before its batches are drawn."""

    def __init__(self, sampler: WindowSampler, samples: SeededSamples) -> None:
        self.sampler, self.samples = sampler, samples

    def before_epoch(self, loop: TrainLoop) -> None:
        self.sampler.set_epoch(loop.epoch)
        self.samples.epoch = loop.epoch


def _sharded_train_loader(
    images: torch.utils.data.Dataset,
    batch_size: int,
    cfg: FinetuneConfig,
    mixup: bool,
    device: torch.device,
    seed: int,
    num_workers: int,
) -> tuple[torch.utils.data.DataLoader, int, dict[str, Any], Hook]:
    """This rank's loader, its accumulation steps, the protocol's record and the epoch hook: the
    run's effective batch (`batch_size` × its accumulation) split over the ranks, by accumulation
    micro-steps when the ranks divide them, else by batch."""
    world = world_size()
    accum = min(cfg.accum_steps, len(images) // batch_size) or 1  # type: ignore[arg-type]
    split_accum = accum % world == 0
    if split_accum:
        rank_batch, rank_accum = batch_size, accum // world
    elif batch_size % world == 0 and not (mixup and batch_size // world % 2):
        rank_batch, rank_accum = batch_size // world, accum
    else:
        even = " into even batches (mixup)" if mixup else ""
        raise UsageError(
            f"a data-parallel run of {world} ranks splits each step's {accum} batch(es) of {batch_size}: "
            f"the ranks divide neither accum_steps ({accum}) nor the batch{even}. Pick a batch_size or "
            f"accum_steps they divide."
        )
    samples = SeededSamples(images, seed)
    sampler = WindowSampler(samples, batch_size, accum, split_accum, seed)
    loader = torch.utils.data.DataLoader(
        samples,
        batch_size=rank_batch,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    record = {
        "world_size": world,
        "backend": torch.distributed.get_backend(),
        "per_device_batch": rank_batch,
        "per_device_accum_steps": rank_accum,
        "accum_steps": accum,
        "effective_batch": rank_batch * rank_accum * world,
        "split": "accumulation micro-steps over ranks" if split_accum else "each batch over ranks",
        "lr_scaling": "none: the effective batch, hence the lr, is the run's at any world size",
        "augmentation_seed": "per sample: (seed, epoch, index)",
    }
    return loader, rank_accum, record, _NewEpoch(sampler, samples)


def _cosine_schedule(
    optimizer: torch.optim.Optimizer, cfg: FinetuneConfig, steps_per_epoch: int
) -> CosineLRScheduler:
    """timm's cosine schedule with linear warm-up, counted in optimizer steps (`steps_per_epoch` of
    them: with gradient accumulation, the batches of an epoch divided by `accum_steps`, rounded up)."""
    total_steps, warmup_steps = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    return CosineLRScheduler(
        optimizer,
        # A one-step schedule (a smoke run) starts at the same lr either way; 2 keeps timm from warning.
        t_initial=max(2, total_steps),
        lr_min=cfg.min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=cfg.warmup_lr,
        t_in_epochs=False,
    )


def _batch_loss(
    model: nn.Module,
    mixup: Mixup | None,
    criterion: nn.Module,
    cfg: FinetuneConfig,
    num_classes: int,
    device: torch.device,
    distill: SoftTargets | None,
    loss_fn: LossFn | None,
) -> Callable[[Sequence[torch.Tensor]], torch.Tensor]:
    """The loop's `loss_of`: the distillation loss, `loss_fn`, or the criterion on (mixed) labels."""

    def loss_of(batch: Sequence[torch.Tensor]) -> torch.Tensor:
        if distill is not None:
            return batch_loss(model, batch, mixup, distill.config, num_classes, cfg.label_smoothing, device)
        x, y = (t.to(device, non_blocking=True) for t in batch)
        if mixup is not None:
            x, y = mixup(x, y)
        if loss_fn is not None:
            return loss_fn(model, x, y, criterion)
        return criterion(model(x), y)

    return loss_of


@dataclass
class _EpochScore:
    """`KeepBest`'s score: each epoch's record (epoch, train loss, top lr and, with a `val`, val top-1),
    kept in `history` and passed to `on_epoch`; the value is val top-1, else the epoch (last wins)."""

    optimizer: torch.optim.Optimizer
    val: ImageSplit | None
    logits_of: Callable[[ImageSplit], np.ndarray]  # the model's logits on a split, eval transform
    num_classes: int
    on_epoch: Callable[[dict[str, float]], None] | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def __call__(self, loop: TrainLoop) -> tuple[float, dict[str, float]]:
        record = {"epoch": loop.epoch, "train_loss": loop.epoch_mean_loss(), "lr": _top_lr(self.optimizer)}
        val_metrics: dict[str, float] = {}
        value = float(loop.epoch)  # no val: the last epoch wins
        if self.val is not None:
            val_metrics = classification_metrics(self.logits_of(self.val), self.val.labels, self.num_classes)
            record["val_top1"] = value = val_metrics["top1"]
        self.history.append(record)
        if self.on_epoch is not None:
            self.on_epoch(dict(record))
        return value, val_metrics


def _protocol(
    cfg: FinetuneConfig,
    groups: ParamGroups,
    loop: TrainLoop,
    best: KeepBest,
    mixup: Mixup | None,
    criterion: nn.Module,
    distill: SoftTargets | None,
    train: ImageSplit,
    val: ImageSplit | None,
    batch_size: int,
) -> dict[str, Any]:
    """Every value the fine-tuning used, resolved, for the result's protocol."""
    loss = type(criterion).__name__ if distill is None else "distillation (tasks/common/distill_loss.py)"
    return {
        **asdict(cfg),
        "optimizer": f"{_OPTIMIZER_NAMES.get(cfg.opt, cfg.opt)} (timm create_optimizer_v2)",
        "schedule": "timm CosineLRScheduler, per step, linear warm-up",
        "layer_decay_grouping": groups.grouping,
        "layer_decay_depths": groups.num_layers,
        "train_transform": "timm create_transform(is_training=True)",
        "mixup_active": mixup is not None,
        "loss": loss,
        "amp": str(loop.amp_dtype).removeprefix("torch.") if loop.amp_dtype is not None else "off",
        "train_batch_size": batch_size,
        "steps_per_epoch": loop.step // cfg.epochs,
        "model_selection": "best val top-1 (earliest on ties)" if val is not None else "last epoch",
        "best_epoch": best.best_epoch,
        "num_train": len(train),
        "num_val": len(val) if val is not None else 0,
    }


def _model_and_optimizer(
    backbone: Backbone, num_classes: int, cfg: FinetuneConfig, data_config: DataConfig, device: torch.device
) -> tuple[Classifier, ParamGroups, torch.optim.Optimizer]:
    """The classifier (its head drawn from torch's global generator) and its layer-decayed optimizer."""
    model = _classifier(backbone, num_classes, data_config.input_size).to(device)
    groups = layer_decay_groups(backbone, model.head, cfg.weight_decay, cfg.layer_decay)
    optimizer = create_optimizer_v2(
        groups.groups, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum
    )
    return model, groups, optimizer


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


def _mixup_and_loss(cfg: FinetuneConfig, num_classes: int) -> tuple[Mixup | None, nn.Module]:
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
