"""`rvos/<dataset>`: referring video object segmentation (ReferFormer, Wu et al., CVPR 2022), J&F.

Protocol (deviations in docs/suites/rvos.md):
  1. both splits are loaded and checked (every frame has a mask of its size, every expression's object
     appears) before any model is built;
  2. every distinct expression is embedded once by a fixed text encoder: the backbone's own CLIP
     text tower when it has one, else bob's bag-of-words encoder (or an open_clip tower by name);
  3. the backbone (frozen by default, or fine-tuned at `backbone_lr_mult` × lr) feeds a pyramid
     neck (tasks/common/pyramid.py) and a small ReferFormer-style head (model.py), trained with AdamW
     on windows of `num_frames` frames (train.py);
  4. every test expression is segmented in every frame; DAVIS J and F per frame, averaged per
     expression, then over expressions: J&F = (J-mean + F-mean) / 2 (metrics.py).
The protocol is run.py; the videos, masks and expressions data.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bob.errors import UsageError
from bob.task import Task, TaskArgs, run_arg
from bob.tasks.common.args import check_text_encoder

MODES = ("frozen", "finetune")
REAL_IMAGE_SIZE = 384  # square frames on real data (ReferFormer: short side 360, long side <= 640)
# Defaults of knobs left unset, by dataset kind: ReferFormer's widths and a real-data schedule, and
# a head and schedule that train in CPU minutes on the generated videos.
DEFAULTS: dict[str, dict[str, Any]] = {
    "real": {"iters": 30_000, "lr": 1e-4, "dim": 256, "layers": 4},
    "generated": {"iters": 300, "lr": 1e-3, "dim": 64, "layers": 1},
}


@dataclass
class RvosArgs(TaskArgs):
    text_encoder: str = run_arg(
        "auto",
        "auto (backbone text tower if any, else bow), backbone, bow, or open_clip:<model>[/<pretrained>]",
    )
    prompt: str = run_arg("{}", "template for CLIP-style text towers ({} = the expression)")
    mode: str = run_arg("frozen", "frozen (backbone fixed, eval mode) or finetune")
    iters: int | None = run_arg(None, "training iterations (default 30,000 on real data, 300 on generated)")
    batch_size: int = run_arg(8, "expressions per step (ReferFormer: 8 GPUs × 1 clip)")
    num_frames: int = run_arg(5, "frames per training clip and per inference window (ReferFormer: 5)")
    lr: float | None = run_arg(None, "AdamW learning rate of the head (ReferFormer 1e-4; 1e-3 on generated)")
    backbone_lr_mult: float = run_arg(
        0.5, "mode=finetune: backbone lr = lr × this (ReferFormer: 5e-5 / 1e-4)"
    )
    weight_decay: float = run_arg(5e-4, "AdamW weight decay (ReferFormer: 5e-4)")
    dim: int | None = run_arg(None, "width of the pyramid and the head (default 256 real, 64 generated)")
    layers: int | None = run_arg(None, "decoder layers (default 4 real = ReferFormer, 1 generated)")
    num_queries: int = run_arg(5, "queries per frame (ReferFormer: 5)")
    heads: int = run_arg(4, "attention heads of the decoder (must divide dim)")
    mask_threshold: float = run_arg(0.5, "probability above which a pixel is in the predicted mask")
    bound_th: float = run_arg(
        0.008, "F boundary tolerance: fraction of the image diagonal (DAVIS 0.008), or pixels if >= 1"
    )
    norm_eval: bool = run_arg(True, "mode=finetune: keep the backbone's BatchNorm statistics fixed")

    def resolved(self, kind: str) -> dict[str, Any]:
        table = DEFAULTS["real" if kind == "real" else "generated"]
        return {k: getattr(self, k) or v for k, v in table.items()}

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'.")
        check_text_encoder(self.text_encoder)
        if "{}" not in self.prompt:
            raise UsageError(f"prompt must contain {{}} where the expression goes, got '{self.prompt}'.")
        for name in ("iters", "dim", "layers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value}.")
        for name in ("batch_size", "num_frames", "num_queries", "heads"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.dim is not None and self.dim % self.heads:
            raise UsageError(f"heads ({self.heads}) must divide dim ({self.dim}).")
        if self.dim is not None and self.dim % 8:
            raise UsageError(f"dim must be a multiple of 8 (GroupNorm of 8 groups), got {self.dim}.")
        if not 0 < self.mask_threshold < 1:
            raise UsageError(f"mask_threshold must be in (0, 1), got {self.mask_threshold}.")
        if not self.bound_th > 0:
            raise UsageError(f"bound_th must be positive, got {self.bound_th}.")
        if (self.lr is not None and not self.lr > 0) or self.weight_decay < 0 or self.backbone_lr_mult < 0:
            raise UsageError("lr must be > 0, weight_decay and backbone_lr_mult >= 0.")
        if self.image_size is not None and (self.image_size < 32 or self.image_size % 32):
            raise UsageError(f"image_size must be a positive multiple of 32, got {self.image_size}.")


class Rvos(Task):
    suite = "rvos"
    version = "1"
    main_metric = "j_and_f"
    needs = ("features", "trainable")
    task_types = ("rvos",)
    description = (
        "referring video object segmentation, ReferFormer-style: expression embedding as queries over "
        "per-frame pyramid features, dynamic mask kernels, queries linked across frames; DAVIS J&F"
    )
    Args = RvosArgs
    check_dataset: ClassVar[str] = "rvos-sprites-mini"
    check_args: ClassVar[dict[str, str]] = {"iters": "2", "batch_size": "2", "dim": "16"}
