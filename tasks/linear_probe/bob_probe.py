"""BoB's own linear probe (`mode=bob`), and BoB's transform for the cached probe under `protocol=bob`.

BoB's `linear_probe.py` (hsouri/bob-classification, MAE's linear-probe recipe) trains a head on the
frozen backbone, image by image: RandomResizedCrop + horizontal flip (bicubic) with ImageNet mean/std
for every model; the head is `BatchNorm1d(affine=False, eps=1e-6)` then a Linear (trunc-normal std
0.01, zero bias); LARS (momentum 0.9, trust coefficient 0.001, weight decay 0) at lr = blr ×
effective batch / 256; MAE's half-cycle cosine with linear warm-up, set at every optimizer step;
evaluation is Resize(1.143 × size) then CenterCrop(size). Augmented images pass through the backbone
every epoch, so no feature is cached. It trains on bob's one TrainLoop; the backbone stays frozen in
eval mode (its BatchNorm statistics fixed) and runs without gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from timm.layers import trunc_normal_
from timm.optim import Lars
from torch import nn
from torchvision import transforms as T

from bob.backbones.base import Backbone, pooled_width
from bob.backbones.meta import DataConfig
from bob.data.base import ImageSplit
from bob.errors import UsageError
from bob.progress import progress_bar
from bob.tasks.common.finetune import LabelledImages, evaluate
from bob.tasks.common.train_loop import Hook, TrainLoop, autocast
from bob.transforms import eval_transform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_RESIZE = 1.143  # BoB's eval resize: int(size × 1.143), then a center crop of size
LARS_MOMENTUM = 0.9
LARS_TRUST = 0.001
BN_EPS = 1e-6
HEAD_INIT_STD = 0.01


def bob_data_config(data_config: DataConfig) -> DataConfig:
    """BoB's linear-probe eval transform at the run's resolution: bicubic resize to 1.143 × size,
    center crop, ImageNet mean/std (for every model, whatever its own statistics)."""
    return replace(
        data_config,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bicubic",
        crop_pct=1.0 / EVAL_RESIZE,
        crop_mode="center",
    )


def bob_train_transform(input_size: int) -> T.Compose:
    """BoB's training crops: RandomResizedCrop (bicubic, torchvision's default scale) + flip."""
    return T.Compose(
        [
            T.RandomResizedCrop(input_size, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        ]
    )


def mae_lr(epoch: float, peak: float, warmup_epochs: int, epochs: int, min_lr: float = 0.0) -> float:
    """MAE's `adjust_learning_rate`: linear warm-up to `peak`, then a half-cycle cosine to `min_lr`;
    `epoch` is fractional (epoch + batch / batches per epoch)."""
    if epoch < warmup_epochs:
        return peak * epoch / warmup_epochs
    progress = (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1e-12)
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lars_optimizer(head: nn.Module, lr: float, weight_decay: float = 0.0) -> Lars:
    """LARS as MAE's `util/lars.py` defines it, through timm's `Lars`: the trust ratio and weight
    decay act on weights (ndim > 1) only; biases take plain momentum SGD."""
    weights = [p for p in head.parameters() if p.ndim > 1]
    others = [p for p in head.parameters() if p.ndim <= 1]
    groups = [
        {"params": weights, "weight_decay": weight_decay, "always_adapt": True},
        {"params": others, "weight_decay": 0.0, "always_adapt": False},
    ]
    return Lars(groups, lr=lr, momentum=LARS_MOMENTUM, trust_coeff=LARS_TRUST)


class BobProbe(nn.Module):
    """The frozen backbone's pooled features into BoB's head: BatchNorm1d (no affine) + Linear.
    `train()` puts the head in train mode only: the backbone stays in eval mode."""

    def __init__(self, backbone: Backbone, num_classes: int, input_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        width = pooled_width(backbone, input_size)
        linear = nn.Linear(width, num_classes)
        trunc_normal_(linear.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(linear.bias)
        self.head = nn.Sequential(nn.BatchNorm1d(width, affine=False, eps=BN_EPS), linear)
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> BobProbe:
        self.training = mode
        self.head.train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone.forward_pooled(x)
        return self.head(features.float())


class MaeSchedule(Hook):
    """Sets MAE's lr before every optimizer step (at the fractional epoch where its batches start)."""

    def __init__(self, peak: float, warmup: int, epochs: int, batches_per_epoch: int, accum: int) -> None:
        self.peak, self.warmup, self.epochs = peak, warmup, epochs
        self.batches, self.accum = batches_per_epoch, accum
        self.steps_per_epoch = math.ceil(batches_per_epoch / accum)

    def _set(self, loop: TrainLoop) -> None:
        epoch, within = divmod(loop.step, self.steps_per_epoch)
        lr = mae_lr(epoch + within * self.accum / self.batches, self.peak, self.warmup, self.epochs)
        for group in loop.optimizer.param_groups:
            group["lr"] = lr

    def before_train(self, loop: TrainLoop) -> None:
        self._set(loop)

    def after_step(self, loop: TrainLoop) -> None:
        self._set(loop)


