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

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from bob.backbones.base import Backbone, BackboneRef
from bob.backbones.meta import DataConfig
from bob.context import RunContext
from bob.data.base import ImageSplit, stratified_partition
from bob.errors import UsageError
from bob.task import TaskOutput
from bob.tasks.common.bob_recipes import bob_crop_pct
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
    test: ImageSplit | None = None,
    data_config: DataConfig | None = None,
) -> TaskOutput:
    """Fine-tune on `train` (selecting on `val`), score on the test split, save the checkpoint and
    (`keep_samples`) the per-sample file. `distill`: a teacher's soft labels for every row of `train`
    (common/distill.py). `test` replaces the dataset's test split (protocol=bob scores the split BoB
    reported); `data_config` the run's transform (protocol=bob's eval crop)."""
    backbone, drop = trainable_backbone(ctx, drop_path)
    cfg_data = data_config if data_config is not None else ctx.data_config
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
    test = test if test is not None else ctx.split("test")
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


# ---------------------------------------------------------------------------------------- protocol=bob
# BoB's timm train.py evaluates on the dataset's validation split every epoch, keeps the best epoch by
# that top-1 and reports it: Flowers-102 val, FGVC-Aircraft's held-out val, EuroSAT's CoOp-style JSON
# val, and CIFAR's and ImageNet's test sets (they have no val split). EuroSAT needs the JSON split.
BOB_SPLIT_DATASETS = {"eurosat": "eurosat-coop"}


def bob_eval_split(ctx: RunContext) -> tuple[str, ImageSplit]:
    """The split BoB selected on and reported (`protocol=bob`): val where the dataset has one, else test."""
    if ctx.dataset in BOB_SPLIT_DATASETS:
        raise UsageError(
            f"protocol=bob evaluates {ctx.dataset} on BoB's split, which the dataset "
            f"'{BOB_SPLIT_DATASETS[ctx.dataset]}' provides: run {ctx.task.suite}/"
            f"{BOB_SPLIT_DATASETS[ctx.dataset]} instead."
        )
    name = "val" if ctx.has_split("val") else "test"
    return name, ctx.split(name)


def bob_data_config(ctx: RunContext) -> tuple[DataConfig, dict[str, Any]]:
    """The run's transform with BoB's eval crop for the backbone (bob_recipes.yaml; CLIP ViTs: 0.9),
    where the dataset does not fix its own crop (small embedded images), and what was applied."""
    crop = bob_crop_pct(ctx.ref.name)
    if crop is None or ctx.info.crop_pct is not None:
        return ctx.data_config, {}
    return dataclasses.replace(ctx.data_config, crop_pct=crop), {"eval_crop_pct": crop}
