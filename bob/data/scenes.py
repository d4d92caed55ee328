"""Generated detection scenes: several shapes per image with boxes and occlusion-aware instance masks.

Each scene is a background of the chosen `bob.data.shapes` domain with 1..`max_objects` shapes of
five classes at random position, size, rotation and colour. Objects are painted in order; a later
object hides the part of an earlier one it covers, so every mask is the *visible* extent, and an
object left with fewer than `MIN_VISIBLE` pixels is dropped. Boxes are the visible mask's extent
(COCO `[x, y, w, h]`, exclusive right/bottom edge), masks are COCO RLE, `area` is the mask area.

Two domains make an OOD pair: `texture` (CC0 scikit-image texture crops) for training and `cartoon`
(flat light background, darker fills with black outlines) as the shifted test domain. Everything is
a pure function of the seed, so scenes are regenerated instead of stored; `write_coco` writes a
split out as PNG files plus an instances JSON, the layout the real-data loader reads.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_util

from bob.data.base import DatasetInfo
from bob.data.coco import DetectionSplit
from bob.data.shapes import _BACKGROUNDS, _UNIT_SHAPES, _fill_colour, _mask, _place
from bob.errors import UsageError

SCENE_CLASSES: tuple[str, ...] = ("circle", "triangle", "star", "cross", "ring")
RADIUS_RANGE = (0.08, 0.2)  # object radius as a fraction of the image size
MIN_VISIBLE = 12  # pixels; fewer visible after occlusion and the object is not annotated


def _rle(mask: np.ndarray) -> dict[str, Any]:
    """A binary mask as COCO JSON's compressed RLE (`counts` a string)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


# Named hues of the colour × shape scenes (open-vocabulary detection): hue in [0, 1), ±0.02 jitter.
PALETTE: dict[str, float] = {"red": 0.0, "yellow": 0.15, "green": 0.33, "blue": 0.62}
HUE_JITTER = 0.02


def palette_classes(palette: tuple[str, ...]) -> tuple[str, ...]:
    """Category names of the colour × shape scenes, shape-major: `red circle`, `yellow circle`, …"""
    return tuple(f"{colour} {shape}" for shape in SCENE_CLASSES for colour in palette)


def _scene(
    rng: np.random.Generator, size: int, domain: str, max_objects: int, palette: tuple[str, ...] = ()
) -> tuple[np.ndarray, list]:
    """One image (uint8 HxWx3) and its visible objects as (class index, boolean mask).

    With a `palette`, each object also draws a named colour and its class is (shape, colour)."""
    canvas = _BACKGROUNDS[domain](rng, size)
    outline = max(1.0, size / 48)
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(len(SCENE_CLASSES)))
        radius = rng.uniform(*RADIUS_RANGE) * size
        centre = radius + rng.random(2) * (size - 2 * radius)
        polys = _place(_UNIT_SHAPES[SCENE_CLASSES[cls]], centre, radius, rng.uniform(0, 2 * np.pi))
        cover = _mask(polys, size, None)
        if palette:
            colour = int(rng.integers(len(palette)))
            hue = (PALETTE[palette[colour]] + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1.0
            hsv = np.array([hue, *rng.random(2)])
            cls = cls * len(palette) + colour
        else:
            hsv = rng.random(3)
        canvas = canvas * (1.0 - cover) + _fill_colour(hsv, domain) * cover
        if domain == "cartoon":
            canvas *= 1.0 - _mask(polys, size, outline)
        visible = cover[..., 0] >= 0.5
        objects = [(c, m & ~visible) for c, m in objects] + [(cls, visible)]
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image, [(c, m) for c, m in objects if m.sum() >= MIN_VISIBLE]


def generate_scenes(
    n: int,
    *,
    size: int = 128,
    domain: str = "texture",
    max_objects: int = 4,
    seed: int = 0,
    palette: tuple[str, ...] = (),
    novel: tuple[str, ...] = (),
) -> tuple[np.ndarray, dict[str, Any]]:
    """`n` scenes (uint8 N×size×size×3) and their COCO dict. Same arguments, same bytes.

    With a `palette` (names from PALETTE) the categories are colour × shape (`red star`), and those
    named in `novel` are marked `"split": "novel"` (the rest `"base"`) for open-vocabulary detection."""
    names = _scene_classes(palette, novel)
    if domain not in _BACKGROUNDS:
        raise UsageError(f"Unknown scenes domain '{domain}'; valid domains are: {', '.join(_BACKGROUNDS)}.")
    if size < 32 or n < 1 or max_objects < 1:
        raise UsageError(
            f"scenes need size >= 32, n >= 1 and max_objects >= 1 (got {size}, {n}, {max_objects})."
        )
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    coco: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(names)],
    }
    if palette:
        for category in coco["categories"]:
            category["split"] = "novel" if category["name"] in novel else "base"
    for i in range(n):
        images[i], objects = _scene(rng, size, domain, max_objects, palette)
        coco["images"].append({"id": i + 1, "file_name": f"{i:06d}.png", "width": size, "height": size})
        for cls, mask in objects:
            coco["annotations"].append(_annotation(len(coco["annotations"]) + 1, i + 1, cls, mask))
    return images, coco


