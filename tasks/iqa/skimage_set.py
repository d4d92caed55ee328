"""`skimage-distortions`: a KADID-style IQA set generated from CC0 photos shipped with scikit-image.

Each photo gives `crops_per_photo` random square crops resized to `size` px: the pristine references.
Every reference is distorted with each of `DISTORTIONS` (Hendrycks & Dietterich's functions from
`imagecorruptions`, through `bob.data.corruptions.corrupt_image`) at severities 1..5. The quality
score of a distorted image is its SSIM to its reference (`skimage.metrics.structural_similarity`,
RGB, data range 255, scikit-image's default 7×7 window): a full-reference proxy MOS in [−1, 1],
higher = better. Raw severity is not used as the target because it is not comparable across types.

Split by source photo: the photos are partitioned 80/20 with a fixed seed, so no photo (and none of
its crops) appears in both train and test. Generation is a pure function of a fixed seed; the arrays
are kept on disk under the bob cache (`datasets/`), keyed by the generation parameters and the
`imagecorruptions` version, and memoised in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

from bob.data.base import ArraySplit, DatasetInfo
from bob.data.corruptions import corrupt_image, corruptions_version, image_seed
from bob.data.shapes import skimage_photo
from bob.progress import progress_bar
from bob.tasks.iqa.data import IQASplit, pick_split
from bob.weights import bob_cache_dir

PHOTOS: tuple[str, ...] = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "clock",
    "moon",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "brick",
)
DISTORTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "impulse_noise",
    "speckle_noise",
    "gaussian_blur",
    "defocus_blur",
    "motion_blur",
    "jpeg_compression",
    "pixelate",
    "contrast",
    "brightness",
)
SEVERITIES = (1, 2, 3, 4, 5)
_CROP_SCALE = (0.5, 0.9)  # crop side as a fraction of the photo's shorter side
SCORE_NOTE = "SSIM to the pristine reference (RGB, 7x7 window, data range 255); higher = better"


def _seed(tag: str) -> int:
    return int.from_bytes(hashlib.sha256(f"bob.skimage-distortions/{tag}".encode()).digest()[:8], "little")


def reference_crops(photos: tuple[str, ...], crops_per_photo: int, size: int) -> np.ndarray:
    """[len(photos) * crops_per_photo, size, size, 3] uint8 references, photo-major."""
    rng = np.random.default_rng(_seed("crops"))
    out = []
    for name in photos:
        photo = skimage_photo(name)
        for _ in range(crops_per_photo):
            side = int(min(photo.size) * rng.uniform(*_CROP_SCALE))
            x = int(rng.integers(0, photo.width - side + 1))
            y = int(rng.integers(0, photo.height - side + 1))
            crop = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.BICUBIC)
            out.append(np.asarray(crop, dtype=np.uint8))
    return np.stack(out)


def generate(
    photos: tuple[str, ...], crops_per_photo: int, distortions: tuple[str, ...], size: int
) -> dict[str, np.ndarray]:
    """References, distorted images (reference-major, then type, then severity) and their SSIM."""
    refs = reference_crops(photos, crops_per_photo, size)
    images, scores, ref_index, types = [], [], [], []
    base = _seed("noise")
    total = len(refs) * len(distortions) * len(SEVERITIES)
    with progress_bar("generating skimage-distortions", total, "images") as bar:
        for r, ref in enumerate(refs):
            pil = Image.fromarray(ref, mode="RGB")
            for t, name in enumerate(distortions):
                for severity in SEVERITIES:
                    seed = image_seed(base % (2**31), name, severity, r)
                    out = np.asarray(corrupt_image(pil, name, severity, seed), dtype=np.uint8)
                    images.append(out)
                    scores.append(structural_similarity(ref, out, channel_axis=2, data_range=255))
                    ref_index.append(r)
                    types.append(t)
                bar.advance(len(SEVERITIES))
    return {
        "references": refs,
        "images": np.stack(images),
        "scores": np.asarray(scores, np.float64),
        "ref_index": np.asarray(ref_index, np.int64),
        "types": np.asarray(types, np.int64),
    }


def _cache_file(params: dict) -> Path:
    tag = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return bob_cache_dir() / "datasets" / f"skimage-distortions-{tag}.npz"


@lru_cache(maxsize=4)
def _arrays(
    photos: tuple[str, ...], crops_per_photo: int, distortions: tuple[str, ...], size: int
) -> dict[str, np.ndarray]:
    params = {
        "photos": photos,
        "crops": crops_per_photo,
        "distortions": distortions,
        "size": size,
        "imagecorruptions": corruptions_version(),
        "format": 1,
    }
    path = _cache_file(params)
    if path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    else:
        arrays = generate(photos, crops_per_photo, distortions, size)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def load_skimage_distortions(
    info: DatasetInfo,
    split: str,
    *,
    root: Path | None = None,
    download: bool = False,
    photos: tuple[str, ...] = PHOTOS,
    crops_per_photo: int = 3,
    distortions: tuple[str, ...] = DISTORTIONS,
    size: int = 128,
) -> IQASplit:
    """Catalog loader: the train or test part of the generated set (content = source photo)."""
    a = _arrays(tuple(photos), crops_per_photo, tuple(distortions), size)
    references = ArraySplit(
        info.name, "references", ["reference"], a["references"], np.zeros(len(a["references"]))
    )
    full = IQASplit(
        info.name,
        "all",
        ArraySplit(info.name, "all", list(distortions), a["images"], a["types"]),
        a["scores"],
        classes=tuple(distortions),
        labels=a["types"],
        content=a["ref_index"] // crops_per_photo,
        references=references,
        ref_index=a["ref_index"],
        score_note=SCORE_NOTE,
    )
    return pick_split(full, split)
