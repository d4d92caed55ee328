"""The segmentation protocol: check the label maps, build the segmenter, train, score by dataset mIoU."""

from __future__ import annotations

import time
from typing import Any

import torch

from bob.context import RunContext
from bob.errors import UsageError
from bob.task import TaskOutput
from bob.tasks.common.data_parallel import record
from bob.tasks.common.pyramid import accepts_any_size
from bob.tasks.common.samples import save_samples
from bob.tasks.segmentation import REAL_IMAGE_SIZE, Segmentation, SegmentationArgs
from bob.tasks.segmentation.data import SegmentationSplit, validate_masks
from bob.tasks.segmentation.model import Segmenter
from bob.tasks.segmentation.train import (
    PHOTOMETRIC,
    RATIO_RANGE,
    EvalConfig,
    TrainConfig,
    evaluate,
    train_segmenter,
)


def run(task: Segmentation, ctx: RunContext) -> TaskOutput:
    args: SegmentationArgs = task.args  # type: ignore[assignment]
    train, test = _splits(task, ctx)
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
    parallel = _data_parallel_record(cfg)
    if parallel is not None:  # data-parallel runs only: one process's protocol is unchanged
        protocol["data_parallel"] = parallel
    artifacts = {}
    if args.save_model:
        state = {"state_dict": model.state_dict(), "classes": list(train.classes), "protocol": protocol}
        artifacts["segmenter"] = ctx.save_artifact("segmenter", state)
    return save_samples(ctx, TaskOutput(metrics, protocol, artifacts), scores.samples())


def _data_parallel_record(cfg: TrainConfig) -> dict[str, Any] | None:
    """What a data-parallel run split over its ranks (None in one process)."""
    return record(
        cfg.batch_size,
        iterations=cfg.iterations,  # every rank steps the run's schedule, whatever the world size
        evaluation=(
            "each rank predicts its shard of the test images; confusion matrices summed over the ranks, "
            "per-image areas gathered in dataset order"
        ),
    )


def _splits(task: Segmentation, ctx: RunContext) -> tuple[SegmentationSplit, SegmentationSplit]:
    """The train and test splits, both with label maps over the same classes."""
    train, test = ctx.split("train"), ctx.split("test")
    for split in (train, test):
        if not isinstance(split, SegmentationSplit):
            raise UsageError(
                f"{task.name}: split '{split.split}' has no label maps; pick a segmentation dataset."
            )
    if train.classes != test.classes:
        raise UsageError(f"{task.name}: train and test declare different classes; they must match.")
    return train, test  # type: ignore[return-value]


def build_segmenter(
    ctx: RunContext, args: SegmentationArgs, knobs: dict[str, Any], size: int, k: int
) -> Segmenter:
    """A fresh backbone at `size` with the head the args ask for (seeded); padded to `size`² when the
    backbone only runs at its build size."""
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
) -> tuple[TrainConfig, EvalConfig]:
    """The training loop's and the inference's configs."""
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


def _augment_protocol(args: SegmentationArgs) -> dict[str, Any]:
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


def _inference_protocol(cfg: TrainConfig, eval_cfg: EvalConfig) -> dict[str, Any]:
    return {
        "mode": eval_cfg.mode,
        "test_size": eval_cfg.test_size,
        "resize": f"mmseg keep-ratio into ({4 * eval_cfg.test_size}, {eval_cfg.test_size})",
        "slide": {"crop": cfg.crop_size, "stride": eval_cfg.stride} if eval_cfg.mode == "slide" else None,
        "logits": "bilinear to the label map's size, then argmax",
    }


def run_protocol(
    args: SegmentationArgs,
    knobs: dict[str, Any],
    model: Segmenter,
    cfg: TrainConfig,
    eval_cfg: EvalConfig,
    device: str,
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
        "inference": _inference_protocol(cfg, eval_cfg),
        "transform": {"mean": list(config.mean), "std": list(config.std), "pad": "zeros after normalising"},
        "metric": "mmseg IoU: one confusion matrix over the test split; classes with empty union skipped",
    }
