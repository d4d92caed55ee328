"""The linear-probe protocol: on the run's cached features (see tasks/common/probe.py), or BoB's own
probe through the frozen backbone (`mode=bob`, tasks/linear_probe/bob_probe.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bob.backbones.base import Backbone
from bob.backbones.meta import DataConfig
from bob.backbones.protocols import with_protocol
from bob.cache import FeatureSet
from bob.context import RunContext
from bob.data.base import ImageSplit, stratified_partition
from bob.task import TaskOutput
from bob.tasks.common.finetune_run import bob_eval_split
from bob.tasks.common.metrics import classification_metrics
from bob.tasks.common.probe import run_linear_probe
from bob.tasks.common.samples import classification_samples, save_samples
from bob.tasks.linear_probe import LinearProbe
from bob.tasks.linear_probe.bob_probe import BobProbeConfig, bob_data_config, pooled_features, train_bob_probe

# Under protocol=bob: what the result records about the splits and the transform.
BOB_TRANSFORM = (
    "BoB's linear_probe.py eval transform: ImageNet mean/std, bicubic resize 1.143 × size, center crop"
)


def run(task: LinearProbe, ctx: RunContext) -> TaskOutput:
    ctx.ref = with_protocol(
        ctx.ref, task.args.protocol
    )  # before any feature is read (SD, MiDaS: BoB's recipe)
    if task.args.mode == "bob":
        return _bob_probe(task, ctx)
    if task.args.is_bob:
        return _cached_bob(task, ctx)
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
    return _output(ctx, out["metrics"], out["protocol"], out["head"], out["test_logits"], test.labels)


def _output(
    ctx: RunContext,
    metrics: dict[str, float],
    protocol: dict[str, Any],
    head: dict[str, Any],
    logits: np.ndarray,
    labels: np.ndarray,
) -> TaskOutput:
    head_path = ctx.save_artifact("head", {**head, "classes": list(ctx.classes)})
    output = TaskOutput(metrics, protocol, {"head": head_path})
    return save_samples(ctx, output, classification_samples(logits, labels))


def _evaluated(task: LinearProbe, ctx: RunContext) -> tuple[str, ImageSplit]:
    """The scored split: BoB's reported one under protocol=bob, else test."""
    return bob_eval_split(ctx) if task.args.is_bob else ("test", ctx.split("test"))


def _bob_probe(task: LinearProbe, ctx: RunContext) -> TaskOutput:
    """mode=bob: BoB's LARS probe on all of train, trained through the frozen backbone."""
    args = task.args
    split_name, test = _evaluated(task, ctx)
    cfg = BobProbeConfig(
        epochs=args.bob_epochs,
        warmup_epochs=args.bob_warmup_epochs,
        blr=args.bob_blr,
        batch_size=args.bob_batch_size,
        accum_steps=args.bob_accum_steps,
    )
    out = train_bob_probe(
        ctx.build_backbone(),
        ctx.split("train"),
        test,
        ctx.num_classes,
        cfg,
        ctx.data_config,
        ctx.device,
        ctx.seed,
        ctx.num_workers,
    )
    metrics = classification_metrics(out["logits"], test.labels, ctx.num_classes)
    protocol = {"protocol": args.protocol, "evaluated_split": split_name, **out["protocol"]}
    return _output(ctx, metrics, protocol, out["head"], out["logits"], test.labels)


def _cached_bob(task: LinearProbe, ctx: RunContext) -> TaskOutput:
    """protocol=bob, mode=cached: bob's λ-searched head on features extracted with BoB's eval
    transform (cached under their own key), scored on the split BoB reported. λ is chosen on a seeded
    stratified share of train, never on the scored split (which may be the dataset's val split)."""
    args = task.args
    split_name, evaluated = bob_eval_split(ctx)
    config = bob_data_config(ctx.data_config)
    train = _bob_features(ctx, "train", config)
    test = _bob_features(ctx, split_name, config)
    rest, held = stratified_partition(train.labels, args.val_fraction, seed=ctx.seed)
    out = run_linear_probe(
        (train.features[rest], train.labels[rest]),
        (train.features[held], train.labels[held]),
        (test.features, test.labels),
        ctx.num_classes,
        task.args,
        ctx.seed,
        ctx.device,
    )
    out["protocol"].update(
        {
            "protocol": "bob",
            "evaluated_split": split_name,
            "val_source": f"stratified {args.val_fraction:.0%} of train (seed {ctx.seed})",
            "transform": config.to_dict(),
            "transform_source": BOB_TRANSFORM,
        }
    )
    return _output(ctx, out["metrics"], out["protocol"], out["head"], out["test_logits"], evaluated.labels)


def _bob_features(ctx: RunContext, split_name: str, config: DataConfig) -> FeatureSet:
    split = ctx.split(split_name)
    key_spec = {
        "transform": config.to_dict(),
        "dataset": {k: v for k, v in split.describe().items() if k != "num_classes"},
        "dtype": "float32",
    }

    def extract(backbone: Backbone) -> tuple[Any, Any, dict[str, Any]]:
        features = pooled_features(backbone, split, config, ctx.device, ctx.batch_size, ctx.num_workers)
        return features, split.labels, {"transform_source": BOB_TRANSFORM}

    return ctx.cached(split_name, key_spec, extract, description="pooled, BoB linear-probe transform")
