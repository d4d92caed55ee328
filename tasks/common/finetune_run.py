"""Fine-tuning as a step of a run: what the suites that fine-tune call with their `RunContext`.

- `trainable_backbone`: the run's backbone built afresh for training (never the instance the
  feature cache extracts with), with drop-path (stochastic depth) where its architecture has it.
  Drop-path is a build-time argument whose name depends on the adapter; an architecture without it
  trains without it, and the protocol and the log say so;
- `holdout_val`: a seeded stratified share of train as the validation split, when the dataset has
  no official one;
- `finetune_and_test`: `finetune_classifier` (common/finetune.py) on a fresh trainable backbone,
  then top-1 / top-5 / mean per-class recall on the test split, and the selected epoch's
  checkpoint saved next to the result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bob.backbones.base import Backbone, BackboneRef
from bob.context import RunContext
from bob.data.base import ImageSplit, stratified_partition
from bob.task import TaskOutput
from bob.tasks.common.distill_loss import SoftTargets
from bob.tasks.common.finetune import evaluate, finetune_classifier
from bob.tasks.common.metrics import classification_metrics
from bob.tasks.common.recipe import FinetuneConfig
from bob.tasks.common.samples import classification_samples, save_samples

log = logging.getLogger(__name__)

# The build-time argument that sets drop-path (stochastic depth), per backbone adapter.
DROP_PATH_ARGS = {"timm": "drop_path_rate", "torchvision": "stochastic_depth_prob"}


def trainable_backbone(ctx: RunContext, drop_path: float) -> tuple[Backbone, dict[str, Any]]:
    """A fresh backbone for training with drop-path set where the architecture takes it.

    Returns the backbone and what was applied, for the protocol.
    """
    return with_drop_path(ctx.build_backbone, ctx.ref, drop_path)


def with_drop_path(
    build: Callable[..., Backbone], ref: BackboneRef, drop_path: float
) -> tuple[Backbone, dict[str, Any]]:
    """`build(extra_args)` with the adapter's drop-path arg set, unless the run's args set it already."""
    adapter = ref.adapter
    arg = DROP_PATH_ARGS.get(adapter)
    if arg is None:
        note = f"the {adapter} adapter has no drop-path option"
    elif arg in ref.args:
        return build(), {"drop_path": ref.args[arg], "drop_path_arg": f"{arg} (backbone arg)"}
    else:
        try:
            return build({arg: drop_path}), {"drop_path": drop_path, "drop_path_arg": arg}
        except TypeError as err:
            note = f"{ref.resolved_name} takes no {arg} ({err})"
    if drop_path > 0:
        log.warning("training without drop-path: %s", note)
    return build(), {"drop_path": 0.0, "drop_path_note": note}


def holdout_val(train: ImageSplit, fraction: float, seed: int) -> tuple[ImageSplit, ImageSplit]:
    """(train, val): a seeded stratified `fraction` of `train` becomes the validation split."""
    rest, held = stratified_partition(train.labels, fraction, seed=seed)
    return train.subset(rest, "train"), train.subset(held, "val")


def finetune_and_test(
    ctx: RunContext,
    train: ImageSplit,
    val: ImageSplit | None,
    cfg: FinetuneConfig,
    drop_path: float,
    distill: SoftTargets | None = None,
    artifact: str = "checkpoint",
    keep_samples: bool = True,
) -> TaskOutput:
    """Fine-tune on `train` (selecting on `val`), score on the test split, save the checkpoint and
    (`keep_samples`) the per-sample file. `distill`: a teacher's soft labels for every row of `train`
    (common/distill.py)."""
    backbone, drop = trainable_backbone(ctx, drop_path)
    cfg_data = ctx.data_config
    out = finetune_classifier(
        backbone,
        train,
        val,
        ctx.num_classes,
        cfg,
        cfg_data,
        ctx.device,
        ctx.seed,
        ctx.num_workers,
        distill=distill,
    )
    test = ctx.split("test")
    logits = evaluate(out.model, test, cfg_data, ctx.device, cfg.batch_size, ctx.num_workers, cfg.amp)
    metrics = classification_metrics(logits, test.labels, ctx.num_classes)
    if "top1" in out.val_metrics:
        metrics["val_top1"] = out.val_metrics["top1"]
    protocol = {**out.protocol, **drop, "image_size": cfg_data.input_size, "num_test": len(test)}
    protocol["history"] = out.history
    checkpoint = {
        "state_dict": out.state_dict,
        "classes": list(ctx.classes),
        "best_epoch": out.best_epoch,
        "data_config": cfg_data.to_dict(),
        **drop,
    }
    output = TaskOutput(metrics, protocol, {artifact: ctx.save_artifact(artifact, checkpoint)})
    if not keep_samples:
        return output
    return save_samples(ctx, output, classification_samples(logits, test.labels))
