"""`moving-sprites`: short generated videos whose label is the sprite's motion.

Eight classes in four pairs that differ only by the direction of time: right / left, down / up,
clockwise / counter-clockwise rotation, grow / shrink. Every frame of a clip from class `2k` is a
frame of some clip from class `2k + 1` played backwards, so any clip feature that ignores frame
order (the mean of per-frame features) cannot tell a pair apart; an order-aware one can.

Each clip: one sprite (an asymmetric subset of the `bob.data.shapes` outlines) in a saturated
colour on a static background of a `bob.data.shapes` domain (by default `cartoon`: a flat light
colour per clip; `texture`, CC0 photo crops, makes a much harder set),
`num_frames` frames of `height × width` pixels, wider than tall so that the three spatial crops of
multi-view testing differ. The motion spans the whole clip: translations cover 45 % of the frame,
rotations turn 0.15 rad a frame, sizes go from 0.6× to 1.4× the base radius. Everything is a pure
function of the seed, so the set is regenerated instead of stored.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from bob.data.base import DatasetInfo
from bob.data.shapes import _BACKGROUNDS, _UNIT_SHAPES, _fill_colour, _mask, _place
from bob.errors import UsageError

MOTION_CLASSES: tuple[str, ...] = (
    "move-right",
    "move-left",
    "move-down",
    "move-up",
    "rotate-clockwise",
    "rotate-counterclockwise",
    "grow",
    "shrink",
)
# Outlines whose rotation is visible frame to frame (no symmetry under small turns).
SPRITES: tuple[str, ...] = ("triangle", "star", "cross", "arrow", "heart", "diamond")
TRAVEL = 0.45  # translation over the clip, as a fraction of the frame side it moves along
TURN = 0.15  # rad per frame
SCALE_RANGE = (0.6, 1.4)  # radius at the first and last frame of `grow`, relative to the base
BASE_RADIUS = 0.16  # base radius as a fraction of the frame height


def _trajectory(
    cls: int, t: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame (dx, dy) offsets from the centre, rotation and radius scale for motion class `cls`.

    `t` runs from -0.5 to 0.5 over the clip; reversing it turns every class into its partner.
    """
    zeros = np.zeros_like(t)
    sign = 1.0 if cls % 2 == 0 else -1.0
    frames = np.arange(len(t)) - (len(t) - 1) / 2
    kind = cls // 2
    dx = sign * TRAVEL * width * t if kind == 0 else zeros
    dy = sign * TRAVEL * height * t if kind == 1 else zeros
    angle = sign * TURN * frames if kind == 2 else zeros
    lo, hi = SCALE_RANGE
    scale = (lo + hi) / 2 + sign * (hi - lo) * t if kind == 3 else np.ones_like(t)
    return np.stack([dx, dy], axis=1), angle, scale


def _clip(
    rng: np.random.Generator, cls: int, num_frames: int, height: int, width: int, domain: str
) -> np.ndarray:
    """One clip, uint8 [T, H, W, 3]. Rendered on a width × width canvas, of which the middle rows are kept."""
    background = _BACKGROUNDS[domain](rng, width)
    top = (width - height) // 2
    sprite = _UNIT_SHAPES[SPRITES[int(rng.integers(len(SPRITES)))]]
    colour = _fill_colour(rng.random(3), domain)
    radius = BASE_RADIUS * height
    jitter = rng.uniform(-0.05, 0.05, size=2) * np.array([width, height])
    start_angle = rng.uniform(0, 2 * np.pi)
    t = np.linspace(-0.5, 0.5, num_frames)
    offsets, angles, scales = _trajectory(cls, t, height, width)
    centre = np.array([width / 2, top + height / 2]) + jitter
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        polys = _place(sprite, centre + offsets[i], radius * scales[i], start_angle + angles[i])
        fill = _mask(polys, width, None)
        canvas = background * (1.0 - fill) + colour * fill
        frames[i] = np.clip(np.rint(canvas[top : top + height]), 0, 255).astype(np.uint8)
    return frames


def generate_moving_sprites(
    n: int,
    *,
    num_frames: int = 24,
    height: int = 64,
    width: int = 80,
    domain: str = "cartoon",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """`n` clips (uint8 N×T×H×W×3) and their balanced int64 motion labels. Same arguments, same bytes."""
    if domain not in _BACKGROUNDS:
        raise UsageError(f"Unknown sprites domain '{domain}'; valid domains are: {', '.join(_BACKGROUNDS)}.")
    if n < 0 or num_frames < 2 or height < 16 or width < height:
        raise UsageError(
            f"moving sprites need n >= 0, num_frames >= 2, height >= 16 and width >= height "
            f"(got {n}, {num_frames}, {height}, {width})."
        )
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.resize(np.arange(len(MOTION_CLASSES), dtype=np.int64), n))
    clips = np.empty((n, num_frames, height, width, 3), np.uint8)
    for i in range(n):
        clips[i] = _clip(rng, int(labels[i]), num_frames, height, width, domain)
    return clips, labels


def split_seed(domain: str, split: str) -> int:
    """The fixed generation seed of one split (part of the dataset's definition)."""
    digest = hashlib.sha256(f"bob.moving_sprites/{domain}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@lru_cache(maxsize=4)
def _split_arrays(domain: str, split: str, n: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    clips, labels = generate_moving_sprites(
        n, num_frames=num_frames, domain=domain, seed=split_seed(domain, split)
    )
    clips.setflags(write=False)
    labels.setflags(write=False)
    return clips, labels


def load_moving_sprites(
    info: DatasetInfo,
    split: str,
    *,
    root: Path | None = None,
    download: bool = False,
    domain: str = "cartoon",
    n_train: int = 320,
    n_test: int = 160,
    num_frames: int = 24,
):
    """Catalog loader: `train` (n_train) or `test` (n_test) clips; `root` is unused."""
    from bob.data.video import ArrayVideoSplit

    counts = {"train": n_train, "test": n_test}
    if split not in counts:
        raise UsageError(f"Dataset '{info.name}' has no split '{split}'; its splits are: train, test.")
    clips, labels = _split_arrays(domain, split, counts[split], num_frames)
    return ArrayVideoSplit(info.name, split, MOTION_CLASSES, clips, labels.copy())
