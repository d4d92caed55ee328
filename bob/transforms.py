"""The eval transform a backbone's `DataConfig` describes, split into its two halves.

Same recipe as timm's eval transform: resize to `floor(input_size / crop_pct)` (shorter side for
`center`, both sides for `squash`), center-crop `input_size`, to tensor, normalise.

Extraction applies it in two steps so that the expensive half can be shared:

- the **geometry** (`pixels_from_pil`, `pixels_from_tensor`): decode, resize and crop to a uint8
  [3, S, S] tensor. It depends on the resize, crop and interpolation (and on the pipeline that
  implements them), never on the backbone's mean and std, so every backbone with the same eval
  geometry needs the same pixels (the geometry cache stores them once);
- the **normalisation** (`normalize`): `x / 255`, minus mean, over std, done on whole batches on the
  device after the transfer. Its float32 operations are those of `ToTensor` + `Normalize`, so the
  `pil` pipeline gives bit for bit the tensors `eval_transform` gives.

`eval_transform` stays the one-call PIL transform (PIL image -> normalised tensor) for the code that
transforms single images (fine-tuning's eval loader, IQA's reference images).
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms import functional as TF
from torchvision.transforms.v2 import functional as F2

from bob.backbones.meta import PIPELINES, DataConfig
from bob.errors import UsageError

# The interpolations torchvision's tensor resize implements (PIL has box, hamming and lanczos too).
TENSOR_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")


def _interpolation(cfg: DataConfig) -> InterpolationMode:
    try:
        mode = InterpolationMode(cfg.interpolation)
    except ValueError as err:
        raise UsageError(
            f"Unknown interpolation '{cfg.interpolation}' in the backbone's data config."
        ) from err
    if cfg.pipeline == "tensor" and cfg.interpolation not in TENSOR_INTERPOLATIONS:
        raise UsageError(
            f"pipeline=tensor cannot resize with '{cfg.interpolation}' interpolation (torchvision's tensor "
            f"resize has {', '.join(TENSOR_INTERPOLATIONS)}); use pipeline=pil for this backbone."
        )
    return mode


def _resize_size(cfg: DataConfig) -> int | list[int]:
    """Shorter side for `center`, both sides for `squash` (torchvision's `size` argument)."""
    if cfg.crop_mode == "center":
        return cfg.resize_size
    if cfg.crop_mode == "squash":
        return [cfg.resize_size, cfg.resize_size]
    raise UsageError(f"crop_mode '{cfg.crop_mode}' is not supported; bob implements 'center' and 'squash'.")


def check_config(cfg: DataConfig) -> None:
    """Raise a UsageError for a transform bob cannot apply, before any image is read."""
    if cfg.pipeline not in PIPELINES:
        raise UsageError(f"pipeline must be one of {', '.join(PIPELINES)}, got '{cfg.pipeline}'.")
    _interpolation(cfg)
    _resize_size(cfg)


def eval_transform(cfg: DataConfig) -> Any:
    """PIL image -> normalised float tensor [3, S, S], today's reference transform."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(_resize_size(cfg), interpolation=_interpolation(cfg)),
            T.CenterCrop(cfg.input_size),
            T.ToTensor(),
            T.Normalize(mean=list(cfg.mean), std=list(cfg.std)),
        ]
    )


def pixels_from_pil(image: Image.Image, cfg: DataConfig) -> torch.Tensor:
    """The `pil` geometry: PIL resize and center crop, as uint8 [3, S, S] (no copy of the crop)."""
    resized = TF.resize(image, _resize_size(cfg), interpolation=_interpolation(cfg))
    return TF.pil_to_tensor(TF.center_crop(resized, [cfg.input_size, cfg.input_size]))


def pixels_from_tensor(image: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """The `tensor` geometry: resize (antialiased, as PIL does) and center crop a uint8 [3, H, W]
    tensor on whatever device it is on."""
    resized = F2.resize(image, _resize_size(cfg), interpolation=_interpolation(cfg), antialias=True)
    return F2.center_crop(resized, [cfg.input_size, cfg.input_size])


def tensor_transform(cfg: DataConfig) -> v2.Compose:
    """The `tensor` geometry as a torchvision.transforms.v2 pipeline (uint8 in, uint8 out)."""
    return v2.Compose(
        [
            v2.Resize(_resize_size(cfg), interpolation=_interpolation(cfg), antialias=True),
            v2.CenterCrop(cfg.input_size),
        ]
    )


class Normalizer:
    """uint8 [B, 3, S, S] on any device -> normalised float32 [B, 3, S, S] there (`ToTensor` +
    `Normalize`'s operations, in their order), optionally in channels_last memory format."""

    def __init__(self, cfg: DataConfig, channels_last: bool = False) -> None:
        self.mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.channels_last = channels_last
        self._device: torch.device | None = None

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._device != pixels.device:
            self.mean, self.std = self.mean.to(pixels.device), self.std.to(pixels.device)
            self._device = pixels.device
        x = pixels.to(torch.float32).div_(255).sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def normalize(pixels: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """One batch of uint8 pixels, normalised (see `Normalizer`)."""
    return Normalizer(cfg)(pixels)
