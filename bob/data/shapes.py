"""`shapes`: ten coloured shape classes drawn procedurally, in five visual domains.

One shape per image at a random position, size, rotation and colour, so the label is carried by the
outline alone. The same classes render in every domain (plain, texture, cartoon, sketch, noise), which
makes the generator a domain-generalisation and OOD source as well as a small classification set.
Everything is a pure function of the seed (`numpy.random.default_rng`), so nothing needs caching on
disk. Shapes are rasterised at 4× and box-filtered down, which anti-aliases edges without any
dependency beyond PIL.
"""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bob.data.base import ArraySplit, DatasetInfo
from bob.errors import UsageError

SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "hexagon",
    "ring",
    "diamond",
    "arrow",
    "heart",
)
DOMAINS: tuple[str, ...] = ("plain", "texture", "cartoon", "sketch", "noise")
# CC0 / public-domain images bundled in the scikit-image wheel (no network needed).
TEXTURE_SOURCES: tuple[str, ...] = (
    "brick",
    "grass",
    "gravel",
    "camera",
    "coffee",
    "chelsea",
    "astronaut",
    "rocket",
)

_SUPERSAMPLE = 4
_RADIUS_RANGE = (0.22, 0.40)  # shape radius as a fraction of the image size
_RING_HOLE = 0.6  # inner radius of `ring`: a band of 0.4·r stays visible even at the smallest size
_DIAMOND_ASPECT = 0.5  # rhombus of 53°/127°, clearly not a (90°) square even as a thin outline


def _regular(k: int, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _star() -> np.ndarray:
    pts = _regular(10, -np.pi / 2)
    pts[1::2] *= 0.4
    return pts


def _cross(half_width: float = 0.35) -> np.ndarray:
    w = half_width
    quarter = [(w, w), (w, 1.0), (-w, 1.0)]
    pts = []
    for k in range(4):  # the same three corners turned by 90° four times
        c, s = np.cos(k * np.pi / 2), np.sin(k * np.pi / 2)
        pts += [(c * x - s * y, s * x + c * y) for x, y in quarter]
    return np.array(pts)


def _arrow() -> np.ndarray:
    return np.array([(-1, -0.22), (0.15, -0.22), (0.15, -0.6), (1, 0), (0.15, 0.6), (0.15, 0.22), (-1, 0.22)])


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], axis=1)


def _normalised(polys: list[np.ndarray]) -> list[np.ndarray]:
    """Centre on the bounding box and scale so the farthest vertex sits at radius 1.

    Together with the sampled centre range this is what keeps every shape inside the image.
    """
    allpts = np.concatenate(polys)
    centre = (allpts.min(axis=0) + allpts.max(axis=0)) / 2
    scale = np.linalg.norm(allpts - centre, axis=1).max()
    return [(p - centre) / scale for p in polys]


def _unit_shapes() -> dict[str, list[np.ndarray]]:
    """Each class as closed polygons in unit coordinates: the outer boundary first, then holes."""
    circle = _regular(48)
    return {
        name: _normalised(polys)
        for name, polys in {
            "circle": [circle],
            "square": [_regular(4, np.pi / 4)],  # axis-aligned before the random rotation
            "triangle": [_regular(3, -np.pi / 2)],
            "star": [_star()],
            "cross": [_cross()],
            "hexagon": [_regular(6)],
            "ring": [circle, _RING_HOLE * circle[::-1]],
            "diamond": [np.array([(0.0, -1.0), (_DIAMOND_ASPECT, 0.0), (0.0, 1.0), (-_DIAMOND_ASPECT, 0.0)])],
            "arrow": [_arrow()],
            "heart": [_heart()],
        }.items()
    }


_UNIT_SHAPES = _unit_shapes()


def _place(polys: list[np.ndarray], centre: np.ndarray, radius: float, angle: float) -> list[list[tuple]]:
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    k = _SUPERSAMPLE
    return [[tuple(v) for v in ((p @ rot.T) * radius + centre) * k] for p in polys]


def _mask(polys_px: list[list[tuple]], size: int, outline: float | None) -> np.ndarray:
    """Coverage in [0, 1] of a filled shape (holes cleared) or of its outline of `outline` pixels."""
    canvas = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    if outline is None:
        draw.polygon(polys_px[0], fill=255)
        for hole in polys_px[1:]:
            draw.polygon(hole, fill=0)
    else:
        width = max(1, round(outline * _SUPERSAMPLE))
        for poly in polys_px:
            # Repeat the first two vertices so the closing corner gets a rounded joint too.
            draw.line([*poly, poly[0], poly[1]], fill=255, width=width, joint="curve")
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)[..., None] / 255.0


@lru_cache(maxsize=1)
def _textures() -> tuple[np.ndarray, ...]:
    import skimage.data  # a few MB of sample images, loaded once per process

    out = []
    for name in TEXTURE_SOURCES:
        img = np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)
        out.append(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3])
    return tuple(out)


def skimage_photo(name: str) -> Image.Image:
    """One of scikit-image's bundled photos (`skimage.data.<name>`) as RGB; greyscale ones are tripled."""
    import skimage.data

    array = getattr(skimage.data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8), mode="RGB")


