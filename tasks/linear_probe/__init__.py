"""`linear-probe/<dataset>`: a softmax head on frozen pooled features.

Protocol (`mode=cached`, the default; CLIP / CLIP_benchmark style, batched):
  1. features of the train and test splits come from the feature cache;
  2. a validation split is the dataset's official one, else a seeded stratified `val_fraction` of train;
  3. the regularisation strength λ is searched on CLIP_benchmark's 97-point log grid, coarse to fine,
     every round's candidates trained together in one pass (tasks/common/probe.py);
  4. a final head with the chosen λ is trained on train + val and scored on test.
Metrics: top-1, top-5 (datasets with at least 5 classes) and mean per-class recall; the protocol
records the chosen λ and the whole sweep. The head is saved next to the result.

`mode=bob` is BoB's own probe (`linear_probe.py`, MAE's recipe; tasks/linear_probe/bob_probe.py):
augmented images through the frozen backbone every epoch (so no feature is cached), BatchNorm1d
without affine + Linear, LARS at blr 0.1 × effective batch / 256, 90 epochs with 10 of warm-up,
scored after the last epoch. `protocol=bob` (docs/protocols.md) extracts with BoB's eval transform
(ImageNet mean/std for every model, bicubic resize to 1.143 × size, center crop) and scores the split
BoB reported (val where the dataset has one, else test), in either mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.task import Task, run_arg
from bob.tasks.common.args import ProbeArgs, ProtocolArgs

MODES = ("cached", "bob")
# The args of one mode only: the cached probe's (out of a mode=bob run's identity) and BoB's probe's.
CACHED_ONLY = ("val_fraction", "epochs", "min_steps", "lr", "batch_size", "weight_decay", "max_epochs")
BOB_ONLY = ("bob_epochs", "bob_warmup_epochs", "bob_blr", "bob_batch_size", "bob_accum_steps")


@dataclass
class LinearProbeArgs(ProbeArgs, ProtocolArgs):
    """The probe's knobs (tasks/common/args.py), the protocol, and BoB's own probe (`mode=bob`)."""

    mode: str = run_arg(
        "cached",
        "cached (bob's λ-searched head on cached features) or bob (BoB's LARS probe through the "
        "frozen backbone; features cannot be cached)",
        omit_default=True,
    )
    bob_epochs: int = run_arg(90, "mode=bob: training epochs (BoB: 90)", omit_default=True)
    bob_warmup_epochs: int = run_arg(10, "mode=bob: linear warm-up epochs (BoB: 10)", omit_default=True)
    bob_blr: float = run_arg(
        0.1, "mode=bob: base lr; LARS runs at bob_blr × effective batch / 256 (BoB: 0.1)", omit_default=True
    )
    bob_batch_size: int = run_arg(512, "mode=bob: images per step (BoB: 512 per GPU)", omit_default=True)
    bob_accum_steps: int = run_arg(
        4,
        "mode=bob: steps accumulated per optimizer step (BoB: 4 GPUs, effective batch 2048)",
        omit_default=True,
    )

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        if self.mode == "bob":  # the cached probe's knobs do not change a mode=bob run
            for name in CACHED_ONLY:
                ident.pop(name, None)
        return ident

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            hint = f"Valid values: {', '.join(MODES)}."
            raise UnknownNameError("linear-probe mode", self.mode, suggest(self.mode, MODES, 2), hint)
        if self.mode != "bob":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            stray = [n for n in BOB_ONLY if getattr(self, n) != defaults[n]]
            if stray:
                raise UsageError(f"{', '.join(stray)} only apply with mode=bob (BoB's probe).")
        for name in ("bob_epochs", "bob_batch_size", "bob_accum_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if not 0 <= self.bob_warmup_epochs < self.bob_epochs:
            raise UsageError(
                f"bob_warmup_epochs must be in [0, bob_epochs), got {self.bob_warmup_epochs} "
                f"with bob_epochs={self.bob_epochs}."
            )
        if self.bob_blr <= 0:
            raise UsageError(f"bob_blr must be positive, got {self.bob_blr}.")


class LinearProbe(Task):
    suite = "linear-probe"
    version = "1"
    main_metric = "top1"
    reads_feature_cache = ("mode", "cached")
    description = (
        "frozen pooled features; L2-regularised softmax head, weight decay chosen on a validation split"
    )
    Args = LinearProbeArgs
    check_args: ClassVar[dict[str, str]] = {"epochs": "2", "min_steps": "20"}
