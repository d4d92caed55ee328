"""`vis/<dataset>`: video instance segmentation with a clip-level query head; YouTube-VIS AP / AR.

Protocol (a simplified TCOVIS-style online VIS; deviations in docs/suites/vis.md):
  1. both splits are loaded and validated (broken annotations stop the run before any training);
  2. every frame is resized to `image_size`² and fed once to the frozen backbone; its maps are kept;
  3. a trainable pyramid neck (the FPN / simple pyramid of tasks/common/pyramid.py) and a query head
     (model.py) are trained with AdamW and cosine decay for `epochs` over the train clips (train.py),
     matching queries to whole ground-truth tracks with the Hungarian algorithm (cost and loss summed
     over frames);
  4. on the test clips every query becomes one scored track (its best class, its per-frame masks
     thresholded at `mask_threshold` at the video's resolution), scored by YouTube-VIS AP / AR
     (whole-track mask IoU, COCOeval accumulation; metrics.py).
The protocol is run.py; the clips and tracks data.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.errors import UsageError
from bob.task import Task, TaskArgs, run_arg

REAL_IMAGE_SIZE = 384  # frames of real sets are resized to this square when neither arg nor dataset sets one


@dataclass
class VisArgs(TaskArgs):
    epochs: int = run_arg(40, "training epochs over the train clips")
    batch_size: int = run_arg(4, "clips per training step")
    lr: float = run_arg(1e-3, "AdamW learning rate (cosine decay to 0)")
    weight_decay: float = run_arg(0.05, "AdamW weight decay")
    num_queries: int = run_arg(10, "learnable queries per clip (one query = one track)")
    dim: int = run_arg(64, "channels of the pyramid neck and of the query head")
    decoder_layers: int = run_arg(2, "transformer decoder layers of the query head")
    class_weight: float = run_arg(2.0, "weight of the class term in the matching cost and the loss")
    dice_weight: float = run_arg(5.0, "weight of the per-frame dice term (summed over frames)")
    mask_weight: float = run_arg(5.0, "weight of the per-frame BCE term (summed over frames)")
    no_object_weight: float = run_arg(0.1, "cross-entropy weight of the 'no object' class")
    mask_threshold: float = run_arg(0.5, "mask probability above which a pixel belongs to a predicted track")

    def validate(self) -> None:
        super().validate()
        for name in ("epochs", "batch_size", "num_queries", "dim", "decoder_layers"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.dim % 4:
            raise UsageError(f"dim must be a multiple of 4 (4 attention heads), got {self.dim}.")
        if self.image_size is not None and self.image_size % 32:
            raise UsageError(f"image_size must be a multiple of 32 for the pyramid, got {self.image_size}.")
        if self.lr <= 0 or self.weight_decay < 0:
            raise UsageError("lr must be positive and weight_decay non-negative.")
        if (
            min(self.class_weight, self.dice_weight, self.mask_weight) < 0
            or not 0 < self.no_object_weight <= 1
        ):
            raise UsageError("class/dice/mask weights must be non-negative and no_object_weight in (0, 1].")
        if not 0 < self.mask_threshold < 1:
            raise UsageError(f"mask_threshold must be in (0, 1), got {self.mask_threshold}.")


class Vis(Task):
    suite = "vis"
    version = "1"
    main_metric = "ap"
    needs = ("features",)
    task_types = ("vis",)
    description = (
        "video instance segmentation: per-frame pyramid features, a clip query head trained with "
        "Hungarian matching over whole tracks; YouTube-VIS AP/AR (track mask IoU, COCOeval)"
    )
    Args = VisArgs
    check_dataset: ClassVar[str] = "vis-sprites-mini"
    check_args: ClassVar[dict[str, str]] = {"epochs": "1", "dim": "16", "decoder_layers": "1"}
