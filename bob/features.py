"""Batched feature extraction: the one loop every frozen-feature task goes through, and the image
pipeline that feeds it.

Images travel as uint8 pixels: the data loader decodes, resizes and crops them (`PixelDataset`, in
worker processes where the machine has cores to spare), batches are pinned and copied to the device
without blocking, and only there are they normalised (`bob.transforms.Normalizer`), cast and laid out
for the model. Two pipelines implement the geometry (`DataConfig.pipeline`):

- `pil` (the default): PIL decodes and resizes, exactly as every cached feature before pipelines
  existed was computed;
- `tensor`: torchvision.io's `decode_jpeg` (on the GPU, in batches, when extracting on CUDA) and
  torchvision's uint8 tensor resize; in-memory splits skip PIL entirely; files `decode_jpeg` cannot
  read (PNG, a corrupt or CMYK JPEG it refuses) fall back to PIL for the decode.

`Extraction` (bob.backbones.meta) carries the model side too: precision (`fp32`, or autocast to
`bf16` / `fp16`) and channels_last.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import functional as TF

from bob.backbones.base import Backbone, check_pooled
from bob.backbones.meta import DataConfig, Extraction
from bob.data.base import ImageSplit
from bob.errors import UsageError
from bob.progress import Progress
from bob.transforms import Normalizer, check_config, pixels_from_pil, pixels_from_tensor

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_JPEG_MAGIC = b"\xff\xd8\xff"


def check_extraction(extraction: Extraction, device: torch.device) -> None:
    """A UsageError for settings the device cannot run, before any image is read."""
    if extraction.precision == "fp16" and device.type == "cpu":
        raise UsageError(
            "precision=fp16 needs a GPU: CPU kernels for float16 are slow or missing. Use bf16 on a CPU."
        )


def autocast(extraction: Extraction, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The forward's precision: nothing for fp32, else `torch.autocast` to bf16 / fp16."""
    if extraction.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[extraction.precision])


