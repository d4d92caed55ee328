"""The finetune protocol: the recipe of tasks/common/finetune.py on train, selected on val, scored on test."""

from __future__ import annotations

import dataclasses

import numpy as np

from bob.context import RunContext
from bob.data.base import stratified_partition
from bob.task import TaskOutput
from bob.tasks.common.distill import distill_and_test
from bob.tasks.common.finetune_run import finetune_and_test, holdout_val
from bob.tasks.common.recipe import FinetuneConfig
from bob.tasks.finetune import Finetune
from bob.tasks.finetune.search import search_lr


def run(task: Finetune, ctx: RunContext) -> TaskOutput:
    args = task.args
    cfg = args.config(ctx.info.kind)
    if args.teacher is not None:
        return _distill(task, ctx, cfg)
    if ctx.has_split("val"):
        train, val = ctx.split("train"), ctx.split("val")
        val_source = "official val split"
    else:
        train, val = holdout_val(ctx.split("train"), args.val_fraction, ctx.seed)
        val_source = f"stratified {args.val_fraction:.0%} of train (seed {ctx.seed})"
    search = None
    if args.search == "lr":  # before any training: a missing Ray fails here, not after a fit
        search = search_lr(ctx, args, train, val, cfg)
        cfg = dataclasses.replace(cfg, **search["best_config"])
    output = finetune_and_test(ctx, train, val, cfg, args.drop_path)
    output.protocol["val_source"] = val_source
    if search is not None:
        output.protocol["search"] = search
    return output


def _distill(task: Finetune, ctx: RunContext, cfg: FinetuneConfig) -> TaskOutput:
    """The student learns from the teacher's soft labels on the train images (no unlabeled pool)."""
    args = task.args
    train = ctx.split("train")
    if ctx.has_split("val"):
        rows, val, val_source = np.arange(len(train)), ctx.split("val"), "official val split"
    else:
        rows, held = stratified_partition(train.labels, args.val_fraction, seed=ctx.seed)
        val = train.subset(held, "val")
        val_source = f"stratified {args.val_fraction:.0%} of train (seed {ctx.seed})"
    output = distill_and_test(ctx, args, rows, np.arange(0), val, cfg)
    output.protocol["val_source"] = val_source
    return output
