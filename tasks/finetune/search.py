"""`search=lr`: Ray Tune trials over the finetune suite's lr space, before the final fit (docs/sweeps.md).

Each trial fine-tunes a fresh backbone on the run's train part with the run's recipe and one lr, and
reports val top-1 after every epoch; ASHA stops the weak trials early. A trial runs in a Ray worker,
which has no RunContext: `BackboneRecipe` carries what it needs to build the run's trainable backbone.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bob.backbones.base import Backbone, BackboneRef
from bob.backbones.meta import DataConfig
from bob.context import RunContext
from bob.data.base import ImageSplit
from bob.tasks.common.finetune import finetune_classifier
from bob.tasks.common.finetune_run import with_drop_path
from bob.tasks.common.recipe import FinetuneConfig
from bob.tasks.common.tune import search_in_protocol
from bob.tasks.finetune import FinetuneArgs

log = logging.getLogger(__name__)


@dataclass
class BackboneRecipe:
    """What a search trial needs to build the run's trainable backbone in a Ray worker: the resolved
    backbone, the task's input size and drop-path, applied as `trainable_backbone` does (the trial
    moves the model to its own device)."""

    ref: BackboneRef
    input_size: int
    drop_path: float

    def build(self) -> tuple[Backbone, dict[str, Any]]:
        return with_drop_path(self._build, self.ref, self.drop_path)

    def _build(self, extra_args: dict[str, Any] | None = None) -> Backbone:
        ref = dataclasses.replace(self.ref, args={**self.ref.args, **(extra_args or {})})
        return ref.build(self.input_size if self.input_size != self.ref.data_config.input_size else None)


def search_lr(
    ctx: RunContext, args: FinetuneArgs, train: ImageSplit, val: ImageSplit, cfg: FinetuneConfig
) -> dict[str, Any]:
    """Ray Tune trials over `args.search_space`, ASHA-stopped on val top-1; returns `to_protocol()`.

    ASHA's rungs: max_t = epochs, grace period 1 epoch. A trial takes one CPU (torch threads 1, no
    loader workers) and, when the run is on CUDA, one GPU.
    """
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
    data_config: DataConfig,
    device: str,
    seed: int,
) -> None:
    """One search trial in a Ray worker: the run's fine-tuning with `config`'s lr, val top-1 per epoch."""
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
