"""ImageNet-C-style corruptions rendered on the fly, deterministically, from any split.

`CorruptedSplit` wraps a clean split: image `i` is the parent's image, brought to a fixed render
geometry (`RenderSpec`), then corrupted with Hendrycks & Dietterich's functions as packaged by
`imagecorruptions` (the `imagecorruptions-imaug` distribution, which works with numpy 2). Every
image draws its noise from its own seed, derived from (base seed, corruption, severity, index), so
an image is the same whatever order or process renders it. The library draws from numpy's global
generator; it is seeded per image and restored afterwards, so nothing else's randomness changes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from PIL import Image

from bob.data.base import ImageSplit
from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest

# ImageNet-C's 15 corruptions, in its order.
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
# The 4 held-out "validation" corruptions of the same paper, accepted but never a default.
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
# Functions that take their own `seed` instead of (only) numpy's global generator.
_SEEDED_KWARG = frozenset({"glass_blur", "impulse_noise"})
_PACKAGE = "imagecorruptions-imaug"
_INSTALL = "pip install imagecorruptions-imaug"


def corruption_set_name(corruption: str, severity: int) -> str:
    """The split name of one (corruption, severity) pair, e.g. `gaussian_noise-3`."""
    return f"{corruption}-{severity}"


def parse_corruption_set(name: str) -> tuple[str, int]:
    corruption, _, severity = name.rpartition("-")
    return corruption, int(severity)


def corruptions_version() -> str:
    try:
        return version(_PACKAGE)
    except PackageNotFoundError:
        raise UsageError(
            f"Corruption shifts need the '{_PACKAGE}' package (it imports as `imagecorruptions`); "
            f"install it with `{_INSTALL}`."
        ) from None


@dataclass(frozen=True)
class RenderSpec:
    """The clean geometry corruptions are applied at: torchvision's `Resize`, then `CenterCrop`.

    `resize` is the shorter side (both sides when `squash`), `crop` the centre crop (None: none).
    ImageNet-C used bilinear 256 → 224. Embedded shifts render with the resize of the backbone's own
    eval transform (`from_data_config`) and leave the crop to that transform, so an uncorrupted render
    reaches the backbone pixel for pixel as the in-distribution test image does.
    """

    resize: int
    crop: int | None = None
    interpolation: str = "bilinear"
    squash: bool = False

    @classmethod
    def from_data_config(cls, cfg: Any) -> RenderSpec:
        """The resize step of bob's eval transform for a backbone `DataConfig` (its crop follows later)."""
        scale = math.floor(cfg.input_size / cfg.crop_pct)
        return cls(scale, None, cfg.interpolation, cfg.crop_mode == "squash")

    def __call__(self, image: Image.Image) -> Image.Image:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        size = [self.resize, self.resize] if self.squash else self.resize
        image = F.resize(image, size, interpolation=InterpolationMode(self.interpolation))
        return image if self.crop is None else F.center_crop(image, [self.crop, self.crop])

    @property
    def size(self) -> int:
        """The shorter side of a rendered image."""
        return self.crop or self.resize

    def describe(self) -> str:
        sides = "both sides" if self.squash else "shorter side"
        crop = f", centre crop {self.crop}" if self.crop else ""
        return f"{self.interpolation} resize ({sides}) to {self.resize}{crop}"


def image_seed(base: int, corruption: str, severity: int, index: int) -> int:
    digest = hashlib.sha256(f"bob.corrupt/{base}/{corruption}/{severity}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def corrupt_image(image: Image.Image, corruption: str, severity: int, seed: int) -> Image.Image:
    """One corrupted RGB image; same inputs, same pixels. Global numpy RNG state is left as found."""
    from imagecorruptions import corrupt

    state = np.random.get_state()
    try:
        np.random.seed(seed)
        kwargs = {"seed": seed} if corruption in _SEEDED_KWARG else {}
        array = corrupt(np.asarray(image.convert("RGB")), severity, corruption, **kwargs)
    finally:
        np.random.set_state(state)
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def check_corruption(corruption: str, severity: int) -> None:
    known = CORRUPTIONS + EXTRA_CORRUPTIONS
    if corruption not in known:
        raise UnknownNameError(
            "corruption", corruption, suggest(corruption, known, 3), f"Known: {', '.join(known)}."
        )
    if severity not in SEVERITIES:
        raise UsageError(f"Corruption severity must be one of 1..5, got {severity}.")


class CorruptedSplit(ImageSplit):
    """A clean split rendered at `render` and corrupted at one severity, image by image."""

    plain = True

    def __init__(
        self,
        parent: ImageSplit,
        dataset: str,
        corruption: str,
        severity: int,
        render: RenderSpec,
        seed: int = 0,
    ) -> None:
        check_corruption(corruption, severity)
        if render.size < 32:
            raise UsageError(f"Corruptions need images of at least 32 pixels; render size is {render.size}.")
        super().__init__(dataset, corruption_set_name(corruption, severity), parent.classes, parent.labels)
        self.parent, self.corruption, self.severity = parent, corruption, severity
        self.render, self.seed = render, seed
        self.library_version = corruptions_version()

    def image(self, index: int) -> Image.Image:
        clean = self.render(self.parent.image(index))
        seed = image_seed(self.seed, self.corruption, self.severity, index)
        return corrupt_image(clean, self.corruption, self.severity, seed)

    def _identity_chunks(self) -> list[bytes]:
        recipe = (
            f"{self.parent.fingerprint}/{self.corruption}/{self.severity}/{self.render.describe()}/"
            f"seed={self.seed}/{_PACKAGE}=={self.library_version}"
        )
        return [recipe.encode()]
