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
The protocol is run.py; the split type data.py, the datasets' loaders real.py and skimage_set.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.task import Task, TaskArgs, run_arg

MODES = ("nr", "fr")
HEADS = ("auto", "mlp", "linear")
LOSSES = ("mse", "nin", "plcc")  # heads.LOSSES, repeated so parsing args stays torch-free


def _choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise UnknownNameError(what, value, suggest(value, valid, 3), f"Valid values: {', '.join(valid)}.")


@dataclass
class IqaArgs(TaskArgs):
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
    Args = IqaArgs
    check_dataset: ClassVar[str] = "skimage-distortions-mini"
    check_args: ClassVar[dict[str, str]] = {"epochs": "2"}
