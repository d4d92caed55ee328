"""`finetune/<dataset>`: end-to-end fine-tuning with BoB's recipe (tasks/common/finetune.py).

Protocol:
  1. the backbone is built afresh for training, with drop-path where its architecture has it;
  2. validation is the dataset's official val split, else a seeded stratified `val_fraction` of train;
  3. backbone + a new linear head train with AdamW, layer-wise lr decay, cosine schedule with warm-up,
     RandAugment, mixup/cutmix and label smoothing; the epoch with the best val top-1 is kept;
  4. that checkpoint is scored on test (top-1, top-5, mean per-class recall) and saved next to the result.
BoB trains 100 epochs (5 warm-up) at batch 128 per GPU. Those are the defaults on real datasets; on
embedded and generated datasets (small images, CPU budgets) the defaults are 3 epochs (1 warm-up) at
batch 64. Every value used, resolved, is recorded in the result's protocol.
`protocol=bob` runs BoB's code knob by knob (docs/protocols.md): its recipe and per-backbone overrides
from tasks/common/bob_recipes.yaml, BoB's effective batch of 1024 by gradient accumulation on one
device, BoB's eval crop, and selection and scores on the split BoB reported (val where the dataset
has one, else test); `accum_steps` / `effective_batch` set the accumulation in either protocol.
With `teacher=<backbone>` the student learns from that backbone's soft labels (tasks/common/distill.py,
docs/suites/distillation.md). With `search=lr`, a Ray Tune search (ASHA on val top-1, `search_space`)
picks the lr before step 3 (tasks/finetune/search.py), and the search lands in `protocol["search"]`
(see docs/sweeps.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.task import Task, run_arg
from bob.tasks.common.args import FinetuneRecipeArgs

SEARCHES = ("none", "lr")


@dataclass
class FinetuneArgs(FinetuneRecipeArgs):
    """The finetune suite's args: BoB's recipe plus an optional in-protocol lr search (Ray Tune)."""

    # The declared search space (tasks/common/tune.py syntax); search=lr draws `search_samples` lrs from it.
    search_space: ClassVar[dict[str, Any]] = {"lr": {"loguniform": [1e-5, 3e-3]}}

    search: str = run_arg(
        "none", "in-protocol search before the final fit: none, or lr (Ray Tune, ASHA, picks lr on val)"
    )
    search_samples: int = run_arg(4, "learning rates search=lr tries (drawn log-uniformly)")

    def validate(self) -> None:
        super().validate()
        if self.search not in SEARCHES:
            hint = f"Valid values: {', '.join(SEARCHES)}."
            raise UnknownNameError(
                "search for finetune", self.search, suggest(self.search, SEARCHES, 3), hint
            )
        if self.search_samples < 1:
            raise UsageError(f"search_samples must be a positive integer, got {self.search_samples}.")
        if self.search != "none" and self.teacher is not None:
            raise UsageError("search=lr does not distil: run the lr search without a teacher, then distil.")
        if self.is_bob and (self.search != "none" or self.teacher is not None):
            raise UsageError(
                "protocol=bob runs BoB's recipe with BoB's lr and no teacher: drop search= and teacher=, "
                "or use the default protocol."
            )

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        if self.search == "none":  # runs without a search keep the keys they had before search existed
            del ident["search"], ident["search_samples"]
        return ident


class Finetune(Task):
    suite = "finetune"
    version = "1"
    main_metric = "top1"
    needs = ("trainable",)
    data_parallel = True
    not_data_parallel: ClassVar[dict[tuple[str, str], str]] = {
        ("search", "lr"): "runs a Ray Tune search, which would run once per rank",
    }
    description = "end-to-end fine-tuning, BoB recipe: AdamW, layer-wise lr decay, RandAugment, mixup/cutmix"
    Args = FinetuneArgs
    args: FinetuneArgs
    check_args: ClassVar[dict[str, str]] = {"epochs": "1", "warmup_epochs": "0", "batch_size": "16"}