@dataclass
class BobProbeConfig:
    epochs: int = 90
    warmup_epochs: int = 10
    blr: float = 0.1
    batch_size: int = 512  # per step; BoB: 512 per GPU
    accum_steps: int = 4  # BoB: 4 GPUs, so an effective batch of 2048
    weight_decay: float = 0.0
    amp: bool = True


def train_bob_probe(
    backbone: Backbone,
    train: ImageSplit,
    test: ImageSplit,
    num_classes: int,
    cfg: BobProbeConfig,
    data_config: DataConfig,
    device: torch.device | str,
    seed: int,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Train BoB's probe on `train` for `cfg.epochs` and score the last epoch on `test`."""
    device = torch.device(device)
    if cfg.warmup_epochs >= cfg.epochs:
        raise UsageError(
            f"bob_warmup_epochs ({cfg.warmup_epochs}) must be smaller than bob_epochs ({cfg.epochs})."
        )
    batch = min(cfg.batch_size, len(train))
    if batch < 2:
        raise UsageError(f"BoB's probe needs at least 2 training images (BatchNorm), got {len(train)}.")
    torch.manual_seed(seed)
    eval_config = bob_data_config(data_config)
    model = BobProbe(backbone, num_classes, eval_config.input_size).to(device)
    loader = torch.utils.data.DataLoader(
        LabelledImages(train, bob_train_transform(eval_config.input_size)),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device.type == "cuda",
    )
    # A window cannot span epochs: on a small set the effective batch is what one epoch holds, and
    # BoB's rule scales the lr to the batch that runs.
    accum = min(cfg.accum_steps, len(loader))
    effective = batch * accum
    lr = cfg.blr * effective / 256
    optimizer = lars_optimizer(model.head, lr, cfg.weight_decay)
    criterion = nn.CrossEntropyLoss()

    def loss_of(b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = (t.to(device, non_blocking=True) for t in b)
        return criterion(model(x), y)

    schedule = MaeSchedule(lr, cfg.warmup_epochs, cfg.epochs, len(loader), accum)
    loop = TrainLoop(
        model,
        optimizer,
        loss_of,
        loader,
        device=device,
        epochs=cfg.epochs,
        amp=cfg.amp,
        accum_steps=accum,
        hooks=[schedule],
        what="BoB linear probe",
        hint=f"lower bob_blr (now {cfg.blr})",
    ).run()
    logits = evaluate(model, test, eval_config, device, batch, num_workers, cfg.amp)
    protocol = {
        "mode": "bob",
        "features": "not cached: augmented images pass through the frozen backbone every epoch",
        "head": "BatchNorm1d(affine=False, eps=1e-6) + Linear (trunc-normal std 0.01, zero bias)",
        "optimizer": "LARS (timm.optim.Lars; trust 0.001, momentum 0.9; weights only adapted)",
        "lr_rule": f"blr {cfg.blr:g} × effective batch {effective} / 256 = {lr:g}",
        "lr": lr,
        "schedule": "MAE half-cycle cosine, linear warm-up, set every optimizer step",
        "epochs": cfg.epochs,
        "warmup_epochs": cfg.warmup_epochs,
        "train_batch_size": batch,
        "accum_steps": accum,
        **({"accum_steps_requested": cfg.accum_steps} if accum != cfg.accum_steps else {}),
        "effective_batch": effective,
        "weight_decay": cfg.weight_decay,
        "train_transform": "RandomResizedCrop (bicubic) + horizontal flip, ImageNet mean/std",
        "transform": eval_config.to_dict(),
        "backbone_mode": "eval (frozen, no gradients)",
        "model_selection": "last epoch",
        "amp": str(loop.amp_dtype).removeprefix("torch.") if loop.amp_dtype is not None else "off",
        "final_train_loss": loop.epoch_mean_loss(),
        "num_train": len(train),
        "num_test": len(test),
    }
    head = {k: v.detach().cpu() for k, v in model.head.state_dict().items()}
    return {"logits": logits, "protocol": protocol, "head": head}


def pooled_features(
    backbone: Backbone,
    split: ImageSplit,
    data_config: DataConfig,
    device: torch.device | str,
    batch_size: int,
    num_workers: int = 0,
) -> np.ndarray:
    """Pooled features [N, D] of `split` through `data_config`'s eval transform (inference mode)."""
    loader = torch.utils.data.DataLoader(
        LabelledImages(split, eval_transform(data_config)), batch_size=batch_size, num_workers=num_workers
    )
    backbone.eval()
    outs = []
    with (
        progress_bar(
            f"extracting {split.dataset}/{split.split} (BoB transform)", len(split), "images"
        ) as bar,
        torch.inference_mode(),
        autocast(device, False),
    ):
        for x, _ in loader:
            outs.append(backbone.forward_pooled(x.to(device)).float().cpu())
            bar.advance(len(x))
    return torch.cat(outs).numpy()
