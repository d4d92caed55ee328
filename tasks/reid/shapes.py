"""`shapes-reid`: a synthetic person re-ID set — shape "figures" seen by fixed, differing cameras.

An **identity** is a fixed figure: a small head disc over a torso shape and a legs shape (each one of
the ten shape classes of bob.data.shapes, with its own colour and orientation), an optional emblem of a
third shape and colour on the torso, and a body scale. A **camera** is a fixed view transform: a
background domain (plain, texture, noise, cartoon), an RGB colour cast, a figure scale, a blur and a
mirror flip. Every image of an identity in a camera adds jitter (position, size, small rotations, hue
and brightness), so two images are never the same.

Splits follow Market-1501: train and test identities are disjoint; for every test identity and camera
the first image is a query and the others go to the gallery, which also holds distractor figures with
person id 0 (identities seen nowhere else). Person ids start at 1; cameras are 0-based. A pure function
of a fixed seed, so the pixels (and the fingerprints) never change. A second domain (`shapes-reid-b`)
draws other identities and sees them through other cameras, for cross-domain runs (train on one,
evaluate on the other, as Market→Duke).
"""

from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from bob.data.base import DatasetInfo
from bob.data.relevance import mark_queries
from bob.data.shapes import _BACKGROUNDS, _UNIT_SHAPES, SHAPE_CLASSES, _mask, _place
from bob.errors import UsageError
from bob.tasks.reid.data import DISTRACTOR_PID, REID_SPLITS, ReidArraySplit


@dataclass(frozen=True)
class Camera:
    background: str  # a bob.data.shapes background domain
    gain: tuple[float, float, float]  # RGB colour cast
    scale: float  # figure size relative to the identity's own
    blur: float  # Gaussian blur radius in pixels at 64 px
    flip: bool  # seen from the other side


CAMERAS: tuple[Camera, ...] = (
    Camera("plain", (1.0, 1.0, 1.0), 1.0, 0.0, False),
    Camera("texture", (1.15, 1.0, 0.8), 0.85, 0.6, True),
    Camera("noise", (0.8, 0.95, 1.2), 0.95, 1.0, False),
    Camera("cartoon", (0.9, 0.9, 0.9), 0.78, 0.0, True),
    Camera("texture", (1.0, 1.15, 0.9), 1.05, 1.2, False),
    Camera("plain", (1.2, 1.1, 1.0), 0.8, 0.4, True),
)
_FIGURE_HEIGHT = 0.95  # figure height (0.9·s) as a share of the image, before scale factors
_BG_CONTRAST = 0.2  # backgrounds muted around mid-grey: clutter, not the main signal
_SKIN = np.array([225.0, 190.0, 160.0], np.float32)


@dataclass(frozen=True)
class Identity:
    torso: int  # shape class indices
    legs: int
    emblem: int | None
    hues: tuple[float, float, float]  # torso, legs, emblem
    angles: tuple[float, float]  # torso, legs orientation (radians)
    scale: float


def _identity(rng: np.random.Generator) -> Identity:
    n = len(SHAPE_CLASSES)
    emblem = int(rng.integers(n)) if rng.random() < 0.5 else None
    return Identity(
        torso=int(rng.integers(n)),
        legs=int(rng.integers(n)),
        emblem=emblem,
        hues=tuple(float(h) for h in rng.random(3)),
        angles=tuple(float(a) for a in rng.uniform(0, 2 * np.pi, 2)),
        scale=float(rng.uniform(0.9, 1.1)),
    )


def _colour(hue: float, brightness: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, 0.85, 0.9 * brightness), np.float32) * 255.0


def _paint(
    canvas: np.ndarray,
    shape: int,
    centre: tuple[float, float],
    radius: float,
    angle: float,
    colour: np.ndarray,
) -> np.ndarray:
    cover = _mask(
        _place(_UNIT_SHAPES[SHAPE_CLASSES[shape]], np.asarray(centre), radius, angle), len(canvas), None
    )
    return canvas * (1.0 - cover) + colour * cover


