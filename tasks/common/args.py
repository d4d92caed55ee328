"""Task-arg groups that several suites share, torch-free like every suite's `__init__.py`.

A suite's `Args` subclasses the group whose protocol it runs (`ProbeArgs` for a linear head on frozen
features, ...), so the shared knobs have one definition, one default and one help text.
"""

from __future__ import annotations

from dataclasses import dataclass

from bob.errors import UsageError
from bob.task import TaskArgs, run_arg


@dataclass
class ProbeArgs(TaskArgs):
    """The linear probe's knobs: the λ sweep on a validation split and the head's training."""

    val_fraction: float = run_arg(
        0.2, "share of train held out for the λ sweep when the dataset has no val split"
    )
    epochs: int = run_arg(10, "minimum training epochs per head")
    min_steps: int = run_arg(250, "minimum optimizer steps per head (small datasets get more epochs)")
    lr: float = run_arg(1e-2, "Adam learning rate (cosine-decayed to zero)")
    batch_size: int = run_arg(256, "head-training minibatch size")
    weight_decay: float | None = run_arg(None, "fix λ instead of sweeping it")

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        for name in ("epochs", "min_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.lr <= 0 or (self.weight_decay is not None and self.weight_decay < 0):
            raise UsageError("lr must be positive and weight_decay non-negative.")


TEXT_ENCODERS = ("auto", "backbone", "bow", "open_clip:<model>[/<pretrained>]")


def check_text_encoder(encoder: str) -> None:
    """A text_encoder task arg (open-vocab, rvos): auto, backbone, bow or open_clip:<model>[/<pretrained>]."""
    if encoder not in ("auto", "backbone", "bow") and not (
        encoder.startswith("open_clip:") and len(encoder) > 10
    ):
        raise UsageError(f"text_encoder must be one of {', '.join(TEXT_ENCODERS)}, got '{encoder}'.")
