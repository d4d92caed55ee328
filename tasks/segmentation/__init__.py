"""`segmentation/<dataset>`: a decode head on the backbone, trained per pixel, scored by dataset mIoU.

Protocol (PVT's Semantic FPN on ADE20K, on mmseg; deviations in docs/suites/segmentation.md):
  1. both splits are loaded and every label map is checked (size, channels, values) before any model
     is built;
  2. the backbone is built at `image_size` and given a head: `fpn` (Semantic FPN on the detection
     suite's pyramid), `fcn` or `linear` (on the last level); `mode=finetune` trains the backbone
     too, `mode=frozen` keeps it fixed in eval mode;
  3. AdamW lr 1e-4, weight decay 1e-4, poly decay (power 0.9) over `iters` iterations of
     `batch_size` random `image_size`² crops (80,000 × 16 on real data: PVT's 4-GPU schedule);
  4. single-scale inference on the test split (whole image, or sliding windows for fixed-size
     backbones); mIoU, aAcc, mAcc and per-class IoU from one confusion matrix over the whole split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bob.errors import UsageError
from bob.task import Task, TaskArgs, TaskOutput, run_arg

if TYPE_CHECKING:
    from bob.context import RunContext
    from bob.tasks.segmentation.data import SegmentationSplit

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
    amp: bool = run_arg(True, "float16 autocast with loss scaling on CUDA (ignored on CPU)")
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

    def run(self, ctx: RunContext) -> TaskOutput:
        from bob.tasks.segmentation.data import validate_masks
        from bob.tasks.segmentation.train import evaluate, train_segmenter

        args: SegmentationArgs = self.args  # type: ignore[assignment]
        train, test = self._splits(ctx)
        pixels = {"train": validate_masks(train), "test": validate_masks(test)}
        size = args.image_size or ctx.info.image_size or REAL_IMAGE_SIZE
        knobs = args.resolved(ctx.info.kind)
        model = build_segmenter(ctx, args, knobs, size, len(train.classes))
        cfg, eval_cfg = run_configs(args, knobs, size, model.pad_to)
        start = time.perf_counter()
        history = train_segmenter(model, train, cfg, ctx.device, ctx.seed, ctx.num_workers)
        train_s = time.perf_counter() - start
        scores = evaluate(model, test, eval_cfg, ctx.device, ctx.num_workers)
        metrics, per_class = scores.result(test.classes)
        protocol = {
            **run_protocol(args, knobs, model, cfg, eval_cfg, str(ctx.device)),
            "ignore_index": test.ignore_index,
            "reduce_zero_label": test.reduce_zero_label,
            "classes": list(test.classes),
            "class_pixels": pixels,
            "per_class": per_class,
            "train_s": round(train_s, 2),
            "eval_s": round(time.perf_counter() - start - train_s, 2),
            **history,
            "data": {"train": train.describe(), "test": test.describe()},
        }
        artifacts = {}
        if args.save_model:
            state = {"state_dict": model.state_dict(), "classes": list(train.classes), "protocol": protocol}
            artifacts["segmenter"] = ctx.save_artifact("segmenter", state)
        return TaskOutput(metrics, protocol, artifacts)

    def _splits(self, ctx: RunContext) -> tuple[SegmentationSplit, SegmentationSplit]:
        from bob.tasks.segmentation.data import SegmentationSplit

        train, test = ctx.split("train"), ctx.split("test")
        for split in (train, test):
            if not isinstance(split, SegmentationSplit):
                raise UsageError(
                    f"{self.name}: split '{split.split}' has no label maps; pick a segmentation dataset."
                )
        if train.classes != test.classes:
            raise UsageError(f"{self.name}: train and test declare different classes; they must match.")
        return train, test  # type: ignore[return-value]


def _augment_protocol(args: SegmentationArgs) -> dict[str, Any]:
    from bob.tasks.segmentation.train import PHOTOMETRIC, RATIO_RANGE

    if args.augment == "flip":
        return {"name": "flip", "steps": ["shorter side to crop_size", "random crop", "flip 0.5"]}
    return {
        "name": "jitter",
        "ratio_range": list(RATIO_RANGE),
        "cat_max_ratio": args.cat_max_ratio,
        "steps": [
            "shorter side to ratio × crop_size",
            "random crop, redrawn up to 10× while one class covers >= cat_max_ratio (pad 0 / 255)",
            "flip 0.5",
            "mmseg PhotoMetricDistortion",
        ],
        "photometric": PHOTOMETRIC,
    }


def build_segmenter(ctx: RunContext, args: SegmentationArgs, knobs: dict[str, Any], size: int, k: int) -> Any:
    """A fresh backbone at `size` with the head the args ask for (seeded); padded to `size`² when the
    backbone only runs at its build size."""
    import torch

    from bob.tasks.common.pyramid import accepts_any_size
    from bob.tasks.segmentation.heads import Segmenter

    backbone = ctx.build_backbone(input_size=size)
    torch.manual_seed(ctx.seed)
    return Segmenter(
        backbone,
        k,
        head=args.head,
        fpn_channels=knobs["fpn_channels"],
        head_channels=knobs["head_channels"],
        frozen=args.mode == "frozen",
        norm_eval=args.norm_eval,
        pad_to=None if accepts_any_size(backbone, size) else size,
    )


def run_configs(
    args: SegmentationArgs, knobs: dict[str, Any], size: int, pad_to: int | None
) -> tuple[Any, Any]:
    """The training loop's and the inference's configs."""
    from bob.tasks.segmentation.train import EvalConfig, TrainConfig

    train = TrainConfig(
        iterations=knobs["iters"],
        batch_size=knobs["batch_size"],
        lr=args.lr,
        weight_decay=args.weight_decay,
        power=args.poly_power,
        crop_size=size,
        augment=args.augment,
        cat_max_ratio=args.cat_max_ratio,
        amp=args.amp,
    )
    test = EvalConfig(
        test_size=args.test_size or size,
        crop_size=size,
        mode="whole" if pad_to is None else "slide",
        batch_size=min(knobs["batch_size"], 8),
        amp=args.amp,
    )
    return train, test


def run_protocol(
    args: SegmentationArgs, knobs: dict[str, Any], model: Any, cfg: Any, eval_cfg: Any, device: str
) -> dict[str, Any]:
    """Every recipe value the run used."""
    config = model.body.backbone.data_config
    return {
        **model.describe(),
        "mode": args.mode,
        "norm_eval": args.norm_eval,
        "fpn_channels": knobs["fpn_channels"] if args.head == "fpn" else None,
        "head_channels": knobs["head_channels"] if args.head != "linear" else None,
        "optimizer": "AdamW, betas (0.9, 0.999)",
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "schedule": f"poly, power {args.poly_power}, to 0, per iteration, no warm-up",
        "iterations": cfg.iterations,
        "batch_size": cfg.batch_size,
        "crop_size": cfg.crop_size,
        "augment": _augment_protocol(args),
        "loss": "cross-entropy, ignore 255, averaged over all pixels (mmseg avg_non_ignore=False)",
        "amp": args.amp and device.startswith("cuda"),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "inference": {
            "mode": eval_cfg.mode,
            "test_size": eval_cfg.test_size,
            "resize": f"mmseg keep-ratio into ({4 * eval_cfg.test_size}, {eval_cfg.test_size})",
            "slide": {"crop": cfg.crop_size, "stride": eval_cfg.stride} if eval_cfg.mode == "slide" else None,
            "logits": "bilinear to the label map's size, then argmax",
        },
        "transform": {"mean": list(config.mean), "std": list(config.std), "pad": "zeros after normalising"},
        "metric": "mmseg IoU: one confusion matrix over the test split; classes with empty union skipped",
    }
