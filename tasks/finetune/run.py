"""The finetune protocol: the recipe of tasks/common/finetune.py on train, selected on val, scored on test."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bob.backbones.protocols import with_protocol
from bob.context import RunContext
from bob.data.base import stratified_partition
from bob.task import TaskOutput
from bob.tasks.common.distill import distill_and_test
from bob.tasks.common.finetune_run import bob_data_config, bob_eval_split, finetune_and_test, holdout_val
from bob.tasks.common.recipe import FinetuneConfig
from bob.tasks.finetune import Finetune
from bob.tasks.finetune.search import search_lr


def run(task: Finetune, ctx: RunContext) -> TaskOutput:
    args = task.args
    ctx.ref = with_protocol(ctx.ref, args.protocol)  # before the model is built (SD, MiDaS: BoB's recipe)
    cfg, record = args.resolve(ctx.info.kind, ctx.ref.name)
    if args.is_bob:
        return _bob(task, ctx, cfg, record)
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


def _bob(task: Finetune, ctx: RunContext, cfg: FinetuneConfig, record: dict[str, Any]) -> TaskOutput:
    """protocol=bob: BoB's recipe on all of train, the epoch selected on the split BoB reported, and
    that epoch's metrics on it (tasks/common/finetune_run.py: bob_eval_split)."""
    split_name, evaluated = bob_eval_split(ctx)
    data_config, transform = bob_data_config(ctx)
    output = finetune_and_test(
        ctx,
        ctx.split("train"),
        evaluated,
        cfg,
        task.args.drop_path_rate(),
        test=evaluated,
        data_config=data_config,
    )
    output.protocol.update(
        {
            "protocol": "bob",
            "val_source": f"the {split_name} split, also the reported one (BoB selects on it)",
            "evaluated_split": split_name,
            **transform,
            **record,
        }
    )
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