def _bg_plain(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.zeros((size, size, 3), np.float32)


def _bg_sketch(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.full((size, size, 3), 255.0, np.float32)


def _bg_cartoon(rng: np.random.Generator, size: int) -> np.ndarray:
    colour = rng.integers(150, 256, size=3).astype(np.float32)
    return np.broadcast_to(colour, (size, size, 3)).copy()


def _bg_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    noise = Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8), mode="RGB")
    return np.asarray(noise.filter(ImageFilter.GaussianBlur(radius=1)), dtype=np.float32)


def _bg_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    textures = _textures()
    src = textures[int(rng.integers(len(textures)))]
    h, w = src.shape[:2]
    # A crop of random scale, so one source gives both fine and coarse texture at `size`.
    short = min(h, w)
    low = min(size, short)
    side = int(rng.integers(low, min(short, max(low, short // 2)) + 1))
    y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = Image.fromarray(np.ascontiguousarray(src[y : y + side, x : x + side]), mode="RGB")
    return np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


_BACKGROUNDS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "plain": _bg_plain,
    "texture": _bg_texture,
    "cartoon": _bg_cartoon,
    "sketch": _bg_sketch,
    "noise": _bg_noise,
}


def _fill_colour(hsv: np.ndarray, domain: str) -> np.ndarray:
    """Saturated colours that stand out: bright on dark/busy backgrounds, darker on light cartoon ones."""
    h, s, v = hsv
    value = 0.35 + 0.4 * v if domain == "cartoon" else 0.7 + 0.3 * v
    return np.array(colorsys.hsv_to_rgb(h, 0.6 + 0.4 * s, value), np.float32) * 255.0


def _check_args(n: int, size: int, domain: str, n_classes: int) -> None:
    if domain not in DOMAINS:
        raise UsageError(f"Unknown shapes domain '{domain}'; valid domains are: {', '.join(DOMAINS)}.")
    if not 1 <= n_classes <= len(SHAPE_CLASSES):
        raise UsageError(f"n_classes must be between 1 and {len(SHAPE_CLASSES)}, got {n_classes}.")
    if size < 16:
        raise UsageError(f"size must be at least 16 pixels, got {size}.")
    if n < 0:
        raise UsageError(f"n must be non-negative, got {n}.")


def generate_shapes(
    n: int, *, size: int = 64, domain: str = "plain", seed: int = 0, n_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (uint8, N×size×size×3) of one shape each, and their int64 labels.

    Labels index `SHAPE_CLASSES[:n_classes]` and are balanced (a shuffled tiling of the classes).
    Same arguments, same bytes.
    """
    _check_args(n, size, domain, n_classes)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.resize(np.arange(n_classes, dtype=np.int64), n))
    radii = rng.uniform(*_RADIUS_RANGE, size=n) * size
    angles = rng.uniform(0.0, 2 * np.pi, size=n)
    # The margin covers the sketch outline's half-width plus one anti-aliased pixel.
    margin = max(2.0, size / 32)
    centres = radii[:, None] + margin + rng.random((n, 2)) * (size - 2 * (radii[:, None] + margin))
    hsv = rng.random((n, 3))
    outline = max(1.0, size / 32)
    background = _BACKGROUNDS[domain]
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        polys = _place(_UNIT_SHAPES[SHAPE_CLASSES[labels[i]]], centres[i], radii[i], angles[i])
        canvas = background(rng, size)
        if domain == "sketch":
            ink = _mask(polys, size, outline)
            canvas *= 1.0 - ink  # black ink on white
        else:
            fill = _mask(polys, size, None)
            canvas = canvas * (1.0 - fill) + _fill_colour(hsv[i], domain) * fill
            if domain == "cartoon":
                canvas *= 1.0 - _mask(polys, size, outline * 0.75)
        images[i] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return images, labels


def split_seed(domain: str, split: str) -> int:
    """The fixed generation seed of one split of one domain (part of the dataset's definition).

    Derived by hashing, so train and test (and every domain) draw from unrelated streams.
    """
    digest = hashlib.sha256(f"bob.shapes/{domain}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@lru_cache(maxsize=16)
def _split_arrays(domain: str, split: str, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = generate_shapes(n, size=size, domain=domain, seed=split_seed(domain, split))
    # Shared between loads through the cache, so nobody may write into them.
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_shapes(
    info: DatasetInfo,
    split: str,
    *,
    root: Path | None = None,
    download: bool = False,
    domain: str = "plain",
    n_train: int = 2000,
    n_test: int = 1000,
    size: int = 64,
) -> ArraySplit:
    """Catalog loader: `train` (n_train) or `test` (n_test) images of one domain; `root` is unused."""
    counts = {"train": n_train, "test": n_test}
    if split not in counts:
        raise UsageError(f"Dataset '{info.name}' has no split '{split}'; its splits are: train, test.")
    images, labels = _split_arrays(domain, split, counts[split], size)
    # A private copy per split (cheap next to generating), so consumers may write into it like any array.
    return ArraySplit(info.name, split, SHAPE_CLASSES, images.copy(), labels.copy())
