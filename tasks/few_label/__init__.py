"""`few-label/<dataset>`: learn from a fraction of the train labels (SimCLRv2 / BoB low-data ImageNet).

Protocol:
  1. the labelled subset is `fraction` of train (tasks/few_label/subsets.py): SimCLR's published
     1percent.txt / 10percent.txt on ImageNet, else a seeded class-balanced subset written once;
  2. model selection only ever sees labelled-subset images: a seeded stratified `val_fraction` of the
     subset is held out (`val_fraction=0`: train on all of it, keep the last epoch / fix the probe's λ);
  3. `mode=finetune`: the finetune suite's loop and recipe (tasks/common/finetune.py) on the subset;
     `mode=linear`: the linear-probe protocol (tasks/common/probe.py) on the cached train features,
     indexed by the subset, so it costs no extraction when the linear probe ran before;
  4. top-1 / top-5 / mean per-class recall on the full test split.
With `teacher=<backbone>` (fine-tune mode) the student also learns from the teacher's soft labels on
the unlabeled pool, the train images outside the subset (SimCLRv2's distillation; tasks/common/distill.py).
Fine-tuning defaults: BoB's recipe; 60 epochs (5 warm-up) at batch 128 on real data, as in BoB's
low-data ImageNet runs; 10 epochs (1 warm-up) at batch 64 on embedded and generated data.
`protocol=bob` runs BoB's low-data command (tasks/common/bob_recipes.yaml): lr 2.5e-4, layer decay
0.65, 60 epochs, effective batch 512 (16 per step, 32 steps accumulated), trained on the whole
labelled subset, the epoch selected on, and scored on, the split BoB reported (ImageNet: its val set,
bob's test split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.errors import UsageError
from bob.task import Task, run_arg
from bob.tasks.common.args import FinetuneRecipeArgs

MODES = ("finetune", "linear")


@dataclass
class FewLabelArgs(FinetuneRecipeArgs):
    real_schedule: ClassVar[tuple[int, int, int]] = (60, 5, 128)
    small_schedule: ClassVar[tuple[int, int, int]] = (10, 1, 64)
    val_fraction_may_be_zero: ClassVar[bool] = True
    bob_suite: ClassVar[str] = "few-label"

    epochs: int | None = run_arg(None, "training epochs (default: 60 on real datasets, 10 on embedded ones)")
    warmup_epochs: int | None = run_arg(None, "linear warm-up epochs (default: 5 real, 1 embedded)")
    fraction: float = run_arg(
        0.1, "share of the train labels kept, in (0, 1]; ImageNet 0.01 / 0.1 use SimCLR's files"
    )
    mode: str = run_arg("finetune", "finetune (whole network) or linear (probe on cached frozen features)")
    subset_seed: int = run_arg(
        0, "seed of the class-balanced subset (datasets without published subset files)"
    )
    val_fraction: float = run_arg(
        0.2, "share of the labelled subset held out for model selection (0 = none: last epoch / fixed λ)"
    )
    probe_weight_decay: float | None = run_arg(None, "linear mode: fix λ instead of sweeping it on val")
    probe_epochs: int = run_arg(10, "linear mode: minimum epochs per head")
    probe_min_steps: int = run_arg(250, "linear mode: minimum optimizer steps per head")
    probe_lr: float = run_arg(1e-2, "linear mode: Adam learning rate of the head")
    kd_unlabeled: bool = run_arg(
        True, "with a teacher: distil on the unlabeled pool (train images outside the subset) too"
    )

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.fraction <= 1.0:
            raise UsageError(f"fraction must be in (0, 1] (e.g. 0.01 or 0.1), got {self.fraction}.")
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'.")
        if self.mode == "linear" and self.val_fraction == 0 and self.probe_weight_decay is None:
            raise UsageError(
                "mode=linear with val_fraction=0 has no validation set to choose λ on: "
                "set probe_weight_decay (e.g. 1e-4), or keep val_fraction above 0."
            )
        if self.probe_epochs < 1 or self.probe_min_steps < 1 or self.probe_lr <= 0:
            raise UsageError("probe_epochs and probe_min_steps must be positive integers, probe_lr positive.")
        if self.probe_weight_decay is not None and self.probe_weight_decay < 0:
            raise UsageError(f"probe_weight_decay must be non-negative, got {self.probe_weight_decay}.")
        if self.teacher is not None and self.mode != "finetune":
            raise UsageError("teacher= distils by fine-tuning the student: use it with mode=finetune.")
        if self.is_bob and (self.mode != "finetune" or self.teacher is not None):
            raise UsageError(
                "protocol=bob runs BoB's low-data recipe (train_semi.py), which fine-tunes without a "
                "teacher: use mode=finetune and no teacher=, or the default protocol."
            )


class FewLabel(Task):
    suite = "few-label"
    version = "1"
    main_metric = "top1"
    reads_feature_cache = ("mode", "linear")
    data_parallel = True
    not_data_parallel: ClassVar[dict[tuple[str, str], str]] = {
        ("mode", "linear"): "fits a linear head on frozen features (nothing to train data-parallel)",
    }
    needs = ("pooled", "trainable")
    description = "a fraction of the train labels (SimCLR's ImageNet 1%/10% files); fine-tune or linear probe"
    Args = FewLabelArgs
    args: FewLabelArgs
    check_args: ClassVar[dict[str, str]] = {"epochs": "1", "warmup_epochs": "0", "fraction": "0.5"}
