"""`ood/<shift>`: a classifier trained in distribution, scored on shifted sets (top-1, drop, ECE).

Protocol:
  1. every shifted set is located and checked (files, class list, class subset) before anything
     is trained or extracted;
  2. the classifier comes from `fit_classifier(mode, …)`. `mode=linear` (default) is the
     `linear-probe` protocol, run on the in-distribution train split's cached frozen features: the
     same cache entries `linear-probe/<in-dist>` uses, so after that run only the shifted sets are
     extracted, and a second OOD run on the same backbone extracts nothing. `mode=finetune` is
     BoB's setting: the finetune suite's recipe (tasks/common/finetune.py) trains backbone + head end to
     end on the in-distribution train split (`ft_epochs`, `ft_lr`, `ft_batch_size` override it);
     `mode=checkpoint` is BoB's OOD classification exactly: no training, the classifier a
     `finetune/<in-dist>` run saved is scored (`finetune_run=<run id>`, or by default the finetune run
     of the same backbone, weights, backbone args, seed and protocol). That run must exist and be ok;
     a sweep orders such runs after the finetune runs they consume (`Ood.consumes`, bob/sweep/plan.py);
  3. the in-distribution test split and every shifted set are scored with the same classifier. Sets that
     cover a subset of the classes (ImageNet-A/R) have the logits masked to that subset first.
Metrics: `top1_id`, `ece_id`; per set `top1/<set>` and `ece/<set>` (corruption shifts: per
corruption, the mean over the severities run; every (corruption, severity) set's own top-1 and ECE
are saved in the `sets` artifact); the means over all sets `top1_ood` (the main metric) and
`ece_ood`; and `drop` = top1_id − top1_ood (a set's own drop is top1_id − top1/<set>).
ECE: 15 uniform bins, L1 (torchmetrics' convention, see tasks/common/calibration.py).
Code: run.py (the steps), data.py (shift entries and their sets' loaders), sets.py (which sets a run
scores, loaded and checked), train.py (the classifier of each mode), metrics.py (scores, summary).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from bob.data import DATASETS
from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.spec import RunSpec, spec_template
from bob.sweep.plan import Consumes
from bob.task import Task, run_arg
from bob.tasks.common.args import FinetuneRecipeArgs, ProbeArgs, check_protocol, protocol_arg

MODES = ("linear", "finetune", "checkpoint")
FT_DEFAULTS = {"ft_epochs": None, "ft_lr": 1e-3, "ft_batch_size": None}
ALL_SEVERITIES = (1, 2, 3, 4, 5)


@dataclass
class OodArgs(ProbeArgs):
    mode: str = run_arg(
        "linear",
        "classifier: linear (linear-probe protocol, frozen features) | finetune (end to end) | "
        "checkpoint (score the classifier of a finetune/<in-dist> run)",
    )
    corruptions: tuple[str, ...] | None = run_arg(
        None, "corruption shifts: corruptions to score, comma-separated, or 'all' (default: the shift's)"
    )
    severities: tuple[int, ...] = run_arg(ALL_SEVERITIES, "corruption shifts: severities to score (1..5)")
    ece_bins: int = run_arg(15, "number of uniform confidence bins of the expected calibration error")
    ft_epochs: int | None = run_arg(
        None, "mode=finetune: training epochs (default: the finetune suite's, by dataset kind)"
    )
    ft_lr: float = run_arg(FT_DEFAULTS["ft_lr"], "mode=finetune: peak AdamW learning rate")
    ft_batch_size: int | None = run_arg(
        None, "mode=finetune: training batch size (default: the finetune suite's, by dataset kind)"
    )
    finetune_run: str | None = run_arg(
        None,
        "mode=checkpoint: the run id of the finetune/<in-dist> run to score (default: the one of the "
        "same backbone, weights, backbone args, seed and protocol)",
        omit_default=True,
    )
    protocol: str = protocol_arg()

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise UnknownNameError(
                "classifier mode", self.mode, suggest(self.mode, MODES, 2), f"Modes: {MODES}."
            )
        if not self.severities or any(s not in ALL_SEVERITIES for s in self.severities):
            raise UsageError(f"severities must be a non-empty subset of 1..5, got {self.severities}.")
        if self.ece_bins < 1:
            raise UsageError(f"ece_bins must be a positive integer, got {self.ece_bins}.")
        check_protocol(self.protocol)
        if self.finetune_run is not None and self.mode != "checkpoint":
            raise UsageError(
                f"finetune_run only applies with mode=checkpoint (this run is mode={self.mode})."
            )
        if self.mode == "finetune":
            self.finetune_args()  # the recipe's own checks, before any data is touched
        else:
            changed = [f for f, default in FT_DEFAULTS.items() if getattr(self, f) != default]
            if changed:
                raise UsageError(
                    f"Task args {', '.join(changed)} only apply with mode=finetune "
                    f"(this run is mode={self.mode})."
                )

    def finetune_args(self) -> FinetuneRecipeArgs:
        """The finetune suite's recipe (BoB's), with this run's `ft_*` overrides; validated."""
        ft = FinetuneRecipeArgs(
            epochs=self.ft_epochs,
            lr=self.ft_lr,
            batch_size=self.ft_batch_size,
            val_fraction=self.val_fraction,
            protocol=self.protocol,
        )
        ft.validate()
        return ft


