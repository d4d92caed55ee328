"""`dg/<dataset>`: single-source domain generalisation (AdvStyle / Dassl protocol on PACS).

Protocol, on a multi-domain dataset (one split per domain, bob/data/domains.py):
  1. every domain is divided, stratified by class and seeded by the run's seed, into a train part
     and a held-out part of `holdout_fraction` (DomainBed's in/out split; PACS's official split
     files are not read);
  2. for each source domain (all domains by default) a model is trained on the source's train part
     only: `mode=finetune` fine-tunes the backbone with a new linear head (tasks/finetune_loop.py;
     SGD with momentum, cosine schedule, the last epoch is kept, as Dassl does), optionally with
     MixStyle or an AdvStyle-like step on the statistics of the backbone's stages
     (tasks/style_aug.py); `mode=linear` fits the linear-probe head (tasks/linear_probe.py) on frozen
     pooled features, its λ chosen on a stratified `val_fraction` of the source's train part;
  3. the model is scored (top-1) on every other domain, whole, as Dassl scores PACS targets ("all"),
     and on the source's own held-out part (the diagonal of the matrix);
  4. main metric `top1_target`: the mean over targets, averaged over the sources. The whole
     source × target matrix is in the metrics (`top1/<source>-><target>`) and in the protocol.
The paper trains 50 epochs at batch 64, lr 0.001 on real data; generated data defaults to 10 epochs
at batch 32, lr 0.01 (CPU minutes). Every value used is recorded in the result's protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bob.data.base import ImageSplit, stratified_partition
from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.task import Task, TaskArgs, TaskOutput, run_arg
from bob.tasks.dg.matrix import summarise_matrix

if TYPE_CHECKING:
    from bob.context import RunContext
    from bob.tasks.common.finetune import FinetuneConfig

MODES = ("finetune", "linear")
STYLE_AUGS = ("none", "mixstyle", "advstyle")  # tasks/style_aug.py (kept here so parsing stays torch-free)
OPTIMIZERS = {"sgd": "momentum", "adamw": "adamw"}  # task arg -> timm optimizer name
# (epochs, batch_size, lr) by dataset kind: AdvStyle's PACS recipe on real data, CPU-sized otherwise.
REAL_RECIPE = (50, 64, 1e-3)
SMALL_RECIPE = (10, 32, 1e-2)


@dataclass
class DGArgs(TaskArgs):
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
        from bob.tasks.common.finetune import FinetuneConfig

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


@dataclass
class Domains:
    """Every domain's whole split and its seeded train / held-out index partition."""

    splits: dict[str, ImageSplit]
    parts: dict[str, tuple[np.ndarray, np.ndarray]]
    pooled: dict[str, Any] = field(default_factory=dict)  # linear mode: cached features, read once

    def train(self, domain: str) -> ImageSplit:
        return self.splits[domain].subset(self.parts[domain][0], f"{domain}-train")

    def held_out(self, domain: str) -> ImageSplit:
        return self.splits[domain].subset(self.parts[domain][1], f"{domain}-heldout")

    def eval_set(self, source: str, target: str) -> ImageSplit:
        return self.held_out(source) if target == source else self.splits[target]


def load_domains(
    ctx: RunContext, sources: tuple[str, ...] | None, holdout: float
) -> tuple[Domains, list[str]]:
    """Load and check every domain before any training; returns the domains and the sources."""
    domains = list(ctx.info.splits)
    if len(domains) < 2:
        raise UsageError(f"Dataset '{ctx.dataset}' has {len(domains)} domain(s); dg needs at least two.")
    chosen = list(sources) if sources is not None else domains
    for name in chosen:
        if name not in domains:
            hint = f"The domains of {ctx.dataset} are: {', '.join(domains)}."
            raise UnknownNameError(f"source domain of {ctx.dataset}", name, suggest(name, domains, 3), hint)
    splits = {d: ctx.split(d) for d in domains}
    classes = splits[domains[0]].classes
    parts = {}
    for domain, split in splits.items():
        if split.classes != classes:
            raise UsageError(
                f"Dataset '{ctx.dataset}': domain '{domain}' has classes {list(split.classes)}, domain "
                f"'{domains[0]}' has {list(classes)}; every domain must share one class list."
            )
        counts = np.bincount(split.labels, minlength=len(classes))
        if (counts < 2).any():
            few = [classes[i] for i in np.flatnonzero(counts < 2)]
            raise UsageError(
                f"Dataset '{ctx.dataset}': domain '{domain}' has fewer than 2 images of class(es) "
                f"{', '.join(few)}; each class needs one image to train on and one to hold out."
            )
        parts[domain] = stratified_partition(split.labels, holdout, seed=ctx.seed)
    return Domains(splits, parts), list(dict.fromkeys(chosen))


