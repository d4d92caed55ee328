"""The detection suite's in-protocol lr search (`search=lr`), run before the final fit.

Ray Tune tries every lr of `DetectorArgs.search_space` (BoB's grid, one FIFO trial each): a trial
trains a fresh detector on a seeded part of train with tasks/common/detector_train.py's recipe and
reports box AP on the held-out rest (`holdout`). The final fit then trains on all of train with the
winner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bob.backbones.base import BackboneRef
from bob.context import RunContext
from bob.data.coco import DetectionSplit
from bob.errors import UsageError
from bob.tasks.common.coco_eval import coco_metrics
from bob.tasks.common.detector_data import train_indices
from bob.tasks.common.detector_train import predict, train_config, train_detector
from bob.tasks.common.tune import search_in_protocol
from bob.tasks.detection import DetectionArgs
from bob.tasks.detection.model import detector, frozen_stages


def holdout(train: DetectionSplit, fraction: float, seed: int) -> tuple[DetectionSplit, DetectionSplit]:
    """(train part, val part): a seeded `fraction` of the trainable images becomes the val part."""
    usable = np.asarray(train_indices(train))
    n_val = round(fraction * len(usable))
    if n_val < 1 or n_val >= len(usable):
        raise UsageError(
            f"search=lr holds out search_val_fraction={fraction} of {len(usable)} trainable images: "
            f"{n_val} for validation leaves no train or no val part; change search_val_fraction."
        )
    order = np.random.default_rng(seed).permutation(usable)
    return train.take(np.sort(order[n_val:]), "train"), train.take(np.sort(order[:n_val]), "val")


def search_lr(
    ctx: RunContext, args: DetectionArgs, train: DetectionSplit, size: int, masks: bool
) -> dict[str, Any]:
    """Ray Tune over `args.search_space` (BoB's lr grid, one FIFO trial per lr): each trial trains a
    fresh detector on the train part and reports box AP on the held-out val part; returns
    `SearchResult.to_protocol()` with the val split's size and seed added."""
    part, val = holdout(train, args.search_val_fraction, ctx.seed)
    on_cuda = torch.device(ctx.device).type == "cuda"
    found = search_in_protocol(
        lr_trial,
        args.search_space,
        metric="val_box_ap",
        mode="max",
        scheduler="fifo",
        cpus_per_trial=1,
        gpus_per_trial=1 if on_cuda else 0,
        seed=ctx.seed,
        data={
            "ref": ctx.ref,
            "args": args,
            "train": part,
            "val": val,
            "n_train": len(train_indices(part)),
            "size": size,
            "masks": masks,
            "device": "cuda" if on_cuda else "cpu",
            "seed": ctx.seed,
            "dataset": ctx.dataset,
        },
    ).to_protocol()
    found["val_split"] = f"seeded {args.search_val_fraction:.0%} of train (seed {ctx.seed})"
    found["num_search_train"], found["num_search_val"] = len(part), len(val)
    return found


def lr_trial(
    config: dict[str, Any],
    report: Callable[[dict[str, float]], None],
    ref: BackboneRef,
    args: DetectionArgs,
    train: DetectionSplit,
    val: DetectionSplit,
    n_train: int,
    size: int,
    masks: bool,
    device: str,
    seed: int,
    dataset: str,
) -> None:
    """One search trial in a Ray worker: train with `config`'s lr, report box AP on the val part."""
    torch.set_num_threads(1)
    args = dataclasses.replace(args, **config)
    backbone = ref.build(size if size != ref.data_config.input_size else None)
    torch.manual_seed(seed)
    stages, _ = frozen_stages(args, dataset, backbone)
    model, _ = detector(backbone, args, len(train.classes), masks, size, stages)
    train_detector(model, train, train_config(args, n_train, size), device, seed, num_workers=0)
    records = predict(model, val, args.batch_size, device, num_workers=0, amp=args.amp)
    metrics, _ = coco_metrics(val.coco, records, ("bbox",))
    report({"val_box_ap": metrics["box_ap"]})
