"""`skimage-views`: instance-level retrieval on augmented views of CC0 photos shipped with scikit-image.

Each photo gives `crops_per_photo` base crops (random squares, so crops of one photo are hard
negatives of each other); each base crop is one instance, and `views_per_instance` augmented views
are drawn from it: a random sub-crop (scale and aspect jitter), a horizontal flip, a small rotation,
brightness / contrast / saturation jitter and a JPEG re-encode. The one split, `test`, holds the first
view of every instance as the queries, then the other views as the database; relevant = the other views of the same instance (the label is
the instance id). A pure function of a fixed seed, so the pixels (and the fingerprint) never change.
"""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from bob.data.base import ArraySplit, DatasetInfo
from bob.data.relevance import RETRIEVAL_SPLIT, mark_queries
from bob.data.shapes import skimage_photo
from bob.errors import UsageError

# CC0 / public-domain photos bundled in the scikit-image wheel (loaded without network).
PHOTOS: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "moon",
    "hubble_deep_field",
    "clock",
    "brick",
    "grass",
    "gravel",
)
_BASE_SCALE = (0.35, 0.6)  # base crop side as a fraction of the photo's shorter side
_VIEW_SCALE = (0.55, 0.9)  # view side as a fraction of the base crop's side
_ASPECT = (0.8, 1.25)
_ROTATION_DEG = 12.0
_JITTER = (0.65, 1.35)  # brightness, contrast and saturation factors
_JPEG_QUALITY = (25, 90)


def _base_crop(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    side = int(min(photo.size) * rng.uniform(*_BASE_SCALE))
    x = int(rng.integers(0, photo.width - side + 1))
    y = int(rng.integers(0, photo.height - side + 1))
    return photo.crop((x, y, x + side, y + side))


def _view(base: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    side = base.width * rng.uniform(*_VIEW_SCALE)
    aspect = rng.uniform(*_ASPECT)
    w, h = min(base.width, side * np.sqrt(aspect)), min(base.height, side / np.sqrt(aspect))
    x, y = rng.uniform(0, base.width - w), rng.uniform(0, base.height - h)
    img = base.crop((round(x), round(y), round(x + w), round(y + h)))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = img.rotate(rng.uniform(-_ROTATION_DEG, _ROTATION_DEG), resample=Image.Resampling.BILINEAR)
    img = img.resize((size, size), Image.Resampling.BICUBIC)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(rng.uniform(*_JITTER))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(rng.integers(*_JPEG_QUALITY)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def generate_instance_views(
    *, crops_per_photo: int = 4, views_per_instance: int = 5, size: int = 96, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images [N, size, size, 3] uint8, instance labels, view index) for every photo × crop × view."""
    if crops_per_photo < 1 or views_per_instance < 2:
        raise UsageError("skimage-views needs at least 1 crop per photo and 2 views per instance.")
    if size < 16:
        raise UsageError(f"size must be at least 16 pixels, got {size}.")
    rng = np.random.default_rng(seed)
    images, labels, views = [], [], []
    for p, name in enumerate(PHOTOS):
        photo = skimage_photo(name)
        for c in range(crops_per_photo):
            base = _base_crop(photo, rng)
            for v in range(views_per_instance):
                images.append(np.asarray(_view(base, rng, size)))
                labels.append(p * crops_per_photo + c)
                views.append(v)
    return np.stack(images), np.asarray(labels, np.int64), np.asarray(views, np.int64)


def instance_names(crops_per_photo: int) -> list[str]:
    return [f"{name}/{c}" for name in PHOTOS for c in range(crops_per_photo)]


def views_seed() -> int:
    """The fixed generation seed (part of the dataset's definition)."""
    return int.from_bytes(hashlib.sha256(b"bob.skimage-views").digest()[:8], "little")


@lru_cache(maxsize=4)
def _arrays(crops_per_photo: int, views_per_instance: int, size: int) -> tuple[np.ndarray, ...]:
    arrays = generate_instance_views(
        crops_per_photo=crops_per_photo, views_per_instance=views_per_instance, size=size, seed=views_seed()
    )
    for array in arrays:
        array.setflags(write=False)
    return arrays


def load_instance_views(
    info: DatasetInfo,
    split: str,
    *,
    root: Path | None = None,
    download: bool = False,
    crops_per_photo: int = 4,
    views_per_instance: int = 5,
    size: int = 96,
) -> ArraySplit:
    """Catalog loader: the `test` split, queries (view 0 of every instance) first, then the database."""
    if split != RETRIEVAL_SPLIT:
        raise UsageError(
            f"Dataset '{info.name}' has no split '{split}'; its only split is {RETRIEVAL_SPLIT}."
        )
    images, labels, views = _arrays(crops_per_photo, views_per_instance, size)
    order = np.concatenate([np.flatnonzero(views == 0), np.flatnonzero(views > 0)])
    out = ArraySplit(info.name, split, instance_names(crops_per_photo), images[order], labels[order])
    return mark_queries(out, int(np.count_nonzero(views == 0)))