class Ood(Task):
    suite = "ood"
    version = "1"
    main_metric = "top1_ood"
    reads_feature_cache = ("mode", "linear")
    data_parallel = True  # mode=finetune: the finetune suite's recipe (common/finetune.py)
    not_data_parallel: ClassVar[dict[tuple[str, str], str]] = {
        ("mode", "linear"): "fits a linear head on frozen features (nothing to train data-parallel)",
        ("mode", "checkpoint"): "scores a saved classifier (nothing to train data-parallel)",
    }
    task_types = ("shift",)
    description = (
        "classifier trained in distribution (linear probe, or fine-tuned); top-1, in→out drop and "
        "15-bin ECE on each shifted set"
    )
    Args = OodArgs
    args: OodArgs
    check_args: ClassVar[dict[str, str]] = {"epochs": "2", "min_steps": "20"}
    check_dataset: ClassVar[str] = "shapes-mini-domains"

    @classmethod
    def consumes(cls, spec: RunSpec) -> list[Consumes]:
        """The runs whose results this run reads (the sweep planner orders it after them): with
        `mode=checkpoint`, the finetune run it scores, by id or as the `finetune/<in-dist>` run of the
        same backbone, weights, backbone args, seed and protocol."""
        args = spec.task_args
        if args.get("mode") != "checkpoint":
            return []
        task = f"finetune/{in_dist_of(spec.task.partition('/')[2])}"
        if args.get("finetune_run"):
            return [Consumes(task, run_id=args["finetune_run"])]
        return [Consumes(task, task_args=(("protocol", args.get("protocol")),))]


def in_dist_of(dataset: str) -> str:
    """The in-distribution dataset of a shift entry (`imagenet` for `imagenet-r`)."""
    options = DATASETS.get(dataset).meta.get("options") or {}
    if "in_dist" not in options:
        raise UsageError(f"{dataset} is not a distribution shift (its entry names no in_dist dataset).")
    return str(options["in_dist"])


def finetune_spec(spec: RunSpec) -> RunSpec:
    """The `finetune/<in-dist>` run whose classifier an `ood/<shift>` run with mode=checkpoint scores
    by default: same backbone, weights, backbone args and seed, the finetune suite's default args under
    the same protocol."""
    protocol = spec.task_args.get("protocol", "default")
    task_args = {} if protocol == "default" else {"protocol": protocol}
    task = f"finetune/{in_dist_of(spec.task.partition('/')[2])}"
    template = spec_template(task, task_args, spec.backbone_args)
    provider = template.spec(spec.backbone, spec.weights, spec.seed)
    return dataclasses.replace(provider, data_root=spec.data_root, download=spec.download)
