"""Training and inference loops of the detection suite (torch; imported only when a run starts).

Training follows BoB's detection recipe where it can: AdamW (betas 0.9/0.999, weight decay 0.05),
linear warmup from lr·0.001, then ×0.1 steps at 27/36 and 33/36 of the schedule (mmdetection's 3×),
via timm's `MultiStepLRScheduler` stepped per iteration. Augmentation is torchvision's v2 transforms:
`lsj` = large-scale jitter (ScaleJitter to image_size² at scale 0.1–2.0, RandomCrop with padding,
horizontal flip, SanitizeBoundingBoxes), `flip` = horizontal flip only. Crowd annotations and
degenerate boxes are left out of training targets (torchvision's reference recipe); images without
any instance are skipped in training and kept in evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bob.data.coco import DetectionSplit
from bob.progress import progress_bar
from bob.tasks.common.coco_eval import to_coco_results
from bob.tasks.common.train_loop import AfterStep, TrainLoop

LR_STEPS = (27 / 36, 33 / 36)  # mmdetection 3× schedule: decay after epochs 27 and 33 of 36
WARMUP_RATIO = 0.001


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


def lr_steps(iterations: int) -> list[int]:
    """The iterations after which the learning rate drops ×0.1."""
    return [max(1, round(iterations * f)) for f in LR_STEPS]


def _decode_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_util

    seg = ann["segmentation"]
    if isinstance(seg, list):  # polygons
        rle = mask_util.merge(mask_util.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = mask_util.frPyObjects(seg, height, width)
    else:
        rle = {
            "size": seg["size"],
            "counts": seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"],
        }
    return mask_util.decode(rle)


class DetectionDataset(Dataset):
    """(image float [3,H,W] in 0..1, target) pairs; the target holds boxes (xyxy), labels 1..K, masks."""

    def __init__(self, split: DetectionSplit, indices: list[int], masks: bool, transform: Any = None) -> None:
        self.split, self.indices, self.masks, self.transform = split, indices, masks, transform
        self.label_of = {cid: i + 1 for i, cid in enumerate(split.category_ids)}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[Any, dict[str, Any]]:
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        index = self.indices[k]
        image = F.to_image(self.split.image(index))
        h, w = image.shape[-2:]
        anns = [
            a
            for a in self.split.annotations(index)
            if not a["iscrowd"] and a["bbox"][2] >= 1 and a["bbox"][3] >= 1
        ]
        boxes = torch.tensor(
            [[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)], dtype=torch.float32
        )
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes.reshape(-1, 4), format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": int(self.split.image_info(index)["id"]),
        }
        if self.masks:
            stack = np.stack([_decode_mask(a, h, w) for a in anns]) if anns else np.zeros((0, h, w), np.uint8)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(stack))
        if self.transform is not None:
            image, target = self.transform(image, target)
        return F.to_dtype(image, torch.float32, scale=True), target


def make_transform(cfg: TrainConfig) -> Any:
    from torchvision.transforms import v2

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


def _collate(batch: list) -> tuple[list, list]:
    return [b[0] for b in batch], [b[1] for b in batch]


def train_indices(split: DetectionSplit) -> list[int]:
    return [i for i in range(len(split)) if any(not a["iscrowd"] for a in split.annotations(i))]


def predicts_masks(model: torch.nn.Module) -> bool:
    """Mask R-CNN predicts masks; Faster R-CNN and the query head predict boxes only."""
    heads = getattr(model, "roi_heads", None)
    return heads is not None and hasattr(heads, "mask_head") and heads.has_mask()


def train_detector(
    model: torch.nn.Module, split: DetectionSplit, cfg: TrainConfig, device: Any, seed: int, num_workers: int
) -> dict[str, Any]:
    """Train in place for `cfg.iterations` steps; returns the loss history (mean per 1% of training)."""
    from timm.scheduler import MultiStepLRScheduler

    dataset = DetectionDataset(
        split,
        train_indices(split),
        masks=predicts_masks(model),
        transform=make_transform(cfg),
    )
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        cfg.batch_size,
        shuffle=True,
        drop_last=len(dataset) >= cfg.batch_size,
        collate_fn=_collate,
        num_workers=num_workers,
        generator=gen,
        persistent_workers=num_workers > 0,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    steps = lr_steps(cfg.iterations)
    scheduler = MultiStepLRScheduler(
        optimizer,
        decay_t=steps,
        decay_rate=0.1,
        warmup_t=cfg.warmup_iters,
        warmup_lr_init=cfg.lr * WARMUP_RATIO,
        t_in_epochs=False,
    )
    model.to(device).train()

    def loss_of(batch: tuple[list, list]) -> tuple[torch.Tensor, dict[str, float]]:
        images = [im.to(device, non_blocking=True) for im in batch[0]]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in batch[1]]
        losses = model(images, targets)
        loss = sum(losses.values())
        return loss, ({k: float(v) for k, v in losses.items()} if not torch.isfinite(loss) else {})

    loop = TrainLoop(
        model,
        optimizer,
        loss_of,
        loader,
        device=device,
        iterations=cfg.iterations,
        amp=cfg.amp,
        hooks=[AfterStep(scheduler.step_update)],
        what="detector",
        hint="try a lower lr",
    ).run()
    return {"loss_history": loop.loss_history(), "final_loss": loop.final_loss()}


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    split: DetectionSplit,
    batch_size: int,
    device: Any,
    num_workers: int,
    amp: bool = False,
) -> list[dict[str, Any]]:
    """COCO result records of the whole split (boxes and, for Mask R-CNN, masks in image pixels)."""
    masks = predicts_masks(model)
    dataset = DetectionDataset(split, list(range(len(split))), masks=False)
    loader = DataLoader(dataset, batch_size, shuffle=False, collate_fn=_collate, num_workers=num_workers)
    use_amp = amp and torch.device(device).type == "cuda"
    model.to(device).eval()
    records: list[dict[str, Any]] = []
    with progress_bar("evaluating detector", len(dataset), "images") as bar:
        for images, targets in loader:
            with torch.autocast(torch.device(device).type, dtype=torch.float16, enabled=use_amp):
                outputs = model([im.to(device) for im in images])
            for out, target in zip(outputs, targets, strict=True):
                m = out["masks"][:, 0].float().cpu().numpy() if masks else None
                records += to_coco_results(
                    target["image_id"],
                    out["boxes"].float().cpu().numpy(),
                    out["scores"].float().cpu().numpy(),
                    out["labels"].cpu().numpy(),
                    split.category_ids,
                    m,
                )
            bar.advance(len(images))
    return records
