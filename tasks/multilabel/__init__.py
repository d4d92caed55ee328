"""`multilabel/<dataset>`: label *sets* per image — mAP, CF1/OF1, ReaL accuracy and plain top-1.

Classifiers (task arg `classifier`):
  - `probe` (default): a linear head on frozen pooled features (standardised with train statistics).
    On a multi-label train set (scenes, VOC, COCO) it is one sigmoid per class trained with binary
    cross-entropy (ASL / ML-GCN's multi-label head, here linear); on a single-label train set
    (ImageNet train for `imagenet-real`) it is the linear-probe suite's softmax protocol. Either way
    the L2 strength λ is chosen on a validation split — the dataset's own, else a seeded random
    `val_fraction` of train — on the linear-probe suite's 97-point log grid, coarse to fine (val mAP
    for sigmoid heads, val top-1 for softmax ones); the final head is trained on train + val;
  - `native`: the backbone's own ImageNet-1k classifier on `imagenet-real`; nothing is trained.
Scores: mAP (main metric; `real_top1` on `imagenet-real`), ReaL top-1/top-5 (top-k in the label
set, empty sets excluded), plain top-1 against each image's primary label on all images and on the
images ReaL scores, and CP/CR/CF1, OP/OR/OF1 at `threshold` for sigmoid heads. See
tasks/multilabel_metrics.py for the exact conventions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bob.errors import UsageError
from bob.task import Task, TaskOutput, run_arg
from bob.tasks.common.args import ProbeArgs

if TYPE_CHECKING:
    from bob.context import RunContext

CLASSIFIERS = ("probe", "native")
# Datasets scored by a single-label protocol first: their headline is ReaL accuracy, not mAP.
MAIN_METRIC_BY_DATASET = {"imagenet-real": "real_top1"}
NATIVE_LABEL_SPACES = {"imagenet-real": "imagenet-1k"}


@dataclass
class MultiLabelArgs(ProbeArgs):
    classifier: str = run_arg(
        "probe", "probe: linear head on frozen features; native: the backbone's own ImageNet-1k head"
    )
    threshold: float = run_arg(0.5, "probability at which a class counts as predicted, for CF1/OF1")

    def validate(self) -> None:
        super().validate()
        if self.classifier not in CLASSIFIERS:
            raise UsageError(f"classifier must be one of {', '.join(CLASSIFIERS)}, got '{self.classifier}'.")
        if not 0.0 < self.threshold < 1.0:
            raise UsageError(f"threshold must be in (0, 1), got {self.threshold}.")


def _scores(x: np.ndarray, head: dict[str, Any], device: Any) -> np.ndarray:
    import torch

    from bob.tasks.common.linear_head import predict

    xs = (x - head["mean"].numpy()) / head["std"].numpy()
    xt = torch.as_tensor(xs, dtype=torch.float32, device=device)
    return predict(xt, head["weight"][None].to(device), head["bias"][None].to(device))[0].cpu().numpy()


def fit_sigmoid_probe(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray, np.ndarray],
    args: MultiLabelArgs,
    seed: int,
    device: Any = "cpu",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """λ chosen by val mAP (val = features, targets, ignore mask), final head on train + val.
    Returns (head, protocol); the head is CPU tensors, like the linear probe's."""
    import torch

    from bob.progress import progress_bar
    from bob.tasks.common.linear_head import HeadConfig, Standardizer, epochs_for, fit_heads, predict
    from bob.tasks.common.probe import COARSE, REFINE_ROUNDS, WD_GRID
    from bob.tasks.multilabel.metrics import mean_average_precision

    cfg = HeadConfig(args.epochs, args.min_steps, args.lr, args.batch_size)
    to_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    c = train[1].shape[1]
    sweep: dict[int, float] = {}
    rounds = 0 if args.weight_decay is not None else 1 + len(REFINE_ROUNDS)
    total = rounds * epochs_for(len(train[0]), cfg) + epochs_for(len(train[0]) + len(val[0]), cfg)
    with progress_bar("fitting multi-label heads", total, "epochs") as bar:
        if args.weight_decay is None:
            std = Standardizer.fit(train[0])
            xt, yt, xv = to_t(std(train[0])), to_t(train[1]), to_t(std(val[0]))

            def evaluate(indices: list[int]) -> int:
                new = [i for i in dict.fromkeys(indices) if i not in sweep]
                if new:
                    w, b = fit_heads(xt, yt, c, [float(WD_GRID[i]) for i in new], cfg, seed, bar, "sigmoid")
                    scores = predict(xv, w, b).cpu().numpy()
                    for j, i in enumerate(new):
                        sweep[i] = mean_average_precision(scores[j], val[1], val[2])
                else:
                    bar.advance(epochs_for(len(xt), cfg))
                return max(indices, key=lambda i: sweep[i])  # first maximum wins ties

            peak = evaluate(list(COARSE))
            for offsets in REFINE_ROUNDS:
                window = [peak] + [min(max(peak + o, 0), len(WD_GRID) - 1) for o in sorted(offsets, key=abs)]
                peak = evaluate(window)
            chosen = float(WD_GRID[peak])
        else:
            chosen = args.weight_decay
        x_all, y_all = np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])
        std = Standardizer.fit(x_all)
        w, b = fit_heads(to_t(std(x_all)), to_t(y_all), c, [chosen], cfg, seed, bar, "sigmoid")
    head = {
        "weight": w[0].cpu(),
        "bias": b[0].cpu(),
        "mean": torch.from_numpy(std.mean),
        "std": torch.from_numpy(std.std),
        "weight_decay": chosen,
    }
    protocol = {
        "head": "linear, one sigmoid per class, binary cross-entropy summed over classes",
        "selected_weight_decay": chosen,
        "weight_decay_semantics": "L2 coefficient on the mean (over images) of the summed BCE",
        "selection_metric": "val mAP",
        "sweep": [{"weight_decay": float(WD_GRID[i]), "val_map": v} for i, v in sorted(sweep.items())],
        "epochs": epochs_for(len(x_all), cfg),
        "lr": args.lr,
        "batch_size": args.batch_size,
        "optimizer": "Adam, cosine to zero",
        "features": "pooled, standardised with train statistics",
    }
    return head, protocol