def default_num_workers() -> int:
    """Loader workers: half the cores (at most 8) keep decoding off the model's path; on two cores or
    fewer a worker only competes with torch's threads, so transforms run in-process."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus <= 2 else min(8, cpus // 2)


def _read_jpeg(split: ImageSplit, index: int) -> torch.Tensor | None:
    """The encoded bytes of image `index` when it is a JPEG file as it is on disk, else None."""
    path = split.source(index)
    if path is None:
        return None
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(_JPEG_MAGIC):
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


class PixelDataset(torch.utils.data.Dataset):
    """Image `i` of a split as uint8 [3, S, S] pixels under the config's geometry.

    `defer_jpeg=True` (the GPU decode) hands JPEG files out still encoded, as 1-D uint8 tensors, for
    `decode_batch` to decode on the device."""

    def __init__(self, split: ImageSplit, cfg: DataConfig, defer_jpeg: bool = False) -> None:
        check_config(cfg)
        self.split, self.cfg, self.defer_jpeg = split, cfg, defer_jpeg

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.cfg.pipeline == "pil":
            return pixels_from_pil(self.split.image(index), self.cfg)
        array = self.split.array(index)
        if array is not None:
            return pixels_from_tensor(
                torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1), self.cfg
            )
        encoded = _read_jpeg(self.split, index)
        if encoded is not None:
            if self.defer_jpeg:
                return encoded
            decoded = _decode_cpu(encoded)
            if decoded is not None:
                return pixels_from_tensor(decoded, self.cfg)
        # Not a JPEG file, or one decode_jpeg refuses: PIL decodes it.
        return pixels_from_tensor(TF.pil_to_tensor(self.split.image(index)), self.cfg)


def _decode_cpu(encoded: torch.Tensor) -> torch.Tensor | None:
    try:
        return decode_jpeg(encoded, mode=ImageReadMode.RGB)
    except RuntimeError:
        return None


def _collate_mixed(items: list[torch.Tensor]) -> list[torch.Tensor]:
    """Encoded JPEGs (1-D) and ready pixels (3-D) of one batch, as a list, for `decode_batch`."""
    return items


def decode_batch(
    items: list[torch.Tensor], dataset: PixelDataset, indices: range, device: torch.device
) -> torch.Tensor:
    """One batch of the GPU decode: the encoded JPEGs decoded together on `device` (nvjpeg), each
    resized and cropped there, stacked with the items the workers already turned into pixels. A
    batch nvjpeg refuses is decoded image by image, and what it still refuses goes through PIL."""
    encoded = [i for i, item in enumerate(items) if item.ndim == 1]
    out: list[torch.Tensor | None] = [None] * len(items)
    for i, item in enumerate(items):
        if item.ndim != 1:
            out[i] = item.to(device, non_blocking=True)
    if encoded:
        try:
            decoded = decode_jpeg([items[i] for i in encoded], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = [_decode_one(items[i], device) for i in encoded]
        for i, image in zip(encoded, decoded, strict=True):
            if image is None:  # PIL's decode, on the CPU
                image = TF.pil_to_tensor(dataset.split.image(indices[i])).to(device)
            out[i] = pixels_from_tensor(image, dataset.cfg)
    return torch.stack([t for t in out if t is not None])


def _decode_one(encoded: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    try:
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None


def pixel_batches(
    split: ImageSplit, cfg: DataConfig, batch_size: int, num_workers: int, device: torch.device
) -> Iterator[torch.Tensor]:
    """uint8 [B, 3, S, S] batches of a split under the config's geometry, in order, on `device`
    (copied from pinned memory without blocking; on CUDA the `tensor` pipeline decodes there)."""
    gpu_decode = device.type == "cuda" and cfg.pipeline == "tensor"
    dataset = PixelDataset(split, cfg, defer_jpeg=gpu_decode)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=_collate_mixed if gpu_decode else None,
    )
    start = 0
    for batch in loader:
        if gpu_decode:
            yield decode_batch(batch, dataset, range(start, start + len(batch)), device)
        else:
            yield batch.to(device, non_blocking=True)
        start += len(batch)


def split_batches(
    split: ImageSplit, data_config: DataConfig, batch_size: int, num_workers: int, device: torch.device
) -> Iterable[torch.Tensor]:
    """Normalised float batches on the CPU (pinned for a CUDA device), for suites that run their own
    forward (re-ID, IQA, tradeoff): the same pixels and the same arithmetic as `extract_pooled`'s."""
    normalize = Normalizer(data_config)
    for pixels in pixel_batches(split, data_config, batch_size, num_workers, torch.device("cpu")):
        x = normalize(pixels)
        yield x.pin_memory() if torch.device(device).type == "cuda" else x


def extract_pooled(
    backbone: Backbone,
    batches: Iterable[torch.Tensor],
    num_samples: int,
    device: torch.device,
    progress: Progress | None = None,
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    extraction: Extraction | None = None,
) -> np.ndarray:
    """Run `forward_pooled` over `batches` in inference mode; returns [N, D] float32 on the CPU.

    `prepare` turns a batch into the model's input on the device (e.g. a `Normalizer` for uint8
    pixels); without it a batch is the input, copied to the device. `extraction` picks precision and
    memory format (its pipeline is the batches' business). Features come back as float32 whatever
    the precision. Every batch is checked against the contract (shape [B, D], finite values), so a
    broken backbone fails with a precise message instead of poisoning the cache.
    """
    extraction = extraction or Extraction()
    check_extraction(extraction, torch.device(device))
    out: np.ndarray | None = None
    pos = 0
    backbone.eval()
    if extraction.channels_last and isinstance(backbone, torch.nn.Module):
        backbone.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for x in batches:
            x = prepare(x) if prepare is not None else x.to(device, non_blocking=True)
            if extraction.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(extraction, torch.device(device)):
                feats = backbone.forward_pooled(x)
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
