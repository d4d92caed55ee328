"""The multilabel protocol: a classifier's scores on the test label sets (see the package docstring)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.special import expit

from bob.context import RunContext
from bob.data.base import stratified_partition
from bob.errors import UsageError
from bob.samples import SampleSet, make_samples
from bob.task import TaskOutput
from bob.tasks.common.probe import run_linear_probe
from bob.tasks.common.samples import mean_samples, save_samples
from bob.tasks.multilabel import Multilabel
from bob.tasks.multilabel.data import MultiLabelSplit, random_holdout
from bob.tasks.multilabel.metrics import multilabel_metrics, scored_classes
from bob.tasks.multilabel.sigmoid_probe import fit_sigmoid_probe, head_scores

NATIVE_LABEL_SPACES = {"imagenet-real": "imagenet-1k"}

# (features, targets) to fit on; (features, targets, ignore) or (features, labels) to validate on
Fit = tuple[np.ndarray, np.ndarray]
Val = tuple[np.ndarray, ...]


def run(task: Multilabel, ctx: RunContext) -> TaskOutput:
    args = task.args
    test = ctx.split("test")
    if not isinstance(test, MultiLabelSplit):
        raise UsageError(f"{task.name}: the test split has no label sets; it is not a multi-label dataset.")
    _require_positives(test.targets, test.ignore, f"{task.dataset}/test")
    if args.classifier == "native":
        scores, probs, protocol, artifacts = _native(task, ctx), None, {}, {}
        protocol["classifier"] = f"native {NATIVE_LABEL_SPACES[task.dataset]} head of the backbone"
    else:
        scores, probs, protocol, artifacts = _probe(task, ctx)
    metrics, counts = multilabel_metrics(
        scores, probs, test.targets, test.labels, args.threshold, test.ignore
    )
    protocol.update(counts)
    protocol.update(test.notes)
    protocol["threshold"] = args.threshold if probs is not None else None
    protocol["map_convention"] = (
        "mean over classes with >=1 positive of sklearn average_precision_score; ignored pairs left out"
    )
    protocol["real_convention"] = "top-k in the label set; images with an empty set excluded"
    samples = label_set_samples(task.meta()["main_metric"], scores, test.targets, test.ignore)
    return save_samples(ctx, TaskOutput(metrics, protocol, artifacts), samples)


def label_set_samples(metric: str, scores: np.ndarray, targets: np.ndarray, ignore: np.ndarray) -> SampleSet:
    """What the main metric is computed from, per test image: for mAP every class score with the
    image's label set (and ignored pairs); for ReaL top-1, whether the top-1 class is in the set
    (images with an empty set are not scored, so they are not units)."""
    truth = (np.asarray(targets), np.asarray(ignore))
    if metric == "real_top1":
        keep = np.asarray(targets).astype(bool).any(axis=1)
        top = np.argsort(-scores[keep], axis=1, kind="stable")[:, :1]
        hit = np.take_along_axis(np.asarray(targets)[keep].astype(bool), top, axis=1)[:, 0]
        return mean_samples(hit.astype(np.float64), metric, "image", truth)
    arrays = {
        "scores": np.asarray(scores, dtype=np.float32),
        "targets": np.asarray(targets).astype(bool),
        "ignore": np.asarray(ignore).astype(bool),
    }
    if scores.dtype != np.float32 and not np.array_equal(arrays["scores"], scores):
        arrays["scores"] = np.asarray(scores, dtype=np.float64)  # keep the exact ranking
    return make_samples("average_precision", metric, arrays, units="image", truth=truth)


# ---------------------------------------------------------------------------------- classifiers


def _native(task: Multilabel, ctx: RunContext) -> np.ndarray:
    """Logits of the backbone's own ImageNet-1k head on the test features."""
    wanted = NATIVE_LABEL_SPACES.get(task.dataset)
    if wanted is None:
        raise UsageError(
            f"classifier=native scores a backbone's own ImageNet-1k head, which has no meaning on "
            f"{task.dataset}'s classes; use classifier=probe (or the imagenet-real dataset)."
        )
    native = ctx.backbone().native_classifier()
    if native is None or native[1] != wanted:
        raise UsageError(
            f"{ctx.ref.resolved_name} (weights {ctx.ref.weights.kind}) exposes no {wanted} classifier: "
            "classifier=native needs a pretrained timm or torchvision checkpoint with its ImageNet-1k head. "
            "Use classifier=probe to train a linear probe on ImageNet train instead."
        )
    head = native[0].to(ctx.device)
    features = ctx.pooled("test").features
    with torch.no_grad():
        return head(torch.as_tensor(features, device=ctx.device)).cpu().numpy()


