"""Batched feature extraction: the one loop every frozen-feature task goes through."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from bob.backbones.base import Backbone, check_pooled
from bob.backbones.meta import DataConfig
from bob.data.base import ImageSplit
from bob.progress import Progress
from bob.transforms import eval_transform


class _TransformedSplit(torch.utils.data.Dataset):
    def __init__(self, split: ImageSplit, transform: Any) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.split.image(index))


def default_num_workers() -> int:
    """Loader workers: half the cores (at most 8) keep decoding off the model's path; on two cores or
    fewer a worker only competes with torch's threads, so transforms run in-process."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus <= 2 else min(8, cpus // 2)


def split_batches(
    split: ImageSplit, data_config: DataConfig, batch_size: int, num_workers: int, device: torch.device
) -> Iterable[torch.Tensor]:
    loader = torch.utils.data.DataLoader(
        _TransformedSplit(split, eval_transform(data_config)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    return loader


def extract_pooled(
    backbone: Backbone,
    batches: Iterable[torch.Tensor],
    num_samples: int,
    device: torch.device,
    progress: Progress | None = None,
) -> np.ndarray:
    """Run `forward_pooled` over `batches` in inference mode; returns [N, D] float32 on the CPU.

    Every batch is checked against the contract (shape [B, D], finite values), so a broken backbone
    fails with a precise message instead of poisoning the cache.
    """
    out: np.ndarray | None = None
    pos = 0
    backbone.eval()
    with torch.inference_mode():
        for x in batches:
            feats = backbone.forward_pooled(x.to(device, non_blocking=True))
            check_pooled(backbone.meta.name, feats, x.shape[0])
            if out is None:
                out = np.empty((num_samples, feats.shape[1]), dtype=np.float32)
            out[pos : pos + x.shape[0]] = feats.float().cpu().numpy()
            pos += x.shape[0]
            if progress is not None:
                progress.advance(x.shape[0])
    if out is None or pos != num_samples:
        raise RuntimeError(f"extraction produced {pos} rows for {num_samples} samples")
    return out
