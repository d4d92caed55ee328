"""The linear-probe protocol on the run's cached features (see tasks/common/probe.py)."""

from __future__ import annotations

from bob.context import RunContext
from bob.data.base import stratified_partition
from bob.task import TaskOutput
from bob.tasks.common.probe import run_linear_probe
from bob.tasks.common.samples import classification_samples, save_samples
from bob.tasks.linear_probe import LinearProbe


def run(task: LinearProbe, ctx: RunContext) -> TaskOutput:
    train, test = ctx.pooled("train"), ctx.pooled("test")
    if ctx.has_split("val"):
        val = ctx.pooled("val")
        train_xy, val_xy = (train.features, train.labels), (val.features, val.labels)
        val_source = "official val split"
    else:
        rest, held = stratified_partition(train.labels, task.args.val_fraction, seed=ctx.seed)
        train_xy = (train.features[rest], train.labels[rest])
        val_xy = (train.features[held], train.labels[held])
        val_source = f"stratified {task.args.val_fraction:.0%} of train (seed {ctx.seed})"
    out = run_linear_probe(
        train_xy, val_xy, (test.features, test.labels), ctx.num_classes, task.args, ctx.seed, ctx.device
    )
    out["protocol"]["val_source"] = val_source
    head_path = ctx.save_artifact("head", {**out["head"], "classes": list(ctx.classes)})
    output = TaskOutput(out["metrics"], out["protocol"], {"head": head_path})
    return save_samples(ctx, output, classification_samples(out["test_logits"], test.labels))
