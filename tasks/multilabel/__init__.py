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
images ReaL scores, and CP/CR/CF1, OP/OR/OF1 at `threshold` for sigmoid heads. See metrics.py for
the exact conventions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bob.errors import UsageError
from bob.task import Task, run_arg
from bob.tasks.common.args import ProbeArgs

CLASSIFIERS = ("probe", "native")
# Datasets scored by a single-label protocol first: their headline is ReaL accuracy, not mAP.
MAIN_METRIC_BY_DATASET = {"imagenet-real": "real_top1"}


@dataclass
class MultilabelArgs(ProbeArgs):
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
    Args = MultilabelArgs
    args: MultilabelArgs
    check_args: ClassVar[dict[str, str]] = {"epochs": "2", "min_steps": "20"}
    check_dataset: ClassVar[str] = "scenes-multilabel-mini"

    def meta(self) -> dict[str, Any]:
        """The main metric is per dataset: ReaL top-1 on imagenet-real, mAP elsewhere."""
        return {**super().meta(), "main_metric": MAIN_METRIC_BY_DATASET.get(self.dataset, self.main_metric)}