class Dg(Task):
    suite = "dg"
    version = "1"
    main_metric = "top1_target"
    needs = ("trainable",)
    task_types = ("domains",)
    description = (
        "single-source domain generalisation: train on one domain (fine-tune, or linear on frozen "
        "features; optional MixStyle/AdvStyle), top-1 on the others, averaged over sources"
    )
    Args = DGArgs
    args: DGArgs
    check_args: ClassVar[dict[str, str]] = {"epochs": "1", "batch_size": "16", "sources": "plain"}
    check_dataset: ClassVar[str] = "shapes-multidomain-mini"

    def run(self, ctx: RunContext) -> TaskOutput:
        from bob.progress import progress_bar

        domains, sources = load_domains(ctx, self.args.sources, self.args.holdout_fraction)
        names = list(domains.splits)
        train_on = finetune_source if self.args.mode == "finetune" else linear_source
        matrix: dict[str, dict[str, float]] = {}
        per_source: dict[str, dict[str, Any]] = {}
        with progress_bar(f"dg on {ctx.dataset}", len(sources), "sources") as bar:
            for source in sources:
                matrix[source], per_source[source] = train_on(ctx, self.args, domains, source)
                bar.advance(1)
        protocol: dict[str, Any] = {
            "mode": self.args.mode,
            "domains": names,
            "sources": sources,
            "matrix": matrix,
            "matrix_layout": "matrix[source][target] = top-1; diagonal = the source's held-out part",
            "targets_scored_on": "the whole target domain (Dassl's 'all'); the source on its held-out part",
            "averaging": "mean over targets per source, then mean over sources",
            "holdout_fraction": self.args.holdout_fraction,
            "split": f"stratified per domain and class, seed {ctx.seed} (no official split files)",
            "num_images": {d: len(s) for d, s in domains.splits.items()},
            "num_train": {d: len(domains.parts[d][0]) for d in names},
            "num_held_out": {d: len(domains.parts[d][1]) for d in names},
            "per_source": per_source,
        }
        return TaskOutput(summarise_matrix(matrix), protocol)


def _score_row(domains: Domains, source: str, logits_of: Any) -> dict[str, float]:
    from bob.tasks.common.metrics import top_k_accuracy

    row = {}
    for target in domains.splits:
        split = domains.eval_set(source, target)
        row[target] = top_k_accuracy(logits_of(target, split), split.labels, 1)
    return row


def finetune_source(
    ctx: RunContext, args: DGArgs, domains: Domains, source: str
) -> tuple[dict[str, float], dict[str, Any]]:
    """Fine-tune a fresh backbone on the source's train part; score every domain."""
    from bob.tasks.common.finetune import evaluate, finetune_classifier
    from bob.tasks.dg.style_aug import StyleHooks, stage_modules
    from bob.tasks.finetune import trainable_backbone

    cfg = args.config(ctx.info.kind)
    backbone, drop = trainable_backbone(ctx, 0.0)
    hooks, style = None, {"style_aug": args.style_aug}
    if args.style_aug != "none":  # stages are found (or refused) before any training
        stages = stage_modules(backbone, args.style_levels)
        channels = {name: _level_channels(backbone, name) for name, _ in stages}
        hooks = StyleHooks(
            stages, args.style_aug, args.mixstyle_p, args.mixstyle_alpha, args.advstyle_eps, channels
        )
        style.update(_style_protocol(args, [name for name, _ in stages]))
    try:
        out = finetune_classifier(
            backbone,
            domains.train(source),
            None,
            len(domains.splits[source].classes),
            cfg,
            ctx.data_config,
            ctx.device,
            ctx.seed,
            ctx.num_workers,
            loss_fn=hooks.adversarial_loss if hooks is not None and args.style_aug == "advstyle" else None,
        )
    finally:
        if hooks is not None:
            hooks.remove()

    def logits_of(_target: str, split: ImageSplit) -> np.ndarray:
        return evaluate(
            out.model, split, ctx.data_config, ctx.device, cfg.batch_size, ctx.num_workers, cfg.amp
        )

    row = _score_row(domains, source, logits_of)
    protocol = {
        **out.protocol,
        **drop,
        **style,
        "history": out.history,
        "image_size": ctx.data_config.input_size,
    }
    return row, protocol


def _level_channels(backbone: Any, module_name: str) -> int:
    return next(level.channels for level in backbone.feature_info if level.module == module_name)


def _style_protocol(args: DGArgs, stage_names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"style_stages": stage_names, "style_active": "training mode only"}
    if args.style_aug == "mixstyle":
        out.update(
            {"mixstyle_p": args.mixstyle_p, "mixstyle_alpha": args.mixstyle_alpha, "mixstyle_mix": "random"}
        )
    else:
        out.update(
            {
                "advstyle_eps": args.advstyle_eps,
                "advstyle_step": "one signed gradient-ascent step on per-channel mean/std, radius eps·std",
                "advstyle_loss": "mean of clean and adversarially re-styled cross-entropy",
            }
        )
    return out


def linear_source(
    ctx: RunContext, args: DGArgs, domains: Domains, source: str
) -> tuple[dict[str, float], dict[str, Any]]:
    """The linear-probe protocol on frozen pooled features of the source's train part."""
    from bob.tasks.common.args import ProbeArgs
    from bob.tasks.common.probe import run_linear_probe

    if not domains.pooled:  # one cached extraction per domain, shared by every source
        domains.pooled.update({d: ctx.pooled(d) for d in domains.splits})
    feats = domains.pooled
    train_idx, held_idx = domains.parts[source]
    x, y = feats[source].features[train_idx], feats[source].labels[train_idx]
    rest, val = stratified_partition(y, args.val_fraction, seed=ctx.seed)
    probe_args = ProbeArgs(
        val_fraction=args.val_fraction, epochs=args.probe_epochs, min_steps=args.probe_min_steps
    )
    held = (feats[source].features[held_idx], feats[source].labels[held_idx])
    num_classes = len(domains.splits[source].classes)
    out = run_linear_probe(
        (x[rest], y[rest]), (x[val], y[val]), held, num_classes, probe_args, ctx.seed, ctx.device
    )
    head = out["head"]
    weight, bias = head["weight"].numpy(), head["bias"].numpy()
    mean, std = head["mean"].numpy(), head["std"].numpy()

    def logits_of(target: str, _split: ImageSplit) -> np.ndarray:
        x_t = feats[target].features[held_idx] if target == source else feats[target].features
        return ((x_t - mean) / std) @ weight + bias

    row = _score_row(domains, source, logits_of)
    return row, out["protocol"]
