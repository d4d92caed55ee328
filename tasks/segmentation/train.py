"""Training and inference loops of the segmentation suite (torch; imported only when a run starts).

Training follows PVT's Semantic FPN recipe on mmseg where it can: AdamW (betas 0.9/0.999), poly
learning-rate decay `lr·(1 − t/T)^power` to 0 stepped per iteration (torch's `PolynomialLR`),
pixel-wise cross-entropy with 255 ignored and averaged over all pixels of the batch (mmseg's default
`avg_non_ignore=False`). Augmentation (`augment=jitter`, torchvision v2): random rescale of the
shorter side to 0.5–2.0 × `crop_size`, random `crop_size`² crop redrawn while one class dominates
it (mmseg's `cat_max_ratio`; padded with 0 / ignore where the image is smaller), horizontal flip,
and mmseg's photometric distortion (brightness, contrast, HSV saturation and hue, each with
p 0.5); `augment=flip` only rescales the shorter side to `crop_size`, takes a plain random crop
and flips.

Inference rescales each test image like mmseg's `Resize(scale=(4·s, s), keep_ratio=True)` with
s = `test_size` (the shorter side to s unless the longer would pass 4·s), predicts the whole image
at once (`whole`) or, for backbones that only run at their build size, in overlapping
`crop_size`² windows whose logits are averaged (`slide`, stride 2/3 of the crop), resizes the logits
bilinearly to the label map's size and takes the argmax. Scores accumulate in one `IoUAccumulator`.

Data-parallel (`bob run --gpus-per-run N`, bob/distributed.py): every rank trains on its
`batch_size / N` crops of each step (tasks/common/data_parallel.py, each rank drawing its own
augmentation) under DistributedDataParallel, for the same `iterations`, so the run's effective batch,
lr and schedule do not depend on N. BatchNorm layers that train normalise with their rank's batch; at
the end rank 0's running statistics are copied to every rank, so all ranks hold the model rank 0
saves. Each rank then predicts its shard of the test images and the confusion matrices are summed
(exact integer counts): the metrics are those of one process with the same model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import hsv2rgb, rgb2hsv
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from bob import distributed
from bob.progress import progress_bar
from bob.tasks.common.data_parallel import train_batches
from bob.tasks.common.train_loop import AfterStep, TrainLoop, autocast, data_parallel
from bob.tasks.segmentation.data import SegmentationSplit
from bob.tasks.segmentation.metrics import IGNORE_INDEX, IoUAccumulator

# A joint transform of (image, label map), as torchvision v2 transforms take them.
Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[tv_tensors.Image, tv_tensors.Mask]]

RATIO_RANGE = (0.5, 2.0)  # mmseg's random rescale range around the crop size
# mmseg's PhotoMetricDistortion: each applied with probability 0.5, on 0..255 pixel values.
PHOTOMETRIC = {
    "brightness_delta": 32,  # added, uniform in ±32
    "contrast_range": (0.5, 1.5),  # multiplied
    "saturation_range": (0.5, 1.5),  # HSV saturation multiplied
    "hue_delta": 18,  # HSV hue shifted by an integer in ±18 of 180 (OpenCV's 8-bit hue scale)
}


@dataclass
class TrainConfig:
    iterations: int
    batch_size: int
    lr: float
    weight_decay: float
    power: float
    crop_size: int
    augment: str
    cat_max_ratio: float = 0.75
    amp: bool = False


@dataclass
class EvalConfig:
    test_size: int
    crop_size: int
    mode: str  # "whole" | "slide"
    batch_size: int = 8
    amp: bool = False

    @property
    def stride(self) -> int:
        return max(1, math.ceil(self.crop_size * 2 / 3))


class SegmentationDataset(Dataset):
    """(image float [3,H,W] in 0..1, label map int64 [H,W]) pairs, optionally augmented."""

    def __init__(self, split: SegmentationSplit, transform: Transform | None = None) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = TF.to_image(self.split.image(index))
        mask = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(self.split.mask(index))))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return TF.to_dtype(image, torch.float32, scale=True), mask.as_subclass(torch.Tensor).long()


class CatMaxRatioCrop:
    """mmseg's `RandomCrop(cat_max_ratio)`: a random `size`² crop, redrawn up to `attempts` times while
    one class covers `cat_max_ratio` or more of its labelled pixels (or it has one class only); the
    last redraw is kept unchecked. Images smaller than `size` are padded at the bottom/right (0 / ignore), as
    mmseg's crop-then-`Pad` does. `cat_max_ratio=1` is a plain random crop."""

    def __init__(self, size: int, cat_max_ratio: float, attempts: int = 10) -> None:
        self.size, self.cat_max_ratio, self.attempts = size, cat_max_ratio, attempts

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.size
        pad_h, pad_w = max(size - image.shape[-2], 0), max(size - image.shape[-1], 0)
        if pad_h or pad_w:
            image = TF.pad(image, [0, 0, pad_w, pad_h], fill=0)
            mask = TF.pad(mask, [0, 0, pad_w, pad_h], fill=IGNORE_INDEX)
        h, w = image.shape[-2:]

        def draw() -> tuple[int, int]:
            return int(torch.randint(0, h - size + 1, ())), int(torch.randint(0, w - size + 1, ()))

        y, x = draw()
        for _ in range(self.attempts if self.cat_max_ratio < 1 else 0):  # mmseg: check 10, keep the 11th
            crop = mask[..., y : y + size, x : x + size]
            counts = torch.bincount(crop[crop != IGNORE_INDEX].flatten().long())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() < self.cat_max_ratio * counts.sum():
                break
            y, x = draw()
        return TF.crop(image, y, x, size, size), TF.crop(mask, y, x, size, size)


