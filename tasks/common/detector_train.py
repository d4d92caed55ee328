"""Training and inference of a torchvision-style detector (the R-CNN, or detection's query head) on a
detection split: the detection and open-vocab suites' recipe, on the one training loop.

Training follows BoB's detection recipe where it can: AdamW (betas 0.9/0.999, weight decay 0.05),
linear warmup from lr·0.001, then ×0.1 steps at 27/36 and 33/36 of the schedule (mmdetection's 3×),
via timm's `MultiStepLRScheduler` stepped per iteration (an `AfterStep` hook of `TrainLoop`, which
runs a fixed number of iterations over a cycled loader). Augmentation is torchvision's v2
transforms: `lsj` = large-scale jitter (ScaleJitter to image_size² at scale 0.1–2.0, RandomCrop with
padding, horizontal flip, SanitizeBoundingBoxes), `flip` = horizontal flip only. Prediction keeps
100 detections per image and turns them into COCO result records for COCOeval.

Data-parallel (bob/distributed.py), every optimizer step splits its batch over the ranks
(tasks/common/data_parallel.py: the run's batch, lr and id are unchanged; each rank draws its own
augmentation) and DDP averages the gradients; prediction gives each rank whole batches of the test
split and gathers the per-image records back in image order, so COCOeval scores exactly the records
one process would produce.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from timm.scheduler import MultiStepLRScheduler
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from bob import distributed
from bob.backbones.base import Backbone
from bob.data.coco import DetectionSplit
from bob.progress import progress_bar
from bob.tasks.common.args import DETECTION_LR_GRID, DetectorArgs
from bob.tasks.common.coco_eval import to_coco_results
from bob.tasks.common.data_parallel import record, train_batches
from bob.tasks.common.detector_data import DetectionDataset, collate, train_indices
from bob.tasks.common.rcnn import predicts_masks
from bob.tasks.common.train_loop import AfterStep, TrainLoop, autocast, data_parallel

LR_STEPS = (27 / 36, 33 / 36)  # mmdetection 3× schedule: decay after epochs 27 and 33 of 36
WARMUP_RATIO = 0.001
REAL_IMAGE_SIZE = 1024  # BoB's LSJ resolution, used when neither the task arg nor the dataset sets one

# Mixed precision on CUDA is float16 (mmdetection's), never bfloat16: torchvision decodes boxes in the
# deltas' dtype (BoxCoder), and bfloat16 would round coordinates to 2 px steps above 256 px.
DETECTION_AMP_DTYPE = torch.float16


@dataclass
class TrainConfig:
    iterations: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_iters: int
    augment: str
    image_size: int
    lsj_scale: tuple[float, float] = (0.1, 2.0)
    amp: bool = False


def train_config(args: DetectorArgs, n_train: int, size: int) -> TrainConfig:
    """The training loop's config: `iters`, else `epochs` over `n_train` images."""
    iterations = args.iters or args.epochs * max(1, n_train // args.batch_size)
    return TrainConfig(
        iterations=iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_iters=min(args.warmup_iters, iterations // 4),
        augment=args.augment,
        image_size=size,
        lsj_scale=tuple(args.lsj_scale),  # type: ignore[arg-type]
        amp=args.amp,
    )


def lr_steps(iterations: int) -> list[int]:
    """The iterations after which the learning rate drops ×0.1."""
    return [max(1, round(iterations * f)) for f in LR_STEPS]


def make_transform(cfg: TrainConfig) -> v2.Transform:
    """The training augmentation `cfg.augment` names."""
    flip = v2.RandomHorizontalFlip(0.5)
    if cfg.augment == "flip":
        return flip
    size = (cfg.image_size, cfg.image_size)
    return v2.Compose(
        [
            v2.ScaleJitter(size, scale_range=cfg.lsj_scale, antialias=True),
            v2.RandomCrop(size, pad_if_needed=True),
            flip,
            v2.SanitizeBoundingBoxes(min_size=1),
        ]
    )


def _train_loader(
    model: nn.Module, split: DetectionSplit, cfg: TrainConfig, seed: int, num_workers: int
) -> Iterable[Any]:
    """The shuffled, seeded batches of the trainable images (with masks when the model predicts
    them): one process's DataLoader, or this rank's share of every step data-parallel."""
    dataset = DetectionDataset(
        split,
        train_indices(split),
        masks=predicts_masks(model),
        transform=make_transform(cfg),
    )
    return train_batches(
        dataset,
        cfg.batch_size,
        seed=seed,
        drop_last=len(dataset) >= cfg.batch_size,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def _optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, MultiStepLRScheduler]:
    """AdamW on the trainable parameters, with warmup and the ×0.1 steps per iteration."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    scheduler = MultiStepLRScheduler(
        optimizer,
        decay_t=lr_steps(cfg.iterations),
        decay_rate=0.1,
        warmup_t=cfg.warmup_iters,
        warmup_lr_init=cfg.lr * WARMUP_RATIO,
        t_in_epochs=False,
    )
    return optimizer, scheduler


def train_detector(
    model: nn.Module,
    split: DetectionSplit,
    cfg: TrainConfig,
    device: torch.device | str,
    seed: int,
    num_workers: int,
) -> dict[str, Any]:
    """Train in place for `cfg.iterations` steps; returns the loss history (mean per 1% of training)
    and, data-parallel, the protocol's `data_parallel` record."""
    loader = _train_loader(model, split, cfg, seed, num_workers)
    optimizer, scheduler = _optimizer(model, cfg)
    model.to(device).train()
    # Trainable parameters can miss a step's graph: a ViT's final norm (the pyramid reads its blocks'
    # outputs), a backbone's unused stages or head. DDP must then look for the unused ones after each
    # forward, or it waits for their gradients forever; the search is cheap next to a detector's step.
    net = data_parallel(model, find_unused_parameters=True)  # the model itself in one process

    def loss_of(batch: tuple[list, list]) -> tuple[torch.Tensor, dict[str, float]]:
        images = [im.to(device, non_blocking=True) for im in batch[0]]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in batch[1]]
        losses = net(images, targets)
        loss = sum(losses.values())
        return loss, ({k: float(v) for k, v in losses.items()} if not torch.isfinite(loss) else {})

    loop = TrainLoop(
        net,
        optimizer,
        loss_of,
        loader,
        device=device,
        iterations=cfg.iterations,
        amp=cfg.amp,
        amp_dtype=DETECTION_AMP_DTYPE,
        hooks=[AfterStep(scheduler.step_update)],
        what="detector",
        hint="try a lower lr",
    ).run()
    history: dict[str, Any] = {"loss_history": loop.loss_history(), "final_loss": loop.final_loss()}
    shards = record(
        cfg.batch_size,
        find_unused_parameters=True,
        evaluation="each rank predicts whole test batches (one process's batches, so the same padding); "
        "per-image COCO records gathered in image order before COCOeval",
    )
    if shards is not None:  # single-process protocols stay as they were
        history["data_parallel"] = shards
    return history


@torch.no_grad()
def predict(
    model: nn.Module,
    split: DetectionSplit,
    batch_size: int,
    device: torch.device | str,
    num_workers: int,
    amp: bool = False,
) -> list[dict[str, Any]]:
    """COCO result records of the whole split (boxes and, for Mask R-CNN, masks in image pixels), in
    image order. Data-parallel, each rank predicts its share of the split's batches, and every rank
    gets all the records (`gather_objects`), in the one-process order.

    The shards are whole batches of one process's batching, not every N-th image: a detector pads a
    batch to its largest image, and the padding changes the features near the border, so a batch
    composed differently could change an image's detections."""
    masks = predicts_masks(model)
    dataset = DetectionDataset(split, list(range(len(split))), masks=False)
    batches = [list(range(s, min(s + batch_size, len(split)))) for s in range(0, len(split), batch_size)]
    mine = [batches[b] for b in distributed.shard(len(batches))]
    rows = [i for batch in mine for i in batch]
    loader = DataLoader(dataset, batch_sampler=mine, collate_fn=collate, num_workers=num_workers)
    model.to(device).eval()
    per_image: list[list[dict[str, Any]]] = []
    with progress_bar("evaluating detector", len(rows), "images") as bar:
        for images, targets in loader:
            with autocast(device, amp, DETECTION_AMP_DTYPE):
                outputs = model([im.to(device) for im in images])
            for out, target in zip(outputs, targets, strict=True):
                m = out["masks"][:, 0].float().cpu().numpy() if masks else None
                per_image.append(
                    to_coco_results(
                        target["image_id"],
                        out["boxes"].float().cpu().numpy(),
                        out["scores"].float().cpu().numpy(),
                        out["labels"].cpu().numpy(),
                        split.category_ids,
                        m,
                    )
                )
            bar.advance(len(images))
    gathered = distributed.gather_objects(per_image, rows, len(split))
    return [rec for image in gathered for rec in image]


def describe_training(
    args: DetectorArgs,
    cfg: TrainConfig,
    model: nn.Module,
    backbone: Backbone,
    pad_to: int | None,
    n_train: int,
    n_test: int,
) -> dict[str, Any]:
    """The protocol record of the detector's neck, optimisation, data and evaluation (after its head's)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "pyramid": model.backbone.plan.describe(),
        "mode": args.mode,
        "norm_eval": args.norm_eval,
        "optimizer": "AdamW, betas (0.9, 0.999)",
        "lr": args.lr,
        "lr_grid": list(DETECTION_LR_GRID),
        "weight_decay": args.weight_decay,
        "schedule": f"linear warmup from lr*0.001 for {cfg.warmup_iters} iters, x0.1 at 27/36 and 33/36",
        "iterations": cfg.iterations,
        "epochs": None if args.iters else args.epochs,
        "batch_size": cfg.batch_size,
        "augment": args.augment,
        "lsj_scale": list(args.lsj_scale) if args.augment == "lsj" else None,
        "image_size": cfg.image_size,
        "transform": {
            "resize": f"longer side to {cfg.image_size}",
            "mean": list(backbone.data_config.mean),
            "std": list(backbone.data_config.std),
            "pad": f"square {pad_to}" if pad_to else "batch to a multiple of 32",
        },
        "fpn_channels": args.fpn_channels,
        "amp": cfg.amp,
        "trainable_params": trainable,
        "num_train_images": n_train,
        "num_test_images": n_test,
        "evaluation": "pycocotools COCOeval, maxDets 100, score threshold 0.05, mask threshold 0.5",
        "lr_steps": lr_steps(cfg.iterations),
    }
