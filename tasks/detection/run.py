"""The detection protocol (see the package docstring): validate the splits, optionally search the lr,
train the detector on train, score its test predictions with COCOeval."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from bob.backbones.protocols import with_protocol
from bob.context import RunContext
from bob.data.coco import DetectionSplit
from bob.errors import UsageError
from bob.samples import SampleSet
from bob.task import TaskOutput
from bob.tasks.common.coco_eval import coco_metrics
from bob.tasks.common.detector_data import train_indices
from bob.tasks.common.detector_train import (
    REAL_IMAGE_SIZE,
    describe_training,
    predict,
    train_config,
    train_detector,
)
from bob.tasks.common.samples import save_samples
from bob.tasks.detection import BOB_SD_IMAGE_SIZE, BOB_SD_PROMPT, Detection, DetectionArgs
from bob.tasks.detection.model import describe_head, detector, frozen_stages
from bob.tasks.detection.train import search_lr


def run(task: Detection, ctx: RunContext) -> TaskOutput:
    args: DetectionArgs = task.args  # type: ignore[assignment]
    preset = apply_protocol(ctx, args)
    train, test = detection_splits(task, ctx)
    n_train = len(train_indices(train))
    size = args.image_size or ctx.info.image_size or preset.get("image_size") or REAL_IMAGE_SIZE
    masks = train.has_masks and test.has_masks and args.head == "rcnn"  # the query head has no mask branch
    search = None
    if args.search == "lr":  # before the final fit: a missing Ray fails here, not after training
        search = search_lr(ctx, args, train, size, masks)
        args = dataclasses.replace(args, **search["best_config"])
    cfg = train_config(args, n_train, size)
    backbone = ctx.build_backbone(input_size=size)
    stages, stages_why = frozen_stages(args, task.dataset, backbone)
    torch.manual_seed(ctx.seed)
    model, pad_to = detector(backbone, args, len(train.classes), masks, size, stages)
    start = time.perf_counter()
    history = train_detector(model, train, cfg, ctx.device, ctx.seed, ctx.num_workers)
    train_s = time.perf_counter() - start
    records = predict(model, test, args.batch_size, ctx.device, ctx.num_workers, args.amp)
    samples: dict[str, SampleSet] = {}
    metrics, summaries = coco_metrics(test.coco, records, ("bbox", "segm") if masks else ("bbox",), samples)
    protocol: dict[str, Any] = {
        "head": args.head,
        **describe_head(model, args, masks),
        **describe_training(args, cfg, model, backbone, pad_to, n_train, len(test)),
    }
    protocol.update(
        history, train_s=round(train_s, 2), num_detections=len(records), cocoeval_summary=summaries
    )
    protocol["data"] = {"train": train.describe(), "test": test.describe()}
    if stages or args.frozen_stages is not None or args.protocol != "default":
        protocol["frozen_stages"], protocol["frozen_stages_source"] = stages, stages_why
    if args.protocol != "default":
        protocol["protocol_preset"] = {"name": args.protocol, **preset}
    if search is not None:
        protocol["search"] = search
    artifacts = {}
    if args.save_model:
        state = {"state_dict": model.state_dict(), "classes": list(train.classes), "protocol": protocol}
        artifacts["detector"] = ctx.save_artifact("detector", state)
    return save_samples(ctx, TaskOutput(metrics, protocol, artifacts), samples["bbox"])


def apply_protocol(ctx: RunContext, args: DetectionArgs) -> dict[str, Any]:
    """The backbone as the protocol runs it (`bob.backbones.protocols`), and BoB's Stable Diffusion
    detection knobs under protocol=bob: the prompt "object detection" (unless the run sets one) and a
    512 px input on real data (unless `image_size` is set). Returns what it applied."""
    ctx.ref = with_protocol(ctx.ref, args.protocol)  # before the backbone is built
    if args.protocol != "bob" or ctx.ref.adapter != "diffusion":
        return {}
    applied: dict[str, Any] = {}
    if "prompt" not in ctx.spec.backbone_args:
        ctx.ref = dataclasses.replace(ctx.ref, args={**ctx.ref.args, "prompt": BOB_SD_PROMPT})
        applied["prompt"] = BOB_SD_PROMPT
    if args.image_size is None and ctx.info.image_size is None:
        applied["image_size"] = BOB_SD_IMAGE_SIZE
    return applied


def detection_splits(task: Detection, ctx: RunContext) -> tuple[DetectionSplit, DetectionSplit]:
    """The train and test splits, checked: both with boxes, the same categories, something to train on."""
    train, test = ctx.split("train"), ctx.split("test")
    for split in (train, test):
        if not isinstance(split, DetectionSplit):
            raise UsageError(f"{task.name}: split '{split.split}' has no boxes; pick a detection dataset.")
    if train.category_ids != test.category_ids:
        raise UsageError(f"{task.name}: train and test declare different categories; they must match.")
    if not train_indices(train):
        raise UsageError(f"{task.name}: no train image has a non-crowd instance; nothing to train on.")
    return train, test