class PhotoMetricDistortion:
    """mmseg's `PhotoMetricDistortion` on a uint8 image (the label map passes through): random
    brightness, then contrast either first or last, saturation and hue in HSV, each with p 0.5."""

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def coin() -> bool:
            return bool(torch.randint(2, ()))

        def uniform(low: float, high: float) -> float:
            return float(torch.empty(()).uniform_(low, high))

        p = PHOTOMETRIC
        img = image.as_subclass(torch.Tensor).float()
        if coin():
            img = (img + uniform(-p["brightness_delta"], p["brightness_delta"])).clamp(0, 255)
        contrast_first = coin()

        def contrast(x: torch.Tensor) -> torch.Tensor:
            return (x * uniform(*p["contrast_range"])).clamp(0, 255) if coin() else x

        if contrast_first:
            img = contrast(img)
        saturate, shift = coin(), coin()
        if saturate or shift:
            hsv = rgb2hsv(img.permute(1, 2, 0).numpy() / 255.0)
            if saturate:
                hsv[..., 1] = np.clip(hsv[..., 1] * uniform(*p["saturation_range"]), 0, 1)
            if shift:
                delta = int(torch.randint(-p["hue_delta"], p["hue_delta"], ()))
                hsv[..., 0] = (hsv[..., 0] + delta / 180) % 1.0
            img = torch.from_numpy(hsv2rgb(hsv) * 255.0).permute(2, 0, 1).float()
        if not contrast_first:
            img = contrast(img)
        return tv_tensors.Image(img.round().clamp(0, 255).to(torch.uint8)), mask


def make_transform(cfg: TrainConfig) -> v2.Compose:
    size = cfg.crop_size
    flip = v2.RandomHorizontalFlip(0.5)
    if cfg.augment == "flip":
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
        return v2.Compose(
            [v2.Resize(size, antialias=True), v2.RandomCrop(size, pad_if_needed=True, fill=fill), flip]
        )
    low, high = (round(r * size) for r in RATIO_RANGE)
    return v2.Compose(
        [
            v2.RandomResize(low, high + 1, antialias=True),
            CatMaxRatioCrop(size, cfg.cat_max_ratio),
            flip,
            PhotoMetricDistortion(),
        ]
    )


