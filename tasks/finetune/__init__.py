"""`finetune/<dataset>`: end-to-end fine-tuning with BoB's recipe (see tasks/finetune_loop.py).

Protocol:
  1. the backbone is built afresh for training, with drop-path where its architecture has it;
  2. validation is the dataset's official val split, else a seeded stratified `val_fraction` of train;
  3. backbone + a new linear head train with AdamW, layer-wise lr decay, cosine schedule with warm-up,
     RandAugment, mixup/cutmix and label smoothing; the epoch with the best val top-1 is kept;
  4. that checkpoint is scored on test (top-1, top-5, mean per-class recall) and saved next to the result.
BoB trains 100 epochs (5 warm-up) at batch 128 per GPU. Those are the defaults on real datasets; on
embedded and generated datasets (small images, CPU budgets) the defaults are 3 epochs (1 warm-up) at
batch 64. Every value used, resolved, is recorded in the result's protocol.
With `teacher=<backbone>` the student learns from that backbone's soft labels (tasks/distill.py,
docs/suites/distillation.md). With `search=lr`, a Ray Tune search (ASHA on val top-1, `search_space`) picks the lr before step 3,
and the search lands in `protocol["search"]` (see docs/sweeps.md).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bob.data.base import ImageSplit, stratified_partition
from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.task import Task, TaskArgs, TaskOutput, run_arg
from bob.tasks.common.distill import check_distill_args

if TYPE_CHECKING:
    from bob.backbones.base import Backbone, BackboneRef
    from bob.context import RunContext
    from bob.tasks.common.distill import SoftTargets
    from bob.tasks.common.finetune import FinetuneConfig

log = logging.getLogger(__name__)

# Defaults for (epochs, warmup_epochs, batch_size) by dataset kind: BoB's on real data, CPU-sized otherwise.
REAL_SCHEDULE = (100, 5, 128)
SMALL_SCHEDULE = (3, 1, 64)
# The build-time argument that sets drop-path (stochastic depth), per backbone adapter.
DROP_PATH_ARGS = {"timm": "drop_path_rate", "torchvision": "stochastic_depth_prob"}
# The distillation args: part of a run's identity only when a teacher is set, so runs without one keep
# the ids they had before distillation existed.
DISTILL_ARGS = (
    "teacher",
    "teacher_weights",
    "kd_temperature",
    "kd_alpha",
    "kd_loss",
    "kd_baseline",
    "kd_unlabeled",
)


@dataclass
class FinetuneArgs(TaskArgs):
    real_schedule: ClassVar[tuple[int, int, int]] = REAL_SCHEDULE
    small_schedule: ClassVar[tuple[int, int, int]] = SMALL_SCHEDULE
    val_fraction_may_be_zero: ClassVar[bool] = False

    epochs: int | None = run_arg(None, "training epochs (default: 100 on real datasets, 3 on embedded ones)")
    warmup_epochs: int | None = run_arg(None, "linear warm-up epochs (default: 5 real, 1 embedded)")
    batch_size: int | None = run_arg(None, "training batch size (default: 128 real, 64 embedded)")
    lr: float = run_arg(1e-3, "peak AdamW learning rate (head and top layer)")
    weight_decay: float = run_arg(0.05, "AdamW weight decay (not on biases and norms)")
    layer_decay: float = run_arg(0.75, "layer-wise lr decay factor (1 = off)")
    drop_path: float = run_arg(0.1, "drop-path rate, where the architecture has drop-path")
    mixup: float = run_arg(0.8, "mixup alpha (0 = off)")
    cutmix: float = run_arg(1.0, "cutmix alpha (0 = off)")
    label_smoothing: float = run_arg(0.1, "label smoothing")
    auto_augment: str = run_arg("rand-m9-mstd0.5-inc1", "timm auto-augment policy ('none' = off)")
    random_erasing: float = run_arg(0.25, "random-erasing probability")
    amp: bool = run_arg(True, "mixed precision on CUDA (ignored on CPU)")
    val_fraction: float = run_arg(
        0.1, "share of train held out for epoch selection when the dataset has no val split"
    )
    teacher: str | None = run_arg(
        None, "distil from this backbone (a linear probe on its features of the labelled images); none = off"
    )
    teacher_weights: str = run_arg("pretrained", "the teacher's weights: pretrained, random or a file")
    kd_temperature: float = run_arg(1.0, "distillation temperature T (SimCLRv2 and SSLD: 1)")
    kd_alpha: float = run_arg(
        1.0, "weight of the distillation loss; 1 - kd_alpha goes to the labels' cross-entropy"
    )
    kd_loss: str = run_arg("kl", "kl (KL(teacher || student)) or js (SSLD's Jensen-Shannon divergence)")
    kd_baseline: bool = run_arg(
        False, "with a teacher: also fine-tune without it in the same run and report gain_top1"
    )

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        if self.teacher is None:
            for name in DISTILL_ARGS:
                ident.pop(name, None)
        return ident

    def validate(self) -> None:
        super().validate()
        check_distill_args(self)
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value}.")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise UsageError(f"warmup_epochs must be 0 or more, got {self.warmup_epochs}.")
        if self.epochs is not None and self.warmup_epochs is not None and self.warmup_epochs >= self.epochs:
            raise UsageError(
                f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})."
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise UsageError("lr must be positive and weight_decay non-negative.")
        if not 0.0 < self.layer_decay <= 1.0:
            raise UsageError(f"layer_decay must be in (0, 1], got {self.layer_decay}.")
        for name in ("drop_path", "label_smoothing", "random_erasing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UsageError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.mixup < 0 or self.cutmix < 0:
            raise UsageError("mixup and cutmix alphas must be 0 (off) or positive.")
        low = 0.0 if self.val_fraction_may_be_zero else 1e-12
        if not low <= self.val_fraction < 1.0:
            interval = "[0, 1)" if self.val_fraction_may_be_zero else "(0, 1)"
            raise UsageError(f"val_fraction must be in {interval}, got {self.val_fraction}.")

    def config(self, dataset_kind: str) -> FinetuneConfig:
        """The loop's config, with the schedule defaults of the dataset's kind filled in."""
        from bob.tasks.common.finetune import FinetuneConfig

        epochs, warmup, batch = self.real_schedule if dataset_kind == "real" else self.small_schedule
        epochs = self.epochs if self.epochs is not None else epochs
        warmup = self.warmup_epochs if self.warmup_epochs is not None else min(warmup, epochs - 1)
        if warmup >= epochs:
            raise UsageError(f"warmup_epochs ({warmup}) must be smaller than epochs ({epochs}).")
        return FinetuneConfig(
            epochs=epochs,
            warmup_epochs=warmup,
            batch_size=self.batch_size if self.batch_size is not None else batch,
            lr=self.lr,
            weight_decay=self.weight_decay,
            layer_decay=self.layer_decay,
            mixup=self.mixup,
            cutmix=self.cutmix,
            label_smoothing=self.label_smoothing,
            auto_augment=None if self.auto_augment.lower() in ("", "none") else self.auto_augment,
            random_erasing=self.random_erasing,
            amp=self.amp,
        )


SEARCHES = ("none", "lr")


@dataclass
class FinetuneSearchArgs(FinetuneArgs):
    """The finetune suite's args: BoB's recipe plus an optional in-protocol lr search (Ray Tune)."""

    # The declared search space (bob/sweep/tune.py syntax); search=lr draws `search_samples` lrs from it.
    search_space: ClassVar[dict[str, Any]] = {"lr": {"loguniform": [1e-5, 3e-3]}}

    search: str = run_arg(
        "none", "in-protocol search before the final fit: none, or lr (Ray Tune, ASHA, picks lr on val)"
    )
    search_samples: int = run_arg(4, "learning rates search=lr tries (drawn log-uniformly)")

    def validate(self) -> None:
        super().validate()
        if self.search not in SEARCHES:
            hint = f"Valid values: {', '.join(SEARCHES)}."
            raise UnknownNameError(
                "search for finetune", self.search, suggest(self.search, SEARCHES, 3), hint
            )
        if self.search_samples < 1:
            raise UsageError(f"search_samples must be a positive integer, got {self.search_samples}.")
        if self.search != "none" and self.teacher is not None:
            raise UsageError("search=lr does not distil: run the lr search without a teacher, then distil.")

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        if self.search == "none":  # runs without a search keep the keys they had before search existed
            del ident["search"], ident["search_samples"]
        return ident


def trainable_backbone(ctx: RunContext, drop_path: float) -> tuple[Backbone, dict[str, Any]]:
    """A fresh backbone for training with drop-path set where the architecture takes it.

    Returns the backbone and what was applied, for the protocol. An architecture without drop-path
    trains without it, and the protocol and the log say so.
    """
    return _with_drop_path(ctx.build_backbone, ctx.ref, drop_path)


def _with_drop_path(
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


@dataclass
class BackboneRecipe:
    """What a search trial needs to build the run's trainable backbone in a Ray worker, which has no
    RunContext: the resolved backbone, the task's input size and drop-path, applied as
    `trainable_backbone` does (the trial moves the model to its own device)."""

    ref: BackboneRef
    input_size: int
    drop_path: float

    def build(self) -> tuple[Backbone, dict[str, Any]]:
        return _with_drop_path(self._build, self.ref, self.drop_path)

    def _build(self, extra_args: dict[str, Any] | None = None) -> Backbone:
        ref = dataclasses.replace(self.ref, args={**self.ref.args, **(extra_args or {})})
        return ref.build(self.input_size if self.input_size != self.ref.data_config.input_size else None)


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
) -> TaskOutput:
    """Fine-tune on `train` (selecting on `val`), score on the test split, save the checkpoint.
    `distill`: a teacher's soft labels for every row of `train` (tasks/distill.py)."""
    from bob.tasks.common.finetune import evaluate, finetune_classifier
    from bob.tasks.common.metrics import classification_metrics

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
    return TaskOutput(metrics, protocol, {artifact: ctx.save_artifact(artifact, checkpoint)})


