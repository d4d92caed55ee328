"""Knowledge distillation for the finetune and few-label suites (SSLD, SimCLRv2's distillation step).

With `teacher=<backbone>` the student (the run's backbone) is fine-tuned on a teacher's soft labels:
  - the teacher is the named backbone with a linear probe (tasks/linear_probe.py's protocol: λ swept on
    a stratified 20% of the labelled images, then refit on all of them) on its frozen pooled features
    of the labelled train images; its features come from the feature cache like any probe's;
  - its logits on every image the student trains on (eval transform, computed once) become the soft
    targets `softmax(teacher / T)`; in few-label runs that includes the unlabeled pool, the train
    images whose labels are hidden (SimCLRv2's distillation on unlabeled data);
  - per sample the loss is `kd_alpha · KD + (1 - kd_alpha) · CE(label)`, CE only where a label exists
    (never on the unlabeled pool); KD is `kl` (Hinton: KL(teacher ‖ student) at temperature T) or
    `js` (SSLD's Jensen-Shannon divergence), both scaled by T² so gradients keep their size across T;
  - mixup/cutmix mix the teacher's probabilities with the same λ and partner as the images.
Everything else is the fine-tuning recipe of the suite the run belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bob.data.base import ImageSplit, stratified_partition
from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest

if TYPE_CHECKING:
    import torch

    from bob.context import RunContext

KD_LOSSES = ("kl", "js")
TEACHER_VAL_FRACTION = 0.2  # the teacher probe's λ is chosen on this stratified share of the labelled rows


def check_distill_args(args: Any) -> None:
    """The distillation task args of a finetune / few-label run, checked before anything runs."""
    from bob.weights import WeightsRequest

    if args.kd_loss not in KD_LOSSES:
        hint = f"Valid values: {', '.join(KD_LOSSES)}."
        raise UnknownNameError("kd_loss", args.kd_loss, suggest(args.kd_loss, KD_LOSSES, 2), hint)
    if args.kd_temperature <= 0:
        raise UsageError(f"kd_temperature must be positive, got {args.kd_temperature}.")
    if not 0.0 <= args.kd_alpha <= 1.0:
        raise UsageError(f"kd_alpha must be in [0, 1], got {args.kd_alpha}.")
    if args.teacher is not None:
        from bob.backbones.catalog import BACKBONES, is_factory_name

        if not args.teacher.strip():
            raise UsageError("teacher is empty: name a backbone, e.g. teacher=torchvision/mobilenet_v2.")
        if not is_factory_name(args.teacher):
            BACKBONES.get(args.teacher, live=True)  # an unknown name: did-you-mean, before any run
        WeightsRequest.parse(args.teacher_weights)


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
    import torch
    import torch.nn.functional as F

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

    def dataset(self, split: ImageSplit, transform: Any) -> Any:
        if len(self.teacher_logits) != len(split) or len(self.labelled) != len(split):
            raise ValueError(f"{len(self.teacher_logits)} teacher rows for {len(split)} training images")
        return _DistillImages(split, transform, self)

    def describe(self) -> dict[str, Any]:
        return {
            "kd_loss": self.config.loss,
            "kd_temperature": self.config.temperature,
            "kd_alpha": self.config.alpha,
            "num_labelled": int(self.labelled.sum()),
            "num_unlabeled": int((~self.labelled).sum()),
        }


class _DistillImages:
    """(image, label, teacher probabilities at T, has-label) per training image."""

    def __init__(self, split: ImageSplit, transform: Any, targets: SoftTargets) -> None:
        import torch

        self.split, self.transform = split, transform
        logits = torch.as_tensor(targets.teacher_logits, dtype=torch.float32)
        self.probs = torch.softmax(logits / targets.config.temperature, dim=-1)
        self.labelled = torch.as_tensor(targets.labelled, dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Any, int, Any, Any]:
        return self.transform(self.split.image(i)), int(self.split.labels[i]), self.probs[i], self.labelled[i]


def batch_loss(
    model: Any, batch: tuple, mixup: Any, cfg: KDConfig, num_classes: int, smoothing: float, device: Any
) -> torch.Tensor:
    """The distillation loss of one batch from `_DistillImages`; mixup (timm's, batch mode) mixes the
    images and the teacher probabilities with one λ, pairing each sample with the batch's reverse."""
    import torch
    from timm.data.mixup import mixup_target

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


@dataclass
class TeacherFit:
    logits: np.ndarray  # [N_train, C]: the teacher's logits on every row of the full train split
    protocol: dict[str, Any]


def teacher_partition(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, λ-selection) positions among the labelled rows; refused before any work when too small."""
    fit, held = stratified_partition(labels, TEACHER_VAL_FRACTION, seed=seed)
    if len(held) == 0:
        raise UsageError(
            f"The teacher's linear probe needs at least two labelled images in some class to choose its "
            f"weight decay; this run has {len(labels)} labelled images. Use a larger fraction."
        )
    return fit, held


def fit_teacher(ctx: RunContext, teacher: str, weights: str, labelled_rows: np.ndarray) -> TeacherFit:
    """The teacher's linear probe on its frozen features of `labelled_rows` (indices into the train
    split) and its logits on the whole train split; features come from (and go to) the cache."""
    import torch

    from bob.backbones import resolve_backbone
    from bob.context import RunContext
    from bob.tasks.common.args import ProbeArgs
    from bob.tasks.common.probe import run_linear_probe

    labels = ctx.split("train").labels[labelled_rows]
    fit, held = teacher_partition(labels, ctx.seed)
    ref = resolve_backbone(teacher, weights, {}, ctx.seed)
    tctx = RunContext(
        ctx.spec, ctx.task, ref, ctx.store, ctx.cache, ctx.device, ctx.batch_size, ctx.num_workers
    )
    train, test = tctx.pooled("train"), tctx.pooled("test")
    x, y = train.features[labelled_rows], train.labels[labelled_rows]
    out = run_linear_probe(
        (x[fit], y[fit]),
        (x[held], y[held]),
        (test.features, test.labels),
        ctx.num_classes,
        ProbeArgs(),
        ctx.seed,
        ctx.device,
    )
    head = out["head"]
    std = (train.features - head["mean"].numpy()) / head["std"].numpy()
    logits = torch.as_tensor(std, dtype=torch.float32) @ head["weight"].float() + head["bias"].float()
    protocol = {
        "teacher": teacher,
        "teacher_weights": weights,
        "teacher_resolved": ref.resolved_name,
        "teacher_head": "linear probe on frozen pooled features of the labelled train images "
        f"(λ chosen on a stratified {TEACHER_VAL_FRACTION:.0%} of them, then refit on all)",
        "teacher_weight_decay": out["protocol"]["selected_weight_decay"],
        "teacher_num_labelled": len(labelled_rows),
        "teacher_test": out["metrics"],
    }
    return TeacherFit(logits.numpy(), protocol)


def distill_and_test(
    ctx: RunContext,
    args: Any,
    labelled_rows: np.ndarray,
    unlabeled_rows: np.ndarray,
    val: ImageSplit | None,
    cfg: Any,
) -> Any:
    """Fit the teacher, fine-tune the student on its soft labels (labelled + unlabeled rows of the
    train split), score on test; with `kd_baseline`, also the same fine-tuning without a teacher."""
    from bob.tasks.finetune import finetune_and_test

    teacher = fit_teacher(ctx, args.teacher, args.teacher_weights, labelled_rows)
    full = ctx.split("train")
    rows = np.concatenate([labelled_rows, unlabeled_rows]).astype(np.int64)
    labelled = np.zeros(len(rows), dtype=bool)
    labelled[: len(labelled_rows)] = True
    kd = KDConfig(args.kd_temperature, args.kd_alpha, args.kd_loss)
    targets = SoftTargets(teacher.logits[rows], labelled, kd)
    output = finetune_and_test(ctx, full.subset(rows, "train"), val, cfg, args.drop_path, distill=targets)
    output.metrics["teacher_top1"] = teacher.protocol["teacher_test"]["top1"]
    agreement = teacher.logits[rows].argmax(1) == full.labels[rows]
    output.protocol["distillation"] = {
        **teacher.protocol,
        **targets.describe(),
        "teacher_train_agreement": float(agreement.mean()),
        "teacher_targets": "softmax(teacher logits / T) on the eval transform, computed once per image",
    }
    if args.kd_baseline:
        base = finetune_and_test(
            ctx, full.subset(labelled_rows, "train"), val, cfg, args.drop_path, artifact="baseline-checkpoint"
        )
        output.metrics["baseline_top1"] = base.metrics["top1"]
        output.metrics["gain_top1"] = output.metrics["top1"] - base.metrics["top1"]
        output.protocol["baseline"] = {
            "what": "the same fine-tuning on the labelled images only, without a teacher",
            "metrics": base.metrics,
            "best_epoch": base.protocol.get("best_epoch"),
        }
        output.artifacts.update(base.artifacts)
    return output