def train_segmenter(
    model: nn.Module,
    split: SegmentationSplit,
    cfg: TrainConfig,
    device: torch.device | str,
    seed: int,
    num_workers: int,
) -> dict[str, Any]:
    """Train in place for `cfg.iterations` steps; returns the loss history (mean per 1% of training)."""
    dataset = SegmentationDataset(split, make_transform(cfg))
    # One process: the plain shuffled loader (seeded by `seed`); data-parallel: this rank's share of
    # every step's batch.
    loader = train_batches(
        dataset,
        cfg.batch_size,
        seed=seed,
        drop_last=len(dataset) >= cfg.batch_size,
        num_workers=num_workers,
        persistent_workers=True,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=cfg.iterations, power=cfg.power)
    model.to(device).train()
    # find_unused_parameters: a fine-tuned backbone can hold trainable parameters the segmenter's
    # forward never reaches (a timm ViT's final norm: the features are read from the last block,
    # before it), and which ones depends on the backbone; DDP would otherwise wait for their gradients.
    net = data_parallel(model, find_unused_parameters=True)  # the model itself in one process

    def loss_of(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        images, masks = (t.to(device, non_blocking=True) for t in batch)
        per_pixel = F.cross_entropy(net(images).float(), masks, ignore_index=IGNORE_INDEX, reduction="none")
        return per_pixel.sum() / per_pixel.numel(), {}

    loop = TrainLoop(
        net,
        optimizer,
        loss_of,
        loader,
        device=device,
        iterations=cfg.iterations,
        amp=cfg.amp,
        amp_dtype=torch.float16,  # mmseg's fp16, as the dense suites have always trained
        hooks=[AfterStep(lambda _: scheduler.step())],
        what="segmenter",
        hint="try a lower lr",
    ).run()
    return {"loss_history": loop.loss_history(), "final_loss": loop.final_loss()}


def eval_scale(height: int, width: int, size: int) -> tuple[int, int]:
    """mmseg `Resize(scale=(4·size, size), keep_ratio=True)`: the (height, width) to predict at."""
    factor = min(4 * size / max(height, width), size / min(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def slide_logits(model: nn.Module, image: torch.Tensor, crop: int, stride: int) -> torch.Tensor:
    """mmseg's slide inference: logits of overlapping crop² windows, averaged where they overlap."""
    _, _, h, w = image.shape
    rows = max(h - crop + stride - 1, 0) // stride + 1
    cols = max(w - crop + stride - 1, 0) // stride + 1
    total: torch.Tensor | None = None
    count = torch.zeros(1, 1, h, w, device=image.device)
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, h), min(c * stride + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            logits = model(image[:, :, y1:y2, x1:x2])
            if total is None:
                total = image.new_zeros(1, logits.shape[1], h, w)
            total[:, :, y1:y2, x1:x2] += logits
            count[:, :, y1:y2, x1:x2] += 1
    assert total is not None
    return total / count


def _collate(
    batch: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return [b[0] for b in batch], [b[1] for b in batch]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: SegmentationSplit,
    cfg: EvalConfig,
    device: torch.device | str,
    num_workers: int,
) -> IoUAccumulator:
    """Predict every image of `split` and accumulate the dataset-level confusion matrix.

    Data-parallel, each rank predicts its shard of the images (all of them in one process) and gets
    back the whole split's accumulator: the ranks' matrices summed, their per-image areas gathered in
    dataset order, equal to one process's. The progress bar (this rank's images) is rank 0's only."""
    rows = distributed.shard(len(split))
    loader = DataLoader(
        Subset(SegmentationDataset(split), rows),
        cfg.batch_size,
        shuffle=False,
        collate_fn=_collate,
        num_workers=num_workers,
    )
    model.to(device).eval()
    acc = IoUAccumulator(len(split.classes))
    with progress_bar("evaluating segmenter", len(rows), "images") as bar:
        for images, masks in loader:
            for logits, mask in zip(_predict(model, images, cfg, device), masks, strict=True):
                pred = logits.argmax(0).cpu().numpy()
                acc.update(pred, mask.numpy())
            bar.advance(len(images))
    return acc.gathered(rows, len(split))


def _predict(
    model: nn.Module, images: list[torch.Tensor], cfg: EvalConfig, device: torch.device | str
) -> list[torch.Tensor]:
    """Logits at each image's own size; same-size images go through the model as one batch."""
    sizes = {tuple(im.shape[-2:]) for im in images}
    groups = [torch.stack(images)] if len(sizes) == 1 and cfg.mode == "whole" else [im[None] for im in images]
    out = []
    for batch in groups:
        h, w = batch.shape[-2:]
        batch = batch.to(device)
        th, tw = eval_scale(h, w, cfg.test_size)
        if (th, tw) != (h, w):
            batch = F.interpolate(batch, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
        with autocast(device, cfg.amp, torch.float16):
            if cfg.mode == "slide":
                logits = slide_logits(model, batch, cfg.crop_size, cfg.stride)
            else:
                logits = model(batch)
        logits = logits.float()
        if (th, tw) != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        out.extend(logits)
    return out
