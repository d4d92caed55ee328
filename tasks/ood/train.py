"""The in-distribution classifier of an OOD run, by mode: a linear probe on cached frozen features
(`linear`), the finetune suite's recipe end to end (`finetune`), or the classifier a finetune run saved
(`checkpoint`, tasks/ood/checkpoint.py). Each hands back a function from a loaded split's name to its
logits, so every set is scored the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bob.context import RunContext
from bob.data.base import stratified_partition
from bob.tasks.common.finetune import evaluate, finetune_classifier
from bob.tasks.common.finetune_run import holdout_val, trainable_backbone
from bob.tasks.common.probe import run_linear_probe
from bob.tasks.ood import OodArgs
from bob.tasks.ood.checkpoint import find_finetune_run, load_classifier
from bob.tasks.ood.data import get_shift
from bob.tasks.ood.sets import in_dist_splits


@dataclass
class Classifier:
    """What a mode hands back: logits for any loaded split, the protocol it used, and its weights."""

    logits: Callable[[str], np.ndarray]  # split name → logits [N, C]
    protocol: dict[str, Any]
    state: dict[str, Any]


def fit_classifier(mode: str, ctx: RunContext, args: OodArgs) -> Classifier:
    """Train the in-distribution classifier the way `mode` says."""
    return _MODES[mode](ctx, args)


def _linear_classifier(ctx: RunContext, args: OodArgs) -> Classifier:
    """The linear-probe protocol on the in-distribution train split's cached frozen features."""
    train, test = ctx.pooled("train"), ctx.pooled("test")
    if "val" in in_dist_splits(get_shift(ctx.dataset)):  # loaded by load_sets
        val = ctx.pooled("val")
        train_xy, val_xy = (train.features, train.labels), (val.features, val.labels)
        val_source = "official val split"
    else:
        rest, held = stratified_partition(train.labels, args.val_fraction, seed=ctx.seed)
        train_xy = (train.features[rest], train.labels[rest])
        val_xy = (train.features[held], train.labels[held])
        val_source = f"stratified {args.val_fraction:.0%} of train (seed {ctx.seed})"
    out = run_linear_probe(
        train_xy, val_xy, (test.features, test.labels), ctx.num_classes, args, ctx.seed, ctx.device
    )
    head = out["head"]
    mean, std = head["mean"].numpy(), head["std"].numpy()
    weight, bias = head["weight"].numpy(), head["bias"].numpy()

    loaded = {"test": test}  # read from the cache once per run

    def logits(split: str) -> np.ndarray:
        features = loaded.pop(split, None) or ctx.pooled(split)
        x = (features.features - mean) / std
        return x.astype(np.float32) @ weight + bias

    protocol = {"classifier": "linear-probe protocol on frozen pooled features", **out["protocol"]}
    protocol["val_source"] = val_source
    return Classifier(logits, protocol, head)


def _finetune_classifier(ctx: RunContext, args: OodArgs) -> Classifier:
    """The finetune suite's protocol on the in-distribution train split (BoB's OOD setting)."""
    ft = args.finetune_args()
    cfg, recipe = ft.resolve(ctx.info.kind, ctx.ref.name)  # under protocol=bob: BoB's recipe, per backbone
    if "val" in in_dist_splits(get_shift(ctx.dataset)):  # loaded by load_sets
        train, val = ctx.split("train"), ctx.split("val")
        val_source = "official val split"
    else:
        train, val = holdout_val(ctx.split("train"), args.val_fraction, ctx.seed)
        val_source = f"stratified {args.val_fraction:.0%} of train (seed {ctx.seed})"
    backbone, drop = trainable_backbone(ctx, ft.drop_path_rate())
    data_config = ctx.data_config
    out = finetune_classifier(
        backbone, train, val, ctx.num_classes, cfg, data_config, ctx.device, ctx.seed, ctx.num_workers
    )

    def logits(split: str) -> np.ndarray:
        return evaluate(
            out.model, ctx.split(split), data_config, ctx.device, cfg.batch_size, ctx.num_workers, cfg.amp
        )

    protocol = {
        "classifier": "end-to-end fine-tuning (the finetune suite's recipe)",
        **out.protocol,
        **drop,
        "history": out.history,
        "val_source": val_source,
        **({"recipe": recipe} if ft.is_bob else {}),
    }
    state = {
        "state_dict": out.state_dict,
        "best_epoch": out.best_epoch,
        "data_config": data_config.to_dict(),
        **drop,
    }
    return Classifier(logits, protocol, state)


def _checkpoint_classifier(ctx: RunContext, args: OodArgs) -> Classifier:
    """The classifier a `finetune/<in-dist>` run saved, scored as it is (BoB's OOD classification)."""
    result = find_finetune_run(ctx, args.finetune_run)
    model, data_config, info = load_classifier(ctx, result)

    def logits(split: str) -> np.ndarray:
        return evaluate(model, ctx.split(split), data_config, ctx.device, ctx.batch_size, ctx.num_workers)

    protocol = {
        "classifier": "the saved classifier of a finetune run, scored without training",
        **info,
        "transform": data_config.to_dict(),
    }
    return Classifier(logits, protocol, {"finetune_run": result.id})


_MODES = {
    "linear": _linear_classifier,
    "finetune": _finetune_classifier,
    "checkpoint": _checkpoint_classifier,
}
