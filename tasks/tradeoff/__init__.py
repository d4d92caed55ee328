"""`tradeoff/<dataset>`: accuracy-vs-MACs curves, their Pareto front and its hypervolume.

`mode=stitch` (SN-Net, Pan et al. CVPR 2023): the run's backbone and the `anchors` (ViTs of one
family, e.g. DeiT-Ti/S/B) are sorted by MACs; every nearest pair (Ti↔S, S↔B) is stitched at SN-Net's
paired sliding-window positions (stitching.py), each stitching layer initialised by least squares
on `ls_init_samples` train images and, with `stitch_steps`, then trained briefly on them (the layer
alone, anchors frozen; train.py). Every anchor and every stitch is one point (points.py).

`mode=curve`: each backbone (the run's and the `anchors`, any family) is one point, as ViT-ResNAS
and ResNet-RS draw their scaling curves.

A point's accuracy is a linear probe on its frozen pooled features (the linear-probe suite's head;
λ chosen once, by the probe's validation sweep on the first point — the cheapest anchor, or the
run's backbone in curve mode — and reused for every point, so the points differ only in features);
its cost is MACs of one image (torch's FlopCounterMode, tasks/common/cost.py, as the efficiency suite
counts) and its parameters. Reported: every point, which of them are on the Pareto front (fewer MACs,
higher top-1), and the front's hypervolume in the box from (0 MACs, top-1 0) to (1.05 × the largest
MACs, top-1 1), normalised to [0, 1] (the main metric).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.errors import UsageError
from bob.task import Task, TaskArgs, run_arg

MODES = ("stitch", "curve")


@dataclass
class TradeoffArgs(TaskArgs):
    anchors: tuple[str, ...] = run_arg(
        (),
        "the other backbones, comma-separated (the run's backbone is one more), e.g. timm/deit_small_patch16_224",
    )
    mode: str = run_arg(
        "stitch", "stitch (SN-Net: anchors and all their stitches) or curve (each backbone as is)"
    )
    stitch_kernel: int = run_arg(2, "SN-Net's sliding window: block indices per window")
    stitch_stride: int = run_arg(1, "SN-Net's sliding window: step between windows")
    ls_init_samples: int = run_arg(
        100, "train images whose tokens initialise each stitching layer by least squares"
    )
    stitch_steps: int = run_arg(
        0, "after least squares, train each stitching layer this many Adam steps (0 = least squares only)"
    )
    stitch_lr: float = run_arg(1e-3, "learning rate of that brief stitching-layer training")
    val_fraction: float = run_arg(0.2, "share of train held out (stratified, seeded) to choose the probe's λ")
    anchor_weights: str = run_arg("same", "weights of the anchors: same (as the run), pretrained or random")

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'.")
        if not self.anchors:
            raise UsageError("tradeoff needs at least one more backbone: -a anchors=<name>[,<name>…].")
        if self.ls_init_samples < 1:
            raise UsageError(f"ls_init_samples must be positive, got {self.ls_init_samples}.")
        if self.stitch_steps < 0 or self.stitch_lr <= 0:
            raise UsageError(
                f"stitch_steps must be >= 0 and stitch_lr positive, got {self.stitch_steps} and {self.stitch_lr}."
            )
        if self.anchor_weights not in ("same", "pretrained", "random"):
            raise UsageError(
                f"anchor_weights must be same, pretrained or random, got '{self.anchor_weights}'."
            )
        if not 0 < self.val_fraction < 1:
            raise UsageError(f"val_fraction must be in (0, 1), got {self.val_fraction}.")


class Tradeoff(Task):
    suite = "tradeoff"
    version = "1"
    main_metric = "hypervolume"
    needs = ("pooled",)
    task_types = ("classification",)
    description = (
        "accuracy-vs-MACs curve: SN-Net stitches of ViT anchors (least-squares init), or a list of "
        "backbones; Pareto front and its normalised hypervolume"
    )
    Args = TradeoffArgs
    metrics_are_fractions: ClassVar[bool] = False  # counts sit beside fractions: print as they are
    check_args: ClassVar[dict[str, str]] = {
        "mode": "curve",
        "anchors": "timm/test_resnet",
        "anchor_weights": "random",
    }
    args: TradeoffArgs