def _probe(
    task: Multilabel, ctx: RunContext
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any], dict[str, str]]:
    """A linear head on frozen features: sigmoid on a multi-label train set, else softmax."""
    args = task.args
    train_split, train, test = ctx.split("train"), ctx.pooled("train"), ctx.pooled("test")
    if isinstance(train_split, MultiLabelSplit):
        fit, val, source = _multilabel_val(task, ctx, train_split, train.features)
        head, protocol = fit_sigmoid_probe(fit, val, args, ctx.seed, ctx.device)
        scores = head_scores(test.features, head, ctx.device)
        probs: np.ndarray | None = expit(scores)
    else:  # single-label train set (ImageNet train): the linear-probe suite's softmax protocol
        fit, val, source = _single_label_val(task, ctx, train.features, train.labels)
        out = run_linear_probe(
            fit, val, (test.features, test.labels), ctx.num_classes, args, ctx.seed, ctx.device
        )
        head, probs = out["head"], None
        protocol = {**out["protocol"], "head": "linear softmax (the linear-probe suite's protocol)"}
        scores = head_scores(test.features, head, ctx.device)
    protocol.update({"classifier": "probe", "val_source": source})
    protocol.update({"num_train": len(fit[0]), "num_val": len(val[0])})
    path = ctx.save_artifact("head", {**head, "classes": list(ctx.split("test").classes)})
    return scores, probs, protocol, {"head": path}


def _multilabel_val(
    task: Multilabel, ctx: RunContext, split: MultiLabelSplit, features: np.ndarray
) -> tuple[Fit, Val, str]:
    """(train features, targets), (val features, targets, ignore) and where val came from."""
    args = task.args
    if ctx.has_split("val"):
        val_split = ctx.split("val")
        val = (ctx.pooled("val").features, val_split.targets, val_split.ignore)
        fit_idx, source = np.arange(len(features)), "official val split"
    else:
        fit_idx, held = random_holdout(len(features), args.val_fraction, ctx.seed)
        val = (features[held], split.targets[held], split.ignore[held])
        source = f"random {args.val_fraction:.0%} of train (seed {ctx.seed})"
    _require_positives(val[1], val[2], f"the validation part ({source})")
    fit = (features[fit_idx], split.targets[fit_idx].astype(np.float32))
    return fit, (val[0], val[1].astype(np.float32), val[2]), source


def _single_label_val(
    task: Multilabel, ctx: RunContext, features: np.ndarray, labels: np.ndarray
) -> tuple[Fit, Val, str]:
    args = task.args
    if ctx.has_split("val"):
        val = ctx.pooled("val")
        return (features, labels), (val.features, val.labels), "official val split"
    rest, held = stratified_partition(labels, args.val_fraction, ctx.seed)
    source = f"stratified {args.val_fraction:.0%} of train (seed {ctx.seed})"
    return (features[rest], labels[rest]), (features[held], labels[held]), source


def _require_positives(targets: np.ndarray, ignore: np.ndarray, where: str) -> None:
    """Refuse, before anything is trained, a scored set in which no class has a positive label."""
    if len(scored_classes(targets, ignore)) == 0:
        raise UsageError(f"{where} has no image with a (non-ignored) label, so mAP cannot be computed.")
