"""The few-label protocol: a labelled subset of train, a held-out part of it, then fine-tuning (with or
without a teacher) or the linear probe on cached features, scored on the full test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bob.backbones.protocols import with_protocol
from bob.context import RunContext
from bob.data import default_data_root
from bob.data.base import stratified_partition
from bob.errors import UsageError
from bob.task import TaskOutput
from bob.tasks.common.args import ProbeArgs
from bob.tasks.common.distill import distill_and_test
from bob.tasks.common.finetune_run import bob_data_config, bob_eval_split, finetune_and_test
from bob.tasks.common.probe import run_linear_probe
from bob.tasks.common.samples import classification_samples, save_samples
from bob.tasks.few_label import FewLabel
from bob.tasks.few_label.subsets import LabelSubset, select_subset

# (train, val) positions into the labelled subset.
HeldOut = tuple[np.ndarray, np.ndarray]


def run(task: FewLabel, ctx: RunContext) -> TaskOutput:
    args = task.args
    ctx.ref = with_protocol(ctx.ref, args.protocol)  # before any model or feature (SD, MiDaS: BoB's recipe)
    subset = _subset(task, ctx)
    if args.is_bob:
        return _bob(task, ctx, subset)
    held_out = _holdout(task, ctx, subset)
    protocol = {
        "mode": args.mode,
        "subset": subset.describe(),
        "subset_fingerprint": subset.fingerprint,
        "val_source": (
            f"stratified {args.val_fraction:.0%} of the labelled subset (seed {ctx.seed})"
            if len(held_out[1])
            else "none (val_fraction=0)"
        ),
    }
    if args.mode == "linear":
        output = _linear(task, ctx, subset, held_out)
    elif args.teacher is not None:
        output = _distill(task, ctx, subset, held_out)
    else:
        train = ctx.split("train")
        rest, held = (subset.indices[part] for part in held_out)
        val = train.subset(held, "val") if len(held) else None
        output = finetune_and_test(
            ctx, train.subset(rest, "train"), val, args.config(ctx.info.kind), args.drop_path
        )
    output.protocol.update(protocol)
    return output


def _bob(task: FewLabel, ctx: RunContext, subset: LabelSubset) -> TaskOutput:
    """protocol=bob (train_semi.py): BoB's recipe on the whole labelled subset, the epoch selected on
    the split BoB reported and scored on it."""
    cfg, record = task.args.resolve(ctx.info.kind, ctx.ref.name)
    split_name, evaluated = bob_eval_split(ctx)
    data_config, transform = bob_data_config(ctx)
    train = ctx.split("train").subset(subset.indices, "train")
    output = finetune_and_test(
        ctx, train, evaluated, cfg, task.args.drop_path_rate(), test=evaluated, data_config=data_config
    )
    output.protocol.update(
        {
            "protocol": "bob",
            "mode": "finetune",
            "subset": subset.describe(),
            "subset_fingerprint": subset.fingerprint,
            "val_source": f"the {split_name} split, also the reported one (BoB selects on it)",
            "evaluated_split": split_name,
            **transform,
            **record,
        }
    )
    return output


def _distill(task: FewLabel, ctx: RunContext, subset: LabelSubset, held_out: HeldOut) -> TaskOutput:
    """Teacher soft labels on the labelled rows and, with kd_unlabeled, on the unlabeled pool."""
    args = task.args
    train = ctx.split("train")
    rest, held = (subset.indices[part] for part in held_out)
    pool = np.setdiff1d(np.arange(len(train)), subset.indices) if args.kd_unlabeled else np.arange(0)
    val = train.subset(held, "val") if len(held) else None
    cfg = args.config(ctx.info.kind)
    output = distill_and_test(ctx, args, rest, pool, val, cfg)
    output.protocol["distillation"]["unlabeled_pool"] = (
        f"the {len(pool)} train images outside the labelled subset" if len(pool) else "not used"
    )
    return output


def _subset(task: FewLabel, ctx: RunContext) -> LabelSubset:
    args = task.args
    root = Path(ctx.spec.data_root).expanduser() if ctx.spec.data_root else default_data_root()
    subsets_dir = ctx.cache.root / "label-subsets"
    return select_subset(ctx.split("train"), args.fraction, args.subset_seed, root, subsets_dir)


def _holdout(task: FewLabel, ctx: RunContext, subset: LabelSubset) -> HeldOut:
    """Positions (into the subset) of (train, val); checked before any training starts."""
    args = task.args
    labels = ctx.split("train").labels[subset.indices]
    if args.val_fraction == 0:
        return np.arange(len(labels)), np.arange(0)
    rest, held = stratified_partition(labels, args.val_fraction, seed=ctx.seed)
    if len(held) == 0:
        raise UsageError(
            f"The {args.fraction:g} subset of {ctx.dataset} ({len(labels)} images, at most one per "
            "class) is too small to hold out a validation set: pass val_fraction=0 (and, in linear "
            "mode, probe_weight_decay), or a larger fraction."
        )
    return rest, held


def _linear(task: FewLabel, ctx: RunContext, subset: LabelSubset, held_out: HeldOut) -> TaskOutput:
    args = task.args
    train, test = ctx.pooled("train"), ctx.pooled("test")  # the cache's full-split features
    x, y = train.features[subset.indices], train.labels[subset.indices]
    rest, held = held_out
    probe = ProbeArgs(
        epochs=args.probe_epochs,
        min_steps=args.probe_min_steps,
        lr=args.probe_lr,
        weight_decay=args.probe_weight_decay,
    )
    out = run_linear_probe(
        (x[rest], y[rest]),
        (x[held], y[held]),
        (test.features, test.labels),
        ctx.num_classes,
        probe,
        ctx.seed,
        ctx.device,
    )
    head = ctx.save_artifact("head", {**out["head"], "classes": list(ctx.classes)})
    output = TaskOutput(out["metrics"], out["protocol"], {"head": head})
    return save_samples(ctx, output, classification_samples(out["test_logits"], test.labels))