class Multilabel(Task):
    suite = "multilabel"
    version = "1"
    main_metric = "map"
    reads_feature_cache = True
    task_types = ("multilabel",)
    description = (
        "label sets per image: linear sigmoid head on frozen pooled features (or the backbone's own "
        "ImageNet head); mAP, CF1/OF1, ReaL accuracy (main metric on imagenet-real) and plain top-1"
    )
    Args = MultiLabelArgs
    check_args: ClassVar[dict[str, str]] = {"epochs": "2", "min_steps": "20"}
    check_dataset: ClassVar[str] = "scenes-multilabel-mini"

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "main_metric": MAIN_METRIC_BY_DATASET.get(self.dataset, self.main_metric)}

    def run(self, ctx: RunContext) -> TaskOutput:
        from bob.data.multilabel import MultiLabelSplit
        from bob.tasks.multilabel.metrics import multilabel_metrics

        args = self.args
        test = ctx.split("test")
        if not isinstance(test, MultiLabelSplit):
            raise UsageError(
                f"{self.name}: the test split has no label sets; it is not a multi-label dataset."
            )
        _require_positives(test.targets, test.ignore, f"{self.dataset}/test")
        if args.classifier == "native":
            scores, probs, protocol, artifacts = self._native(ctx), None, {}, {}
            protocol["classifier"] = f"native {NATIVE_LABEL_SPACES[self.dataset]} head of the backbone"
        else:
            scores, probs, protocol, artifacts = self._probe(ctx)
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
        return TaskOutput(metrics, protocol, artifacts)

    # ------------------------------------------------------------------------------ classifiers
    def _native(self, ctx: RunContext) -> np.ndarray:
        import torch

        wanted = NATIVE_LABEL_SPACES.get(self.dataset)
        if wanted is None:
            raise UsageError(
                f"classifier=native scores a backbone's own ImageNet-1k head, which has no meaning on "
                f"{self.dataset}'s classes; use classifier=probe (or the imagenet-real dataset)."
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

    def _probe(self, ctx: RunContext) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any], dict[str, str]]:
        from scipy.special import expit

        from bob.data.multilabel import MultiLabelSplit
        from bob.tasks.common.probe import run_linear_probe

        train_split, train, test = ctx.split("train"), ctx.pooled("train"), ctx.pooled("test")
        if isinstance(train_split, MultiLabelSplit):
            fit, val, source = self._multilabel_val(ctx, train_split, train.features)
            head, protocol = fit_sigmoid_probe(fit, val, self.args, ctx.seed, ctx.device)
            scores = _scores(test.features, head, ctx.device)
            probs: np.ndarray | None = expit(scores)
        else:  # single-label train set (ImageNet train): the linear-probe suite's softmax protocol
            fit, val, source = self._single_label_val(ctx, train.features, train.labels)
            out = run_linear_probe(
                fit, val, (test.features, test.labels), ctx.num_classes, self.args, ctx.seed, ctx.device
            )
            head, probs = out["head"], None
            protocol = {**out["protocol"], "head": "linear softmax (the linear-probe suite's protocol)"}
            scores = _scores(test.features, head, ctx.device)
        protocol.update({"classifier": "probe", "val_source": source})
        protocol.update({"num_train": len(fit[0]), "num_val": len(val[0])})
        path = ctx.save_artifact("head", {**head, "classes": list(ctx.split("test").classes)})
        return scores, probs, protocol, {"head": path}

    def _multilabel_val(self, ctx: RunContext, split: Any, features: np.ndarray) -> tuple[Any, Any, str]:
        """(train features, targets), (val features, targets, ignore) and where val came from."""
        from bob.data.multilabel import random_holdout

        if ctx.has_split("val"):
            val_split = ctx.split("val")
            val = (ctx.pooled("val").features, val_split.targets, val_split.ignore)
            fit_idx, source = np.arange(len(features)), "official val split"
        else:
            fit_idx, held = random_holdout(len(features), self.args.val_fraction, ctx.seed)
            val = (features[held], split.targets[held], split.ignore[held])
            source = f"random {self.args.val_fraction:.0%} of train (seed {ctx.seed})"
        _require_positives(val[1], val[2], f"the validation part ({source})")
        fit = (features[fit_idx], split.targets[fit_idx].astype(np.float32))
        return fit, (val[0], val[1].astype(np.float32), val[2]), source

    def _single_label_val(
        self, ctx: RunContext, features: np.ndarray, labels: np.ndarray
    ) -> tuple[Any, Any, str]:
        from bob.data.base import stratified_partition

        if ctx.has_split("val"):
            val = ctx.pooled("val")
            return (features, labels), (val.features, val.labels), "official val split"
        rest, held = stratified_partition(labels, self.args.val_fraction, ctx.seed)
        source = f"stratified {self.args.val_fraction:.0%} of train (seed {ctx.seed})"
        return (features[rest], labels[rest]), (features[held], labels[held]), source


def _require_positives(targets: np.ndarray, ignore: np.ndarray, where: str) -> None:
    """Refuse, before anything is trained, a scored set in which no class has a positive label."""
    from bob.tasks.multilabel.metrics import scored_classes

    if len(scored_classes(targets, ignore)) == 0:
        raise UsageError(f"{where} has no image with a (non-ignored) label, so mAP cannot be computed.")