def _scene_classes(palette: tuple[str, ...], novel: tuple[str, ...]) -> tuple[str, ...]:
    """The category names of scenes with this `palette` (plain shapes without one), `novel` checked."""
    unknown = [c for c in palette if c not in PALETTE]
    if unknown:
        raise UsageError(f"Unknown scene colours {unknown}; valid colours are: {', '.join(PALETTE)}.")
    names = palette_classes(palette) if palette else SCENE_CLASSES
    missing = [c for c in novel if c not in names]
    if missing:
        raise UsageError(f"Novel categories {missing} are not scene categories ({', '.join(names)}).")
    return names


def _annotation(ann_id: int, image_id: int, cls: int, mask: np.ndarray) -> dict[str, Any]:
    """The COCO annotation of one object's visible mask: its extent as the box, the mask as RLE."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cls + 1,
        "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
        "area": int(mask.sum()),
        "segmentation": _rle(mask),
        "iscrowd": 0,
    }


def scenes_seed(domain: str, split: str) -> int:
    """The fixed seed of one split of one domain (part of the dataset's definition)."""
    digest = hashlib.sha256(f"bob.scenes/{domain}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@lru_cache(maxsize=8)
def _cached(
    n: int, size: int, domain: str, split: str, palette: tuple[str, ...] = (), novel: tuple[str, ...] = ()
) -> tuple[np.ndarray, str]:
    seed = scenes_seed(domain, split) if not palette else scenes_seed(f"{domain}/{'-'.join(palette)}", split)
    images, coco = generate_scenes(n, size=size, domain=domain, seed=seed, palette=palette, novel=novel)
    images.setflags(write=False)
    return images, json.dumps(coco)


def load_scenes(
    info: DatasetInfo,
    split: str,
    *,
    root: Path | None = None,
    download: bool = False,
    train_domain: str = "texture",
    test_domain: str = "texture",
    n_train: int = 1000,
    n_test: int = 200,
    size: int = 128,
    palette: tuple[str, ...] = (),
    novel: tuple[str, ...] = (),
) -> DetectionSplit:
    """Catalog loader: `train` scenes of `train_domain`, `test` scenes of `test_domain`; `root` is unused."""
    plan = {"train": (n_train, train_domain), "test": (n_test, test_domain)}
    if split not in plan:
        raise UsageError(f"Dataset '{info.name}' has no split '{split}'; its splits are: train, test.")
    n, domain = plan[split]
    images, coco_json = _cached(n, size, domain, split, tuple(palette), tuple(novel))
    return DetectionSplit(info.name, split, json.loads(coco_json), arrays=images.copy())


def write_coco(split: DetectionSplit, out_dir: Path, annotation_name: str = "instances.json") -> Path:
    """Write a split as `out_dir/images/<file_name>` PNGs plus `out_dir/annotations/<annotation_name>`."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    for i in range(len(split)):
        split.image(i).save(out_dir / "images" / split.image_info(i)["file_name"])
    path = out_dir / "annotations" / annotation_name
    path.write_text(json.dumps(split.coco))
    return path
