"""The distillation loss a fine-tuning step computes: a teacher's soft labels against the student's logits.

The teacher-fitting side (a linear probe on the teacher's features, the student's run) is
common/distill.py; this module is what the training loop's `loss_of` needs, and nothing that needs a
run:
  - `SoftTargets`: the teacher's logits for every row of the student's training split, which rows
    have labels, and the loss's settings; its `dataset` yields (image, label, softened teacher
    probabilities, has-label) per row;
  - `batch_loss`: per sample `kd_alpha · KD + (1 - kd_alpha) · CE(label)`, CE only where a label
    exists (never on the unlabeled pool); mixup/cutmix mix the teacher's probabilities with the same
    λ and partner as the images;
  - `kd_loss`: `kl` (Hinton: KL(teacher ‖ student) at temperature T) or `js` (SSLD's Jensen-Shannon
    divergence), both scaled by T² so gradients keep their size across T.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import Mixup
from timm.data.mixup import mixup_target
from torch import nn

from bob.data.base import ImageSplit
from bob.errors import UsageError
from bob.tasks.common.args import KD_LOSSES

# A training transform: a PIL image to the model's input tensor.
ImageTransform = Callable[[Image.Image], torch.Tensor]


@dataclass
class KDConfig:
    temperature: float = 1.0
    alpha: float = 1.0
    loss: str = "kl"


def kd_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float, kind: str
) -> torch.Tensor:
    """Per-sample distillation loss [B]: KL(teacher ‖ student) or JS(teacher, student) at temperature
    T, times T². `teacher_probs` are already softened (softmax(teacher logits / T), possibly mixed)."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    p_t = teacher_probs.float()
    log_t = torch.log(p_t.clamp_min(1e-12))
    if kind == "kl":
        per_sample = (p_t * (log_t - log_s)).sum(-1)
    elif kind == "js":
        p_s = log_s.exp()
        log_m = torch.log((0.5 * (p_t + p_s)).clamp_min(1e-12))
        per_sample = 0.5 * (p_t * (log_t - log_m)).sum(-1) + 0.5 * (p_s * (log_s - log_m)).sum(-1)
    else:
        raise UsageError(f"kd_loss must be one of {', '.join(KD_LOSSES)}, got '{kind}'.")
    return per_sample * temperature**2


@dataclass
class SoftTargets:
    """The teacher's logits for every row of the student's training split, and which rows have labels."""

    teacher_logits: np.ndarray  # [N, C]
    labelled: np.ndarray  # [N] bool
    config: KDConfig

    def dataset(self, split: ImageSplit, transform: ImageTransform) -> DistillImages:
        if len(self.teacher_logits) != len(split) or len(self.labelled) != len(split):
            raise ValueError(f"{len(self.teacher_logits)} teacher rows for {len(split)} training images")
        return DistillImages(split, transform, self)

    def describe(self) -> dict[str, Any]:
        return {
            "kd_loss": self.config.loss,
            "kd_temperature": self.config.temperature,
            "kd_alpha": self.config.alpha,
            "num_labelled": int(self.labelled.sum()),
            "num_unlabeled": int((~self.labelled).sum()),
        }


class DistillImages(torch.utils.data.Dataset):
    """(image, label, teacher probabilities at T, has-label) per training image."""

    def __init__(self, split: ImageSplit, transform: ImageTransform, targets: SoftTargets) -> None:
        self.split, self.transform = split, transform
        logits = torch.as_tensor(targets.teacher_logits, dtype=torch.float32)
        self.probs = torch.softmax(logits / targets.config.temperature, dim=-1)
        self.labelled = torch.as_tensor(targets.labelled, dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
        return self.transform(self.split.image(i)), int(self.split.labels[i]), self.probs[i], self.labelled[i]


def batch_loss(
    model: nn.Module,
    batch: Sequence[torch.Tensor],
    mixup: Mixup | None,
    cfg: KDConfig,
    num_classes: int,
    smoothing: float,
    device: torch.device | str,
) -> torch.Tensor:
    """The distillation loss of one batch from `DistillImages`; mixup (timm's, batch mode) mixes the
    images and the teacher probabilities with one λ, pairing each sample with the batch's reverse."""
    x, y, probs, labelled = (t.to(device, non_blocking=True) for t in batch)
    lam = 1.0
    if mixup is not None:
        lam = float(mixup._mix_batch(x))  # mixes x in place, as Mixup.__call__ does
        probs = lam * probs + (1.0 - lam) * probs.flip(0)
    logits = model(x)
    loss = cfg.alpha * kd_loss(logits, probs, cfg.temperature, cfg.loss).mean()
    if cfg.alpha < 1.0:
        has_label = labelled & labelled.flip(0) if lam < 1.0 else labelled
        if has_label.any():
            target = mixup_target(y, num_classes, lam, smoothing)
            ce = -(target * torch.log_softmax(logits.float(), dim=-1)).sum(-1)
            loss = loss + (1.0 - cfg.alpha) * ce[has_label].mean()
    return loss
