"""`linear-probe/<dataset>`: a softmax head on frozen pooled features.

Protocol (CLIP / CLIP_benchmark style, batched):
  1. features of the train and test splits come from the feature cache;
  2. a validation split is the dataset's official one, else a seeded stratified `val_fraction` of train;
  3. the regularisation strength λ is searched on CLIP_benchmark's 97-point log grid, coarse to fine,
     every round's candidates trained together in one pass (tasks/common/probe.py);
  4. a final head with the chosen λ is trained on train + val and scored on test.
Metrics: top-1, top-5 (datasets with at least 5 classes) and mean per-class recall; the protocol
records the chosen λ and the whole sweep. The head is saved next to the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.task import Task
from bob.tasks.common.args import ProbeArgs


@dataclass
class LinearProbeArgs(ProbeArgs):
    """The probe's knobs (tasks/common/args.py); the linear-probe suite adds none."""


class LinearProbe(Task):
    suite = "linear-probe"
    version = "1"
    main_metric = "top1"
    reads_feature_cache = True
    description = (
        "frozen pooled features; L2-regularised softmax head, weight decay chosen on a validation split"
    )
    Args = LinearProbeArgs
    check_args: ClassVar[dict[str, str]] = {"epochs": "2", "min_steps": "20"}
