"""The fine-tuning recipe as plain values: what `finetune_classifier` (common/finetune.py) trains with.

Torch-free, so that a suite's `Args` (common/args.py, tasks/dg/) can resolve its task args into a
recipe while the suite is listed and its args parsed, before any run imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

RAND_AUGMENT = "rand-m9-mstd0.5-inc1"


@dataclass
class FinetuneConfig:
    """BoB's fine-tuning recipe; only `epochs` and `warmup_epochs` are scaled down by the suites."""

    epochs: int = 100
    warmup_epochs: int = 5
    batch_size: int = 128
    accum_steps: int = 1  # batches per optimizer step: the effective batch is batch_size × accum_steps
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