def render(person: Identity, camera: Camera, rng: np.random.Generator, size: int) -> np.ndarray:
    """One jittered view of `person` through `camera`, uint8 [size, size, 3]."""
    s = _FIGURE_HEIGHT * size * person.scale * camera.scale * rng.uniform(0.92, 1.08)
    r_head, r_torso, r_legs = 0.07 * s, 0.2 * s, 0.2 * s
    cx = size / 2 + rng.uniform(-0.05, 0.05) * size
    top = (size - 0.9 * s) / 2 + rng.uniform(-0.04, 0.04) * size  # the figure is 0.9·s tall
    y_torso = top + 2 * r_head + 0.8 * r_torso
    y_legs = y_torso + r_torso + 0.8 * r_legs
    jitter = rng.uniform(-0.15, 0.15, 3)
    hue_shift = rng.uniform(-0.02, 0.02)
    light = rng.uniform(0.85, 1.1)
    canvas = _BACKGROUNDS[camera.background](rng, size)
    canvas = 128.0 + _BG_CONTRAST * (canvas - 128.0)
    canvas = _paint(canvas, 0, (cx, top + r_head), r_head, 0.0, _SKIN)  # shape 0 is the circle
    canvas = _paint(
        canvas,
        person.legs,
        (cx, y_legs),
        r_legs,
        person.angles[1] + jitter[1],
        _colour(person.hues[1] + hue_shift, light),
    )
    canvas = _paint(
        canvas,
        person.torso,
        (cx, y_torso),
        r_torso,
        person.angles[0] + jitter[0],
        _colour(person.hues[0] + hue_shift, light),
    )
    if person.emblem is not None:
        canvas = _paint(
            canvas,
            person.emblem,
            (cx + 0.25 * r_torso, y_torso),
            0.45 * r_torso,
            jitter[2],
            _colour(person.hues[2], 1.0),
        )
    canvas = np.clip(canvas * np.asarray(camera.gain, np.float32) * rng.uniform(0.9, 1.1), 0, 255)
    img = Image.fromarray(np.rint(canvas).astype(np.uint8), mode="RGB")
    if camera.flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if camera.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(radius=camera.blur * size / 64))
    return np.asarray(img, dtype=np.uint8)


@dataclass(frozen=True)
class ReidShapesConfig:
    train_ids: int = 48
    test_ids: int = 48
    cameras: int = 4
    first_camera: int = 0  # cameras used: CAMERAS[first_camera : first_camera + cameras]
    domain: str = "a"  # part of the seed: another domain draws other identities
    per_camera: int = 3  # images per identity per camera
    distractors: int = 48
    size: int = 64

    def check(self) -> None:
        if self.cameras < 1 or self.first_camera < 0 or self.first_camera + self.cameras > len(CAMERAS):
            raise UsageError(
                f"shapes-reid has {len(CAMERAS)} camera views; cameras={self.cameras} from "
                f"first_camera={self.first_camera} does not fit."
            )
        if self.per_camera < 2 or self.train_ids < 1 or self.test_ids < 1 or self.distractors < 0:
            raise UsageError(
                "shapes-reid needs ≥1 train and test identity, ≥2 images per camera, ≥0 distractors."
            )
        if self.size < 32:
            raise UsageError(f"size must be at least 32 pixels, got {self.size}.")


def reid_shapes_seed(domain: str = "a") -> int:
    """The fixed generation seed of a domain (part of the dataset's definition)."""
    tag = "bob.shapes-reid" if domain == "a" else f"bob.shapes-reid/{domain}"
    return int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "little")


def generate_reid_shapes(
    cfg: ReidShapesConfig, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{split: (images, pids, camids)} for train, query and gallery (see the module docstring)."""
    cfg.check()
    rng = np.random.default_rng(seed)
    people = [_identity(rng) for _ in range(cfg.train_ids + cfg.test_ids + cfg.distractors)]
    out: dict[str, list[tuple[np.ndarray, int, int]]] = {name: [] for name in ("train", "query", "gallery")}
    for index, person in enumerate(people[: cfg.train_ids + cfg.test_ids]):
        pid = index + 1
        for cam in range(cfg.cameras):
            for k in range(cfg.per_camera):
                image = render(person, CAMERAS[cfg.first_camera + cam], rng, cfg.size)
                split = "train" if pid <= cfg.train_ids else ("query" if k == 0 else "gallery")
                out[split].append((image, pid, cam))
    for person in people[cfg.train_ids + cfg.test_ids :]:
        cam = int(rng.integers(cfg.cameras))
        view = CAMERAS[cfg.first_camera + cam]
        out["gallery"].append((render(person, view, rng, cfg.size), DISTRACTOR_PID, cam))
    return {
        name: (
            np.stack([r[0] for r in rows]),
            np.array([r[1] for r in rows], np.int64),
            np.array([r[2] for r in rows], np.int64),
        )
        for name, rows in out.items()
    }


@lru_cache(maxsize=4)
def _arrays(cfg: ReidShapesConfig) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    arrays = generate_reid_shapes(cfg, reid_shapes_seed(cfg.domain))
    for triple in arrays.values():
        for array in triple:
            array.setflags(write=False)
    return arrays


def load_reid_shapes(
    info: DatasetInfo, split: str, *, root: Path | None = None, download: bool = False, **options: int
) -> ReidArraySplit:
    """Catalog loader: `train`, or `test` = queries then gallery; `options` are ReidShapesConfig fields."""
    if split not in REID_SPLITS:
        raise UsageError(
            f"Dataset '{info.name}' has no split '{split}'; its splits are: {', '.join(REID_SPLITS)}."
        )
    arrays = _arrays(ReidShapesConfig(**options))
    if split == "train":
        return ReidArraySplit(info.name, split, *(a.copy() for a in arrays["train"]))
    images, pids, camids = (np.concatenate([arrays["query"][i], arrays["gallery"][i]]) for i in range(3))
    return mark_queries(ReidArraySplit(info.name, split, images, pids, camids), len(arrays["query"][1]))
