"""A JPEG image folder at ImageNet-like sizes, generated on first use: the throughput benchmark's data.

Real-format JPEG files (baseline, 4:2:0, quality 90) of about 500×375 or 375×500 pixels in the
`<root>/jpeg-folder/<split>/<class>/<index>.jpg` layout torchvision's `ImageFolder` reads, so the
pipeline bench can compare bob with the loop a careful user writes. Each image is an Animal-MNIST
silhouette (its class), upscaled to a random size and position and tinted, over a random crop of one
of scikit-image's CC0 photos. Nothing is downloaded: both sources ship with installed packages.

The tree is written once, into a temp folder renamed into place, and is deterministic for a seed and
size; a `COMPLETE` file records what was generated, and a tree that does not match it is an error
that says what to delete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bob.data.base import DatasetInfo, FileSplit
from bob.data.embedded import ANIMAL_MNIST_CLASSES, _animal_mnist_arrays, _animal_mnist_dir
from bob.errors import DatasetNotFoundError

# scikit-image's bundled colour photos (CC0 or public domain, per skimage.data's docs).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
SIZES = ((500, 375), (375, 500), (500, 333), (500, 400))  # (width, height), ImageNet's common shapes
FORMAT = 1


def _photos() -> list[np.ndarray]:
    import skimage.data

    return [np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)[..., :3] for name in PHOTOS]


def _background(rng: np.random.Generator, photo: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A random crop of `photo` with the target's aspect ratio, resized to `size`."""
    w, h = size
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.5, 1.0) * min(pw / w, ph / h)
    cw, ch = max(16, int(w * scale)), max(16, int(h * scale))
    x, y = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = Image.fromarray(np.ascontiguousarray(photo[y : y + ch, x : x + cw]))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop.resize(size, Image.Resampling.BILINEAR)


def render(rng: np.random.Generator, silhouette: np.ndarray, photo: np.ndarray) -> Image.Image:
    """One image: a photo crop at one of `SIZES`, with the 28×28 silhouette upscaled and tinted on it."""
    size = SIZES[int(rng.integers(len(SIZES)))]
    canvas = _background(rng, photo, size)
    side = int(min(size) * rng.uniform(0.4, 0.8))
    mask = Image.fromarray(silhouette).resize((side, side), Image.Resampling.BICUBIC)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    at = (int(rng.integers(0, size[0] - side + 1)), int(rng.integers(0, size[1] - side + 1)))
    canvas.paste(Image.new("RGB", (side, side), colour), at, mask)
    return canvas


def generate(folder: Path, per_class: dict[str, int], seed: int = 0, quality: int = 90) -> None:
    """Write the tree under `folder` (which must not exist yet): `per_class[split]` images per class."""
    images, labels = _animal_mnist_arrays(_animal_mnist_dir())
    photos = _photos()
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        for s, (split, n) in enumerate(sorted(per_class.items())):
            rng = np.random.default_rng([seed, s])
            for label, name in enumerate(ANIMAL_MNIST_CLASSES):
                (tmp / split / name).mkdir(parents=True)
                pool = np.flatnonzero(labels == label)
                for i in range(n):
                    silhouette = images[int(rng.choice(pool))]
                    image = render(rng, silhouette, photos[int(rng.integers(len(photos)))])
                    image.save(tmp / split / name / f"{i:05d}.jpg", quality=quality)
        manifest = {"format": FORMAT, "seed": seed, "quality": quality, "per_class": per_class}
        (tmp / "COMPLETE").write_text(json.dumps(manifest, sort_keys=True))
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_tree(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """The generated tree under `root/jpeg-folder`, written first if it is missing."""
    folder = Path(root) / "jpeg-folder"
    if not (folder / "COMPLETE").is_file():
        if folder.exists():
            raise DatasetNotFoundError(
                f"{folder} exists but is not a complete jpeg-folder tree (no COMPLETE file). "
                f"Delete it (rm -r '{folder}') and bob generates it again."
            )
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            generate(folder, per_class, seed)
        except OSError:
            if not (folder / "COMPLETE").is_file():  # another process renamed its tree first: use it
                raise
    manifest = json.loads((folder / "COMPLETE").read_text())
    if manifest.get("per_class") != per_class or manifest.get("seed") != seed:
        raise DatasetNotFoundError(
            f"{folder} was generated with {manifest.get('per_class')} images per class (seed "
            f"{manifest.get('seed')}), not {per_class} (seed {seed}). Delete it (rm -r '{folder}')."
        )
    return folder


def load_jpeg_folder(
    info: DatasetInfo,
    split: str,
    *,
    root: Path | None = None,
    download: bool = False,
    per_class: dict[str, int] | None = None,
    seed: int = 0,
) -> FileSplit:
    """One split of the generated tree, as files (generated under the data root on first use)."""
    counts = dict(per_class or {"train": 200, "test": 50})
    folder = ensure_tree(Path(root) if root is not None else Path.cwd(), counts, seed)
    paths, labels = [], []
    for label, name in enumerate(ANIMAL_MNIST_CLASSES):
        files = sorted((folder / split / name).glob("*.jpg"))
        paths += files
        labels += [label] * len(files)
    return FileSplit(info.name, split, ANIMAL_MNIST_CLASSES, folder / split, paths, np.asarray(labels))
