"""Knowledge distillation for the finetune and few-label suites (SSLD, SimCLRv2's distillation step).

With `teacher=<backbone>` the student (the run's backbone) is fine-tuned on a teacher's soft labels:
  - the teacher is the named backbone with a linear probe (the linear-probe protocol,
    common/probe.py: λ swept on a stratified 20% of the labelled images, then refit on all of them)
    on its frozen pooled features of the labelled train images; its features come from the feature
    cache like any probe's;
  - its logits on every image the student trains on (eval transform, computed once) become the soft
    targets `softmax(teacher / T)`; in few-label runs that includes the unlabeled pool, the train
    images whose labels are hidden (SimCLRv2's distillation on unlabeled data);
  - the student's loss (common/distill_loss.py) is per sample `kd_alpha · KD + (1 - kd_alpha) ·
    CE(label)`, CE only where a label exists; KD is `kl` or `js`, scaled by T²; mixup/cutmix mix
    the teacher's probabilities with the same λ and partner as the images.
Everything else is the fine-tuning recipe of the suite the run belongs to (common/finetune_run.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bob.backbones import resolve_backbone
from bob.context import RunContext
from bob.data.base import ImageSplit, stratified_partition
from bob.errors import UsageError
from bob.task import TaskOutput
from bob.tasks.common.args import FinetuneRecipeArgs, ProbeArgs
from bob.tasks.common.distill_loss import KDConfig, SoftTargets
from bob.tasks.common.finetune_run import finetune_and_test
from bob.tasks.common.probe import run_linear_probe
from bob.tasks.common.recipe import FinetuneConfig

TEACHER_VAL_FRACTION = 0.2  # the teacher probe's λ is chosen on this stratified share of the labelled rows


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
    args: FinetuneRecipeArgs,
    labelled_rows: np.ndarray,
    unlabeled_rows: np.ndarray,
    val: ImageSplit | None,
    cfg: FinetuneConfig,
) -> TaskOutput:
    """Fit the teacher, fine-tune the student on its soft labels (labelled + unlabeled rows of the
    train split), score on test; with `kd_baseline`, also the same fine-tuning without a teacher."""
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
        _add_baseline(ctx, output, full.subset(labelled_rows, "train"), val, cfg, args.drop_path)
    return output


def _add_baseline(
    ctx: RunContext,
    output: TaskOutput,
    labelled: ImageSplit,
    val: ImageSplit | None,
    cfg: FinetuneConfig,
    drop_path: float,
) -> None:
    """`kd_baseline`: the same fine-tuning on the labelled images alone, and the teacher's gain over it."""
    base = finetune_and_test(
        ctx, labelled, val, cfg, drop_path, artifact="baseline-checkpoint", keep_samples=False
    )
    output.metrics["baseline_top1"] = base.metrics["top1"]
    output.metrics["gain_top1"] = output.metrics["top1"] - base.metrics["top1"]
    output.protocol["baseline"] = {
        "what": "the same fine-tuning on the labelled images only, without a teacher",
        "metrics": base.metrics,
        "best_epoch": base.protocol.get("best_epoch"),
    }
    output.artifacts.update(base.artifacts)
