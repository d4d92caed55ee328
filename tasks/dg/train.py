"""One source domain's model and its row of the accuracy matrix: fine-tuned end to end (optionally with
MixStyle / AdvStyle hooks on the backbone's stages) or a linear probe on frozen pooled features."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bob.backbones.base import Backbone
from bob.context import RunContext
from bob.data.base import ImageSplit, stratified_partition
from bob.tasks.common.args import ProbeArgs
from bob.tasks.common.finetune import evaluate, finetune_classifier
from bob.tasks.common.finetune_run import trainable_backbone
from bob.tasks.common.metrics import top_k_accuracy
from bob.tasks.common.probe import run_linear_probe
from bob.tasks.common.samples import top1_predictions
from bob.tasks.dg import DgArgs
from bob.tasks.dg.data import Domains
from bob.tasks.dg.style_aug import StyleHooks, stage_modules

# (target domain, the split scored for it) -> logits [N, C]
LogitsOf = Callable[[str, ImageSplit], np.ndarray]
# One source's model: its row of the matrix, its protocol, its top-1 predictions on every other domain.
SourceResult = tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]


def _score_row(
    domains: Domains, source: str, logits_of: LogitsOf
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The source's row of the matrix, and its top-1 predictions on each target (whole) domain."""
    row, preds = {}, {}
    for target in domains.splits:
        split = domains.eval_set(source, target)
        logits = logits_of(target, split)
        row[target] = top_k_accuracy(logits, split.labels, 1)
        if target != source:
            preds[target] = top1_predictions(logits)
    return row, preds


def finetune_source(ctx: RunContext, args: DgArgs, domains: Domains, source: str) -> SourceResult:
    """Fine-tune a fresh backbone on the source's train part; score every domain."""
    cfg = args.config(ctx.info.kind)
    backbone, drop = trainable_backbone(ctx, 0.0)
    hooks, style = _style_hooks(backbone, args)
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

    row, preds = _score_row(domains, source, logits_of)
    protocol = {
        **out.protocol,
        **drop,
        **style,
        "history": out.history,
        "image_size": ctx.data_config.input_size,
    }
    return row, protocol, preds


def _style_hooks(backbone: Backbone, args: DgArgs) -> tuple[StyleHooks | None, dict[str, Any]]:
    """The style-augmentation hooks `args` ask for, on the backbone's stages, and their protocol.
    Stages are found (or refused) here, before any training."""
    style: dict[str, Any] = {"style_aug": args.style_aug}
    if args.style_aug == "none":
        return None, style
    stages = stage_modules(backbone, args.style_levels)
    channels = {name: _level_channels(backbone, name) for name, _ in stages}
    hooks = StyleHooks(
        stages, args.style_aug, args.mixstyle_p, args.mixstyle_alpha, args.advstyle_eps, channels
    )
    style.update(_style_protocol(args, [name for name, _ in stages]))
    return hooks, style


def _level_channels(backbone: Backbone, module_name: str) -> int:
    return next(level.channels for level in backbone.feature_info if level.module == module_name)


def _style_protocol(args: DgArgs, stage_names: list[str]) -> dict[str, Any]:
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


def linear_source(ctx: RunContext, args: DgArgs, domains: Domains, source: str) -> SourceResult:
    """The linear-probe protocol on frozen pooled features of the source's train part."""
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

    row, preds = _score_row(domains, source, logits_of)
    return row, out["protocol"], preds