def search_lr(
    ctx: RunContext, args: FinetuneSearchArgs, train: ImageSplit, val: ImageSplit, cfg: FinetuneConfig
) -> dict[str, Any]:
    """Ray Tune trials over `args.search_space`, ASHA-stopped on val top-1; returns `to_protocol()`.

    Each trial fine-tunes a fresh backbone on `train` with the run's recipe and one lr, and reports
    val top-1 after every epoch (ASHA's rungs: max_t = epochs, grace period 1 epoch). A trial takes
    one CPU (torch threads 1, no loader workers) and, when the run is on CUDA, one GPU.
    """
    import torch

    from bob.tasks.common.tune import search_in_protocol

    on_cuda = torch.device(ctx.device).type == "cuda"
    recipe = BackboneRecipe(ctx.ref, ctx.data_config.input_size, args.drop_path)
    log.info(
        "searching lr over %s: %d trials, ASHA over %d epochs",
        args.search_space,
        args.search_samples,
        cfg.epochs,
    )
    found = search_in_protocol(
        _lr_trial,
        args.search_space,
        metric="val_top1",
        mode="max",
        scheduler="asha",
        num_samples=args.search_samples,
        max_t=cfg.epochs,
        grace_period=1,
        cpus_per_trial=1,
        gpus_per_trial=1 if on_cuda else 0,
        seed=ctx.seed,
        data={
            "recipe": recipe,
            "train": train,
            "val": val,
            "num_classes": ctx.num_classes,
            "cfg": cfg,
            "data_config": ctx.data_config,
            "device": "cuda" if on_cuda else "cpu",
            "seed": ctx.seed,
        },
    )
    return found.to_protocol()


