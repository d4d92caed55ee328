"""`dg/<dataset>`: single-source domain generalisation (AdvStyle / Dassl protocol on PACS).

Protocol, on a multi-domain dataset (one split per domain, tasks/dg/data.py):
  1. every domain is divided, stratified by class and seeded by the run's seed, into a train part
     and a held-out part of `holdout_fraction` (DomainBed's in/out split; PACS's official split
     files are not read);
  2. for each source domain (all domains by default) a model is trained on the source's train part
     only: `mode=finetune` fine-tunes the backbone with a new linear head (tasks/common/finetune.py;
     SGD with momentum, cosine schedule, the last epoch is kept, as Dassl does), optionally with
     MixStyle or an AdvStyle-like step on the statistics of the backbone's stages
     (tasks/dg/style_aug.py); `mode=linear` fits the linear-probe head (tasks/common/probe.py) on frozen
     pooled features, its λ chosen on a stratified `val_fraction` of the source's train part;
  3. the model is scored (top-1) on every other domain, whole, as Dassl scores PACS targets ("all"),
     and on the source's own held-out part (the diagonal of the matrix);
  4. main metric `top1_target`: the mean over targets, averaged over the sources. The whole
     source × target matrix is in the metrics (`top1/<source>-><target>`) and in the protocol.
The paper trains 50 epochs at batch 64, lr 0.001 on real data; generated data defaults to 10 epochs
at batch 32, lr 0.01 (CPU minutes). Every value used is recorded in the result's protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.task import Task, TaskArgs, run_arg
from bob.tasks.common.recipe import FinetuneConfig

MODES = ("finetune", "linear")
STYLE_AUGS = ("none", "mixstyle", "advstyle")  # tasks/dg/style_aug.py (named here: parsing stays torch-free)
OPTIMIZERS = {"sgd": "momentum", "adamw": "adamw"}  # task arg -> timm optimizer name
# (epochs, batch_size, lr) by dataset kind: AdvStyle's PACS recipe on real data, CPU-sized otherwise.
REAL_RECIPE = (50, 64, 1e-3)
SMALL_RECIPE = (10, 32, 1e-2)


@dataclass
class DgArgs(TaskArgs):
    mode: str = run_arg("finetune", "finetune (backbone + linear head) or linear (frozen pooled features)")
    sources: tuple[str, ...] | None = run_arg(None, "source domains, comma-separated (default: every domain)")
    holdout_fraction: float = run_arg(0.2, "share of each domain held out (the in-domain diagonal)")
    style_aug: str = run_arg("none", "none, mixstyle or advstyle: style statistics hooks (finetune mode)")
    style_levels: tuple[int, ...] | None = run_arg(
        None, "feature levels to hook (default: every level but the first and the last)"
    )
    mixstyle_p: float = run_arg(0.5, "MixStyle: probability per batch and stage")
    mixstyle_alpha: float = run_arg(0.1, "MixStyle: Beta(α, α) mixing weights")
    advstyle_eps: float = run_arg(0.5, "AdvStyle: ascent radius as a fraction of each channel's std")
    epochs: int | None = run_arg(None, "fine-tuning epochs (default: 50 on real datasets, 10 on generated)")
    batch_size: int | None = run_arg(None, "fine-tuning batch size (default: 64 real, 32 generated)")
    lr: float | None = run_arg(
        None, "peak learning rate, cosine to zero (default: 0.001 real, 0.01 generated)"
    )
    optimizer: str = run_arg("sgd", "sgd (momentum 0.9, as Dassl) or adamw")
    weight_decay: float = run_arg(5e-4, "weight decay (not on biases and norms)")
    amp: bool = run_arg(True, "mixed precision on CUDA (ignored on CPU)")
    val_fraction: float = run_arg(0.2, "linear mode: share of the source's train part for the λ sweep")
    probe_epochs: int = run_arg(10, "linear mode: minimum head-training epochs (linear-probe's epochs)")
    probe_min_steps: int = run_arg(
        250, "linear mode: minimum head optimizer steps (linear-probe's min_steps)"
    )

    def validate(self) -> None:
        super().validate()
        for name, valid in (("mode", MODES), ("style_aug", STYLE_AUGS), ("optimizer", tuple(OPTIMIZERS))):
            value = getattr(self, name)
            if value not in valid:
                hint = f"Valid values: {', '.join(valid)}."
                raise UnknownNameError(f"{name} for dg", value, suggest(value, valid, 3), hint)
        tuned = [n for n in ("epochs", "batch_size", "lr") if getattr(self, n) is not None]
        if tuned and self.mode == "linear":
            raise UsageError(
                f"{', '.join(tuned)} set the fine-tuning schedule and mean nothing in mode=linear "
                "(its head takes probe_epochs and probe_min_steps); drop them or use mode=finetune."
            )
        if self.style_aug != "none" and self.mode == "linear":
            raise UsageError(
                "style_aug needs mode=finetune: frozen features cannot be style-augmented during training."
            )
        for name in ("holdout_fraction", "val_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise UsageError(f"{name} must be in (0, 1), got {getattr(self, name)}.")
        if not 0.0 <= self.mixstyle_p <= 1.0 or self.mixstyle_alpha <= 0:
            raise UsageError("mixstyle_p must be in [0, 1] and mixstyle_alpha positive.")
        if not 0.0 < self.advstyle_eps < 1.0:
            raise UsageError(
                f"advstyle_eps must be in (0, 1) (σ·(1 ± ε) stays positive), got {self.advstyle_eps}."
            )
        for name in ("epochs", "batch_size", "probe_epochs", "probe_min_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value}.")
        if (self.lr is not None and self.lr <= 0) or self.weight_decay < 0:
            raise UsageError("lr must be positive and weight_decay non-negative.")
        if self.sources is not None and not self.sources:
            raise UsageError("sources is empty; name at least one domain, or leave it unset for all.")

    def config(self, dataset_kind: str) -> FinetuneConfig:
        """The fine-tuning loop's config: Dassl's plain recipe (no mixup, no RandAugment, no smoothing)."""
        epochs, batch, lr = REAL_RECIPE if dataset_kind == "real" else SMALL_RECIPE
        return FinetuneConfig(
            epochs=self.epochs or epochs,
            warmup_epochs=0,
            batch_size=self.batch_size or batch,
            lr=self.lr or lr,
            min_lr=0.0,
            weight_decay=self.weight_decay,
            layer_decay=1.0,
            mixup=0.0,
            cutmix=0.0,
            label_smoothing=0.0,
            auto_augment=None,
            color_jitter=0.0,
            random_erasing=0.0,
            amp=self.amp,
            opt=OPTIMIZERS[self.optimizer],
            crop_scale=(0.8, 1.0),
        )


class Dg(Task):
    suite = "dg"
    version = "1"
    main_metric = "top1_target"
    needs = ("trainable",)
    data_parallel = True
    not_data_parallel: ClassVar[dict[tuple[str, str], str]] = {
        ("mode", "linear"): "fits a linear head on frozen features (nothing to train data-parallel)",
    }
    task_types = ("domains",)
    description = (
        "single-source domain generalisation: train on one domain (fine-tune, or linear on frozen "
        "features; optional MixStyle/AdvStyle), top-1 on the others, averaged over sources"
    )
    Args = DgArgs
    args: DgArgs
    check_args: ClassVar[dict[str, str]] = {"epochs": "1", "batch_size": "16", "sources": "plain"}
    check_dataset: ClassVar[str] = "shapes-multidomain-mini"
