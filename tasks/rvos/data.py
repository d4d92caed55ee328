"""Referring-video splits: videos, per-frame object-id masks and referring expressions.

An `RvosSplit` is an `ImageSplit` whose samples are videos (`image(i)` is the middle frame of video
`i`, so image-only tooling still works). `frames(v)` gives uint8 [T, H, W, 3], `masks(v)` uint8
[T, H, W] whose pixel values are object ids (0 = background, as in DAVIS / YouTube-VOS palette
PNGs), and `expressions` lists (video, object id, text): each expression refers to one object.

Two sources:
  - `referring-sprites` (generated): `generate_referring_sprites` draws 2-3 sprites per video, each a
    distinct (named colour, shape) pair from the detection scenes' `PALETTE` × `SCENE_CLASSES`,
    moving in a straight line (bouncing off the borders) and turning slowly over `num_frames`
    frames; later sprites hide earlier ones, so masks are the visible extent. One expression per
    object, "the <colour> <shape>"; two sprites of a video may share a colour or a shape, never
    both. A pure function of the seed.
  - Ref-YouTube-VOS / Ref-DAVIS17 in ReferFormer's layout (`load_referring_layout`):
        ROOT/<subdir>/<split>/JPEGImages/<video>/<frame>.jpg
        ROOT/<subdir>/<split>/Annotations/<video>/<frame>.png      (palette PNG, value = object id)
        ROOT/<subdir>/meta_expressions/<split>/meta_expressions.json
    with meta_expressions.json = {"videos": {<video>: {"frames": [<frame>, ...],
    "expressions": {<key>: {"exp": <text>, "obj_id": "<id>"}}}}}.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bob.data.base import DatasetInfo, ImageSplit
from bob.data.scenes import HUE_JITTER, PALETTE, SCENE_CLASSES
from bob.data.shapes import _BACKGROUNDS, _UNIT_SHAPES, _fill_colour, _mask, _place
from bob.errors import DatasetNotFoundError, UsageError
from bob.progress import progress_bar

TRAVEL = (0.15, 0.4)  # distance a sprite moves over the clip, as a fraction of the frame side
RADIUS = (0.12, 0.2)  # sprite radius as a fraction of the frame side
SPIN = 0.1  # rad per frame, either way
MIN_VISIBLE = 12  # pixels: a sprite hidden below this in every frame is not referred to


@dataclass(frozen=True)
class Expression:
    video: int
    obj_id: int
    text: str


class RvosSplit(ImageSplit):
    """Videos with object-id masks and referring expressions (in memory)."""

    def __init__(
        self,
        dataset: str,
        split: str,
        names: list[str],
        frames: np.ndarray | None,
        masks: np.ndarray | None,
        expressions: list[Expression],
    ) -> None:
        super().__init__(dataset, split, (), np.zeros(len(names), np.int64))
        self.names = list(names)
        self._frames, self._masks = frames, masks
        self.expressions = list(expressions)

    def frames(self, video: int, window: slice = slice(None)) -> np.ndarray:
        """uint8 [T, H, W, 3] of `video` (only the frames in `window`)."""
        return self._frames[video][window]

    def masks(self, video: int, window: slice = slice(None)) -> np.ndarray:
        """uint8 [T, H, W] object ids of `video` (only the frames in `window`)."""
        return self._masks[video][window]

    def num_frames(self, video: int) -> int:
        return len(self._frames[video])

    def frame_sizes(self, video: int) -> list[tuple[int, int]]:
        """(H, W) of every frame of `video`, without decoding pixels where it can."""
        return [tuple(self._frames[video].shape[1:3])] * self.num_frames(video)

    def image(self, index: int) -> Image.Image:
        frames = self.frames(index)
        return Image.fromarray(frames[len(frames) // 2], mode="RGB")

    def _identity_chunks(self) -> list[bytes]:
        exps = json.dumps([(e.video, e.obj_id, e.text) for e in self.expressions]).encode()
        return [exps, str(self._frames.shape).encode(), self._frames.tobytes(), self._masks.tobytes()]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "num_videos": len(self), "num_expressions": len(self.expressions)}


class FileRvosSplit(RvosSplit):
    """Videos as JPEG frames plus palette-PNG masks on disk; identified by relative path and size."""

    def __init__(
        self,
        dataset: str,
        split: str,
        root: Path,
        names: list[str],
        files: list[list[tuple[Path, Path]]],
        expressions: list[Expression],
    ) -> None:
        super().__init__(dataset, split, names, None, None, expressions)
        self.root, self.files = Path(root), files

    def num_frames(self, video: int) -> int:
        return len(self.files[video])

    def frame_sizes(self, video: int) -> list[tuple[int, int]]:
        sizes = []
        for jpg, _ in self.files[video]:
            with Image.open(jpg) as img:  # reads the header only
                sizes.append((img.height, img.width))
        return sizes

    def frames(self, video: int, window: slice = slice(None)) -> np.ndarray:
        out = []
        for jpg, _ in self.files[video][window]:
            with Image.open(jpg) as img:
                out.append(np.asarray(img.convert("RGB")))
        return np.stack(out)

    def masks(self, video: int, window: slice = slice(None)) -> np.ndarray:
        out = []
        for _, png in self.files[video][window]:
            with Image.open(png) as img:
                if img.mode not in ("P", "L"):
                    raise UsageError(f"Mask {png} is a {img.mode} image; expected a palette (P) or grey PNG.")
                mask = np.asarray(img)
            out.append(mask)
        shapes = {m.shape for m in out}
        if len(shapes) != 1:
            raise UsageError(f"Masks of video '{self.names[video]}' differ in size: {sorted(shapes)}.")
        return np.stack(out)

    def _identity_chunks(self) -> list[bytes]:
        exps = json.dumps([(e.video, e.obj_id, e.text) for e in self.expressions]).encode()
        chunks = [exps]
        for video in self.files:
            for jpg, png in video:
                for p in (jpg, png):
                    chunks.append(f"{p.relative_to(self.root)}\x1f{p.stat().st_size}\x1e".encode())
        return chunks


def validate_split(split: RvosSplit, where: str) -> dict[str, int]:
    """Check every video's frames and masks agree and every expression's object appears; counts."""
    if len(split) == 0 or not split.expressions:
        raise UsageError(f"{where}: split '{split.split}' has no videos or no expressions.")
    present: dict[int, set[int]] = {}
    frames = 0
    with progress_bar(f"checking {split.dataset}/{split.split}", len(split), "videos") as bar:
        for v in range(len(split)):
            sizes, m = split.frame_sizes(v), split.masks(v)
            if len(sizes) != len(m) or any(s != m.shape[1:3] for s in sizes):
                raise UsageError(
                    f"{where}: video '{split.names[v]}' has frames of sizes {sorted(set(sizes))} but masks "
                    f"{m.shape}; every frame needs a mask of its size."
                )
            present[v] = {int(i) for i in np.unique(m)} - {0}
            frames += len(sizes)
            bar.advance(1)
    for e in split.expressions:
        if not 0 <= e.video < len(split) or e.obj_id not in present[e.video]:
            name = split.names[e.video] if 0 <= e.video < len(split) else e.video
            raise UsageError(
                f"{where}: expression '{e.text}' refers to object {e.obj_id} of video '{name}', "
                "which appears in none of its masks."
            )
    return {"videos": len(split), "frames": frames, "expressions": len(split.expressions)}


# ------------------------------------------------------------------------------------------ generated


def _combos() -> list[tuple[str, str]]:
    return [(c, s) for s in SCENE_CLASSES for c in PALETTE]


def _video(
    rng: np.random.Generator, size: int, num_frames: int, domain: str, combos: list[tuple[str, str]]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    background = _BACKGROUNDS[domain](rng, size)
    picks = rng.choice(len(combos), size=int(rng.integers(2, 4)), replace=False)
    t = np.arange(num_frames) / max(num_frames - 1, 1)
    frames = np.repeat(background[None], num_frames, axis=0).astype(np.float32)
    labels = np.zeros((num_frames, size, size), np.uint8)
    for obj_id, pick in enumerate(picks, start=1):
        colour, shape = combos[pick]
        radius = rng.uniform(*RADIUS) * size
        lo, hi = radius, size - radius
        start = lo + rng.random(2) * (hi - lo)
        heading = rng.uniform(0, 2 * np.pi)
        path = start + np.outer(t, [np.cos(heading), np.sin(heading)]) * rng.uniform(*TRAVEL) * size
        path = lo + np.abs((path - lo + (hi - lo)) % (2 * (hi - lo)) - (hi - lo))  # bounce off borders
        angle0, spin = rng.uniform(0, 2 * np.pi), rng.uniform(-SPIN, SPIN)
        hue = (PALETTE[colour] + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1.0
        fill = _fill_colour(np.array([hue, *rng.random(2)]), domain)
        for i in range(num_frames):
            cover = _mask(_place(_UNIT_SHAPES[shape], path[i], radius, angle0 + spin * i), size, None)
            frames[i] = frames[i] * (1.0 - cover) + fill * cover
            labels[i][cover[..., 0] >= 0.5] = obj_id
    texts = [f"the {combos[p][0]} {combos[p][1]}" for p in picks]
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8), labels, texts


def generate_referring_sprites(
    n: int, *, size: int = 64, num_frames: int = 5, domain: str = "cartoon", seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[Expression]]:
    """`n` videos (uint8 N×T×size×size×3), object-id masks (uint8 N×T×size×size) and expressions."""
    if domain not in _BACKGROUNDS:
        raise UsageError(f"Unknown sprites domain '{domain}'; valid domains are: {', '.join(_BACKGROUNDS)}.")
    if n < 1 or num_frames < 2 or size < 32:
        raise UsageError(
            f"referring sprites need n >= 1, num_frames >= 2 and size >= 32 (got {n}, {num_frames}, {size})."
        )
    rng = np.random.default_rng(seed)
    combos = _combos()
    frames = np.empty((n, num_frames, size, size, 3), np.uint8)
    masks = np.empty((n, num_frames, size, size), np.uint8)
    expressions = []
    for v in range(n):
        frames[v], masks[v], texts = _video(rng, size, num_frames, domain, combos)
        for obj_id, text in enumerate(texts, start=1):
            if (masks[v] == obj_id).sum() >= MIN_VISIBLE:
                expressions.append(Expression(v, obj_id, text))
    return frames, masks, expressions


def sprites_seed(domain: str, split: str) -> int:
    digest = hashlib.sha256(f"bob.referring_sprites/{domain}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@lru_cache(maxsize=4)
def _cached(
    n: int, size: int, num_frames: int, domain: str, split: str
) -> tuple[np.ndarray, np.ndarray, tuple[Expression, ...]]:
    frames, masks, exps = generate_referring_sprites(
        n, size=size, num_frames=num_frames, domain=domain, seed=sprites_seed(domain, split)
    )
    frames.setflags(write=False)
    masks.setflags(write=False)
    return frames, masks, tuple(exps)


def load_referring_sprites(
    info: DatasetInfo,
    split: str,
    *,
    root: Path | None = None,
    download: bool = False,
    domain: str = "cartoon",
    n_train: int = 40,
    n_test: int = 20,
    size: int = 64,
    num_frames: int = 5,
) -> RvosSplit:
    """Catalog loader: `train` / `test` videos, each split from its own fixed seed; `root` is unused."""
    counts = {"train": n_train, "test": n_test}
    if split not in counts:
        raise UsageError(f"Dataset '{info.name}' has no split '{split}'; its splits are: train, test.")
    frames, masks, exps = _cached(counts[split], size, num_frames, domain, split)
    names = [f"{split}-{v:04d}" for v in range(len(frames))]
    return RvosSplit(info.name, split, names, frames, masks, list(exps))


# ----------------------------------------------------------------------------------------------- real

LAYOUT_HINT = (
    "expected ROOT/{sub}/{split}/JPEGImages/<video>/<frame>.jpg, ROOT/{sub}/{split}/Annotations/<video>/"
    "<frame>.png and ROOT/{sub}/meta_expressions/{split}/meta_expressions.json (see docs/suites/rvos.md)"
)


def load_referring_layout(
    info: DatasetInfo,
    split: str,
    *,
    root: Path,
    download: bool = False,
    subdir: str,
    splits: dict[str, str],
) -> RvosSplit:
    """Catalog loader for ReferFormer's Ref-YouTube-VOS / Ref-DAVIS17 layout; every file is checked."""
    if split not in splits:
        raise UsageError(
            f"Dataset '{info.name}' has no split '{split}'; its splits are: {', '.join(splits)}."
        )
    if download:
        raise UsageError(f"{info.name} cannot be downloaded by bob; fetch it from {info.source}.")
    real = splits[split]
    hint = LAYOUT_HINT.format(sub=subdir, split=real)
    base = Path(root) / subdir
    meta_path = base / "meta_expressions" / real / "meta_expressions.json"
    if not meta_path.is_file():
        raise DatasetNotFoundError(f"{info.name}: missing {meta_path}; {hint}.")
    try:
        videos = json.loads(meta_path.read_text())["videos"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UsageError(f"{meta_path} is not a meta_expressions file with a 'videos' object: {err}") from err
    names, files, expressions = [], [], []
    for name in sorted(videos):
        entry = videos[name]
        pairs = []
        for frame in entry.get("frames", []):
            jpg = base / real / "JPEGImages" / name / f"{frame}.jpg"
            png = base / real / "Annotations" / name / f"{frame}.png"
            for path in (jpg, png):
                if not path.is_file():
                    raise DatasetNotFoundError(f"{info.name}: missing {path}; {hint}.")
            pairs.append((jpg, png))
        if not pairs:
            raise UsageError(f"{meta_path}: video '{name}' lists no frames.")
        for key, exp in sorted(entry.get("expressions", {}).items()):
            try:
                expressions.append(Expression(len(names), int(exp["obj_id"]), str(exp["exp"])))
            except (KeyError, ValueError, TypeError) as err:
                raise UsageError(f"{meta_path}: expression {key} of '{name}' is malformed: {err}") from err
        names.append(name)
        files.append(pairs)
    if not names:
        raise UsageError(f"{meta_path} lists no videos.")
    return FileRvosSplit(info.name, split, base, names, files, expressions)