def _lr_trial(
    config: dict[str, Any],
    report: Callable[[dict[str, float]], None],
    recipe: BackboneRecipe,
    train: ImageSplit,
    val: ImageSplit,
    num_classes: int,
    cfg: FinetuneConfig,
    data_config: Any,
    device: str,
    seed: int,
) -> None:
    """One search trial in a Ray worker: the run's fine-tuning with `config`'s lr, val top-1 per epoch."""
    import torch

    from bob.tasks.common.finetune import finetune_classifier

    torch.set_num_threads(1)
    backbone, _ = recipe.build()
    finetune_classifier(
        backbone,
        train,
        val,
        num_classes,
        dataclasses.replace(cfg, **config),
        data_config,
        device,
        seed,
        num_workers=0,
        on_epoch=lambda record: report({"val_top1": record["val_top1"], "train_loss": record["train_loss"]}),
    )


class Finetune(Task):
    suite = "finetune"
    version = "1"
    main_metric = "top1"
    needs = ("trainable",)
    description = "end-to-end fine-tuning, BoB recipe: AdamW, layer-wise lr decay, RandAugment, mixup/cutmix"
    Args = FinetuneSearchArgs
    args: FinetuneSearchArgs
    check_args: ClassVar[dict[str, str]] = {"epochs": "1", "warmup_epochs": "0", "batch_size": "16"}

    def run(self, ctx: RunContext) -> TaskOutput:
        cfg = self.args.config(ctx.info.kind)
        if self.args.teacher is not None:
            return self._distill(ctx, cfg)
        if ctx.has_split("val"):
            train, val = ctx.split("train"), ctx.split("val")
            val_source = "official val split"
        else:
            train, val = holdout_val(ctx.split("train"), self.args.val_fraction, ctx.seed)
            val_source = f"stratified {self.args.val_fraction:.0%} of train (seed {ctx.seed})"
        search = None
        if self.args.search == "lr":  # before any training: a missing Ray fails here, not after a fit
            search = search_lr(ctx, self.args, train, val, cfg)
            cfg = dataclasses.replace(cfg, **search["best_config"])
        output = finetune_and_test(ctx, train, val, cfg, self.args.drop_path)
        output.protocol["val_source"] = val_source
        if search is not None:
            output.protocol["search"] = search
        return output

    def _distill(self, ctx: RunContext, cfg: FinetuneConfig) -> TaskOutput:
        """The student learns from the teacher's soft labels on the train images (no unlabeled pool)."""
        import numpy as np

        from bob.tasks.common.distill import distill_and_test

        train = ctx.split("train")
        if ctx.has_split("val"):
            rows, val, val_source = np.arange(len(train)), ctx.split("val"), "official val split"
        else:
            rows, held = stratified_partition(train.labels, self.args.val_fraction, seed=ctx.seed)
            val = train.subset(held, "val")
            val_source = f"stratified {self.args.val_fraction:.0%} of train (seed {ctx.seed})"
        output = distill_and_test(ctx, self.args, rows, np.arange(0), val, cfg)
        output.protocol["val_source"] = val_source
        return output
