"""`segmentation/<dataset>`: a decode head on the backbone, trained per pixel, scored by dataset mIoU.

Protocol (PVT's Semantic FPN on ADE20K, on mmseg; deviations in docs/suites/segmentation.md):
  1. both splits are loaded and every label map is checked (size, channels, values) before any model
     is built;
  2. the backbone is built at `image_size` and given a head (model.py): `fpn` (Semantic FPN on the
     shared feature pyramid of tasks/common/pyramid.py), `fcn` or `linear` (on the last level);
     `mode=finetune` trains the backbone too, `mode=frozen` keeps it fixed in eval mode;
  3. AdamW lr 1e-4, weight decay 1e-4, poly decay (power 0.9) over `iters` iterations of
     `batch_size` random `image_size`² crops (80,000 × 16 on real data: PVT's 4-GPU schedule);
  4. single-scale inference on the test split (whole image, or sliding windows for fixed-size
     backbones); mIoU, aAcc, mAcc and per-class IoU from one confusion matrix over the whole split.
The protocol is run.py; training and inference train.py, the label maps data.py (real layouts real.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bob.errors import UsageError
from bob.task import Task, TaskArgs, run_arg

HEADS = ("fpn", "fcn", "linear")
MODES = ("finetune", "frozen")
AUGMENTS = ("jitter", "flip")
REAL_IMAGE_SIZE = 512  # PVT's ADE20K crop, used when neither the task arg nor the dataset sets one
# Defaults of the knobs left unset, by dataset kind. Real data: PVT's Semantic FPN schedule (80k
# iterations at batch 16 = 4 GPUs × 4, lr 1e-4) and mmseg's widths (FPN 256, FPNHead 128, FCNHead 512).
# Generated scenes: a schedule and widths that train in CPU minutes.
DEFAULTS: dict[str, dict[str, Any]] = {
    "real": {
        "iters": 80_000,
        "batch_size": 16,
        "fpn_channels": 256,
        "head_channels": {"fpn": 128, "fcn": 512},
    },
    "generated": {
        "iters": 200,
        "batch_size": 8,
        "fpn_channels": 64,
        "head_channels": {"fpn": 32, "fcn": 128},
    },
}


@dataclass
class SegmentationArgs(TaskArgs):
    head: str = run_arg("fpn", "fpn (Semantic FPN on the pyramid), fcn or linear (on the last level)")
    mode: str = run_arg("finetune", "finetune (train the backbone) or frozen (backbone fixed, eval mode)")
    lr: float = run_arg(1e-4, "AdamW learning rate (PVT: 1e-4 at batch 16)")
    weight_decay: float = run_arg(1e-4, "AdamW weight decay (PVT: 1e-4)")
    poly_power: float = run_arg(0.9, "power of the poly learning-rate decay to 0")
    iters: int | None = run_arg(None, "training iterations (default 80,000 on real data, 200 on generated)")
    batch_size: int | None = run_arg(
        None, "crops per training step (default 16 = PVT's 4 GPUs × 4 on real data, 8 on generated)"
    )
    augment: str = run_arg(
        "jitter", "jitter (rescale 0.5-2.0, crop, flip, photometric) or flip (crop and flip only)"
    )
    cat_max_ratio: float = run_arg(
        0.75, "augment=jitter: redraw a crop (up to 10 times) while one class covers this share; 1 = off"
    )
    test_size: int | None = run_arg(
        None, "shorter side of test images at inference (default: image_size, mmseg's (4s, s) rule)"
    )
    fpn_channels: int | None = run_arg(
        None, "channels of every pyramid level, head=fpn (default 256 on real data, 64 on generated)"
    )
    head_channels: int | None = run_arg(
        None, "conv width of the decode head (default fpn 128 / fcn 512 on real data, 32 / 128 on generated)"
    )
    norm_eval: bool = run_arg(False, "keep the backbone's BatchNorm statistics fixed when fine-tuning")
    amp: bool = run_arg(
        True, "float16 mixed precision with loss scaling on CUDA, in training and prediction (CPU: off)"
    )
    save_model: bool = run_arg(False, "save the trained segmenter's state_dict next to the result")

    def resolved(self, kind: str) -> dict[str, Any]:
        """iters, batch_size, fpn_channels and head_channels: the args, else the defaults for `kind`."""
        table = DEFAULTS["real" if kind == "real" else "generated"]
        return {
            "iters": self.iters or table["iters"],
            "batch_size": self.batch_size or table["batch_size"],
            "fpn_channels": self.fpn_channels or table["fpn_channels"],
            "head_channels": self.head_channels or table["head_channels"].get(self.head, 0),
        }

    def validate(self) -> None:
        super().validate()
        for name, options in (("head", HEADS), ("mode", MODES), ("augment", AUGMENTS)):
            if getattr(self, name) not in options:
                raise UsageError(f"{name} must be one of {', '.join(options)}, got '{getattr(self, name)}'.")
        for name in ("image_size", "test_size"):
            value = getattr(self, name)
            if value is not None and (value < 32 or value % 32):
                raise UsageError(f"{name} must be a positive multiple of 32, got {value}.")
        for name in ("iters", "batch_size", "fpn_channels", "head_channels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value}.")
        if not 0 < self.cat_max_ratio <= 1:
            raise UsageError(f"cat_max_ratio must be in (0, 1], got {self.cat_max_ratio}.")
        if not self.lr > 0 or self.weight_decay < 0 or not self.poly_power > 0:
            raise UsageError(
                f"lr and poly_power must be > 0 and weight_decay >= 0, got lr={self.lr}, "
                f"poly_power={self.poly_power}, weight_decay={self.weight_decay}."
            )


class Segmentation(Task):
    suite = "segmentation"
    version = "1"
    main_metric = "miou"
    # `bob run --gpus-per-run N`: both modes train the decode head (finetune the backbone too) on the
    # one loop under DDP, and evaluation sums the ranks' confusion matrices (train.py).
    data_parallel = True
    needs = ("features", "trainable")
    task_types = ("segmentation",)
    description = (
        "Semantic FPN (or FCN / linear head) on the backbone, PVT's AdamW + poly recipe; "
        "dataset-accumulated mIoU, aAcc, mAcc"
    )
    Args = SegmentationArgs
    check_dataset: ClassVar[str] = "scenes-seg-mini"
    check_args: ClassVar[dict[str, str]] = {
        "iters": "2",
        "batch_size": "2",
        "augment": "flip",
        "fpn_channels": "32",
        "head_channels": "16",
    }
