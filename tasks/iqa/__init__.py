"""`iqa/<dataset>`: image quality assessment on frozen multi-scale features (TOPIQ / IQA-PyTorch metrics).

Protocol (deviations from TOPIQ in docs/suites/iqa.md):
  1. both splits are loaded and checked (scores, references for `fr`, at least 3 images each) before
     any feature is extracted; train and test never share a scene;
  2. features (features.py), from the feature cache:
       `mode=nr`  every level of `forward_features` average-pooled and concatenated;
       `mode=fr`  per level and channel, the mean squared difference of the channel-normalised maps of
                  the distorted image and its reference (LPIPS-style);
  3. a regressor on train (heads.py): `head=auto` is the MLP for nr, ridge for fr;
  4. test predictions scored against the scores (higher = better, DMOS flipped on load) with SRCC
     (main metric), KRCC, PLCC without fit and PLCC after the VQEG 4-parameter logistic fit
     (metrics.py); with several distortion types, also the mean within-type SRCC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.task import Task, TaskArgs, TaskOutput, run_arg

if TYPE_CHECKING:
    from bob.context import RunContext
    from bob.tasks.iqa.data import IQASplit

MODES = ("nr", "fr")
HEADS = ("auto", "mlp", "linear")
LOSSES = ("mse", "nin", "plcc")  # heads.LOSSES, repeated so parsing args stays torch-free


def _choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise UnknownNameError(what, value, suggest(value, valid, 3), f"Valid values: {', '.join(valid)}.")


@dataclass
class IQAArgs(TaskArgs):
    mode: str = run_arg(
        "nr", "nr (no-reference: the distorted image alone) or fr (full-reference: vs its reference)"
    )
    levels: tuple[int, ...] | None = run_arg(
        None, "feature levels of forward_features to use, e.g. 0,1,2 or -1 (default: all)"
    )
    head: str = run_arg("auto", "regressor: auto (mlp for nr, linear for fr), mlp or linear (ridge)")
    loss: str = run_arg("mse", "MLP loss: mse (TOPIQ's KonIQ config), nin (norm-in-norm) or plcc")
    epochs: int = run_arg(50, "MLP training epochs")
    batch_size: int = run_arg(64, "MLP minibatch size (TOPIQ: 16, for the whole network)")
    lr: float = run_arg(1e-3, "MLP AdamW learning rate, cosine-decayed to zero")
    weight_decay: float = run_arg(1e-5, "MLP AdamW weight decay (TOPIQ: 1e-5)")
    hidden: int = run_arg(256, "MLP hidden width")
    dropout: float = run_arg(0.1, "MLP dropout before the output layer")
    ridge_alpha: float | None = run_arg(None, "fix the linear head's alpha instead of choosing it by CV")
    cv_folds: int = run_arg(5, "grouped (by scene) CV folds for the linear head's alpha")

    def validate(self) -> None:
        super().validate()
        _choice("iqa mode", self.mode, MODES)
        _choice("iqa head", self.head, HEADS)
        _choice("iqa loss", self.loss, LOSSES)
        for name in ("epochs", "batch_size", "hidden"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.cv_folds < 2:
            raise UsageError(f"cv_folds must be at least 2, got {self.cv_folds}.")
        if self.lr <= 0 or self.weight_decay < 0:
            raise UsageError("lr must be positive and weight_decay non-negative.")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.ridge_alpha is not None and self.ridge_alpha <= 0:
            raise UsageError(f"ridge_alpha must be positive, got {self.ridge_alpha}.")
        if self.levels is not None and not self.levels:
            raise UsageError("levels must name at least one feature level.")

    @property
    def resolved_head(self) -> str:
        return self.head if self.head != "auto" else ("mlp" if self.mode == "nr" else "linear")


def check_iqa_split(split: Any, name: str, mode: str) -> IQASplit:
    """The split is an IQA split that can be scored in `mode`; otherwise a UsageError before any work."""
    from bob.tasks.iqa.data import IQASplit

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


class Iqa(Task):
    suite = "iqa"
    version = "1"
    main_metric = "srcc"
    needs = ("features",)
    task_types = ("iqa",)
    description = (
        "image quality: frozen multi-scale features → MLP (mode=nr), or LPIPS-style feature distances "
        "to the reference → ridge (mode=fr); SRCC, KRCC, PLCC (raw and 4-parameter logistic)"
    )
    Args = IQAArgs
    check_dataset: ClassVar[str] = "skimage-distortions-mini"
    check_args: ClassVar[dict[str, str]] = {"epochs": "2"}

    def run(self, ctx: RunContext) -> TaskOutput:
        from bob.tasks.iqa.features import iqa_features
        from bob.tasks.iqa.heads import head_artifact
        from bob.tasks.iqa.metrics import iqa_metrics, within_group_srcc

        args: IQAArgs = self.args  # type: ignore[assignment]
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
        path = ctx.save_artifact("head", head_artifact(head))
        return TaskOutput(metrics, protocol, {"head": path})


FEATURES = {
    "nr": "forward_features levels, global average pooled, concatenated",
    "fr": "per level/channel mean_hw of (x̂_dist − x̂_ref)², x̂ = x / (‖x‖₂ over channels + 1e-10)",
}


def fit_and_predict(
    args: IQAArgs, x_train: np.ndarray, train: IQASplit, x_test: np.ndarray, ctx: RunContext
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """Fit the chosen head on train; returns (head, test predictions, the head's protocol record)."""
    from bob.progress import progress_bar
    from bob.tasks.iqa import heads

    if args.resolved_head == "mlp":
        cfg = heads.MLPConfig(
            args.hidden, args.dropout, args.epochs, args.batch_size, args.lr, args.weight_decay, args.loss
        )
        with progress_bar("fitting IQA MLP", args.epochs, "epochs") as bar:
            head = heads.fit_mlp(x_train, train.scores, cfg, ctx.seed, bar, ctx.device)
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
