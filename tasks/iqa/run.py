"""The IQA protocol: check both splits, features from the cache (features.py), a regressor on train
(heads.py), the test predictions scored against the quality scores (metrics.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bob.context import RunContext
from bob.data.base import ImageSplit
from bob.errors import UsageError
from bob.samples import make_samples
from bob.task import TaskOutput
from bob.tasks.common.samples import save_samples
from bob.tasks.iqa import Iqa, IqaArgs, heads
from bob.tasks.iqa.data import IQASplit
from bob.tasks.iqa.features import iqa_features
from bob.tasks.iqa.metrics import iqa_metrics, within_group_srcc

FEATURES = {
    "nr": "forward_features levels, global average pooled, concatenated",
    "fr": "per level/channel mean_hw of (x̂_dist − x̂_ref)², x̂ = x / (‖x‖₂ over channels + 1e-10)",
}


def run(task: Iqa, ctx: RunContext) -> TaskOutput:
    args: IqaArgs = task.args  # type: ignore[assignment]
    train = check_iqa_split(ctx.split("train"), "train", args.mode)
    test = check_iqa_split(ctx.split("test"), "test", args.mode)
    levels = list(args.levels) if args.levels is not None else None
    x_train = iqa_features(ctx, train, args.mode, levels)
    x_test = iqa_features(ctx, test, args.mode, levels)
    head, pred, head_protocol = fit_and_predict(args, x_train, train, x_test, ctx)
    metrics, fit = iqa_metrics(pred, test.scores)
    per_type = within_group_srcc(pred, test.scores, test.labels)
    if len(per_type) > 1:
        metrics["srcc_within_type"] = float(np.mean(list(per_type.values())))
    protocol = {
        "mode": args.mode,
        "head": args.resolved_head,
        **head_protocol,
        "features": FEATURES[args.mode],
        "levels": levels if levels is not None else "all",
        "feature_dim": int(x_train.shape[1]),
        "score": train.score_note,
        "direction": "higher score = better quality",
        "split": train.split_note,
        "plcc_logistic4_fit": fit,
        "srcc_per_type": {test.classes[k]: v for k, v in per_type.items()},
        "num_train": len(train),
        "num_test": len(test),
        "train_scenes": len(np.unique(train.content)),
        "test_scenes": len(np.unique(test.content)),
        "metrics_reference": "scipy.stats spearmanr / kendalltau (tau-b) / pearsonr; "
        "scipy.optimize.curve_fit for the logistic (pyiqa initial values)",
    }
    path = ctx.save_artifact("head", heads.head_artifact(head))
    arrays = {"pred": np.asarray(pred, dtype=np.float64), "target": np.asarray(test.scores, dtype=np.float64)}
    samples = make_samples("spearman", "srcc", arrays, units="image", truth=(arrays["target"],))
    return save_samples(ctx, TaskOutput(metrics, protocol, {"head": path}), samples)


def check_iqa_split(split: ImageSplit, name: str, mode: str) -> IQASplit:
    """The split is an IQA split that can be scored in `mode`; otherwise a UsageError before any work."""
    if not isinstance(split, IQASplit):
        raise UsageError(f"{split.dataset}/{name} is not an IQA dataset (no quality scores).")
    if len(split) < 3:
        raise UsageError(f"{split.dataset}/{name} has {len(split)} images; IQA needs at least 3.")
    if np.ptp(split.scores) == 0:
        raise UsageError(f"{split.dataset}/{name}: every image has the same score; nothing to rank.")
    if mode == "fr" and not split.has_references:
        raise UsageError(
            f"{split.dataset} has no reference images, so mode=fr cannot run on it; use mode=nr."
        )
    return split


def fit_and_predict(
    args: IqaArgs, x_train: np.ndarray, train: IQASplit, x_test: np.ndarray, ctx: RunContext
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """Fit the chosen head on train; returns (head, test predictions, the head's protocol record)."""
    if args.resolved_head == "mlp":
        cfg = heads.MLPConfig(
            args.hidden, args.dropout, args.epochs, args.batch_size, args.lr, args.weight_decay, args.loss
        )
        head = heads.fit_mlp(x_train, train.scores, cfg, ctx.seed, ctx.device)
        record = {
            "layers": f"Linear({x_train.shape[1]}, {args.hidden}) → ReLU → Dropout({args.dropout}) → Linear(1)",
            "optimizer": "AdamW, cosine to zero over all steps",
            **{k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "loss")},
            "targets": "z-scored with train mean/std, mapped back for scoring",
        }
        return head, heads.predict_mlp(head, x_test), {"mlp": record}
    if args.ridge_alpha is None:
        alpha, sweep = heads.select_ridge_alpha(x_train, train.scores, train.content, args.cv_folds)
        record = {"selected_alpha": alpha, "cv_folds": args.cv_folds, "sweep": sweep}
    else:
        alpha = args.ridge_alpha
        record = {"selected_alpha": alpha, "fixed": True}
    head = heads.fit_linear(x_train, train.scores, alpha)
    return head, heads.predict_linear(head, x_test), {"ridge": record}
