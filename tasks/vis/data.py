"""Video instance segmentation splits: clips plus per-frame instance masks with track ids.

A `VisSplit` is a `VideoSplit` (so `frames(i)` gives video `i` as uint8 [T, H, W, 3]) that also holds,
per video, its tracks: a category index and one RLE mask (or None) per frame. `gt()` is the split
in the YouTube-VIS JSON shape that `bob.tasks.vis.metrics` scores against.

Two sources:
  - `vis-sprites*` (generated): 2-4 sprites of a few shape classes, each in a random colour, moving on
    straight bouncing paths over a flat background and occluding each other in a fixed depth order;
    an instance's mask is its visible pixels (possibly empty in a frame where it is hidden). A pure
    function of the seed; fingerprinted by pixels and masks.
  - real YouTube-VIS 2019/2021 and OVIS JSON (`load_ytvis_split`), frames read from JPEG files.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from bob.data.base import DatasetInfo
from bob.data.shapes import _BACKGROUNDS, _UNIT_SHAPES, _fill_colour, _mask, _place
from bob.data.video import VideoSplit
from bob.errors import DatasetNotFoundError, UsageError

SPRITE_CLASSES: tuple[str, ...] = ("triangle", "star", "heart")


class VisAnnotationError(UsageError):
    """A YouTube-VIS / OVIS annotation file that cannot be used as it is."""


class VisSplit(VideoSplit):
    """Videos with instance tracks; `tracks[i]` is a list of (category index, [RLE | None per frame])."""

    def __init__(
        self,
        dataset: str,
        split: str,
        classes: tuple[str, ...],
        tracks: list[list[tuple[int, list[Any]]]],
        sizes: list[tuple[int, int, int]],
        clips: np.ndarray | None = None,
        files: list[list[Path]] | None = None,
        root: Path | None = None,
    ) -> None:
        super().__init__(dataset, split, classes, np.array([len(t) for t in tracks], np.int64))
        if (clips is None) == (files is None):
            raise ValueError("a VisSplit holds either in-memory clips or frame files")
        self.tracks, self.sizes, self.clips, self.files, self.root = tracks, sizes, clips, files, root

    def frames(self, index: int) -> np.ndarray:
        if self.clips is not None:
            return self.clips[index]
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in self.files[index]])

    def masks(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(category indexes [K], bool masks [K, T, H, W]) of video `index`."""
        t, h, w = self.sizes[index]
        tracks = self.tracks[index]
        out = np.zeros((len(tracks), t, h, w), bool)
        for k, (_, segs) in enumerate(tracks):
            for f, seg in enumerate(segs):
                if seg is not None:
                    out[k, f] = mask_util.decode(seg).astype(bool)
        return np.array([c for c, _ in tracks], np.int64), out

    def gt(self) -> dict[str, Any]:
        """The split's ground truth as YouTube-VIS JSON (video ids 1..N, category ids 1..K)."""
        videos = [
            {"id": i + 1, "length": t, "height": h, "width": w} for i, (t, h, w) in enumerate(self.sizes)
        ]
        anns = []
        for i, tracks in enumerate(self.tracks):
            for cat, segs in tracks:
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "video_id": i + 1,
                        "category_id": cat + 1,
                        "segmentations": segs,
                        "iscrowd": 0,
                    }
                )
        cats = [{"id": k + 1, "name": name} for k, name in enumerate(self.classes)]
        return {"videos": videos, "categories": cats, "annotations": anns}

    def num_tracks(self) -> int:
        return sum(len(t) for t in self.tracks)

    def _identity_chunks(self) -> list[bytes]:
        chunks = [
            json.dumps(
                [[c, [s if s is None else s["counts"].decode() for s in segs]] for c, segs in t]
            ).encode()
            for t in self.tracks
        ]
        if self.clips is not None:
            return [*chunks, str(self.clips.shape).encode(), np.ascontiguousarray(self.clips).tobytes()]
        return chunks + [
            f"{p.relative_to(self.root).as_posix()}\x1f{p.stat().st_size}\x1e".encode()
            for fs in self.files
            for p in fs
        ]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "num_tracks": self.num_tracks(),
            "frames": int(sum(s[0] for s in self.sizes)),
        }


# ---------------------------------------------------------------------------------------- generated


def _encode(mask: np.ndarray) -> dict[str, Any] | None:
    if not mask.any():
        return None
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def _video(rng: np.random.Generator, num_frames: int, size: int) -> tuple[np.ndarray, list]:
    background = _BACKGROUNDS["cartoon"](rng, size)
    count = int(rng.integers(2, 5))
    sprites = []
    for _ in range(count):
        cls = int(rng.integers(len(SPRITE_CLASSES)))
        radius = rng.uniform(0.12, 0.2) * size
        pos = rng.uniform(radius, size - radius, 2)
        vel = rng.uniform(-0.08, 0.08, 2) * size
        sprites.append(
            (cls, radius, pos, vel, rng.uniform(0, 2 * np.pi), _fill_colour(rng.random(3), "cartoon"))
        )
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    visible = np.zeros((count, num_frames, size, size), bool)
    for f in range(num_frames):
        canvas = background.copy()
        owner = np.full((size, size), -1)
        for k, (cls, radius, pos, vel, angle, colour) in enumerate(sprites):  # later sprites are in front
            p = pos + vel * f
            p = np.abs((p - radius) % (2 * (size - 2 * radius)))  # bounce off the borders
            p = np.where(p > size - 2 * radius, 2 * (size - 2 * radius) - p, p) + radius
            fill = _mask(_place(_UNIT_SHAPES[SPRITE_CLASSES[cls]], p, radius, angle), size, None)
            canvas = canvas * (1.0 - fill) + colour * fill
            owner[fill[..., 0] >= 0.5] = k
        frames[f] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        for k in range(count):
            visible[k, f] = owner == k
    tracks = [(s[0], [_encode(visible[k, f]) for f in range(num_frames)]) for k, s in enumerate(sprites)]
    tracks = [t for t in tracks if any(s is not None for s in t[1])]  # fully hidden all clip: not an instance
    return frames, tracks


def generate_vis_sprites(
    n: int, *, num_frames: int = 6, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, list]:
    """`n` clips (uint8 N×T×S×S×3) and their tracks. Same arguments, same bytes."""
    if n < 1 or num_frames < 1 or size < 32:
        raise UsageError(
            f"vis sprites need n >= 1, num_frames >= 1 and size >= 32 (got {n}, {num_frames}, {size})."
        )
    rng = np.random.default_rng(seed)
    clips = np.empty((n, num_frames, size, size, 3), np.uint8)
    tracks = []
    for i in range(n):
        clips[i], t = _video(rng, num_frames, size)
        tracks.append(t)
    return clips, tracks


@lru_cache(maxsize=4)
def _sprite_split(split: str, n: int, num_frames: int, size: int) -> tuple[np.ndarray, list]:
    seed = int.from_bytes(hashlib.sha256(f"bob.vis_sprites/{split}".encode()).digest()[:8], "little")
    clips, tracks = generate_vis_sprites(n, num_frames=num_frames, size=size, seed=seed)
    clips.setflags(write=False)
    return clips, tracks


def load_vis_sprites(
    info: DatasetInfo,
    split: str,
    *,
    root: Path | None = None,
    download: bool = False,
    n_train: int = 64,
    n_test: int = 32,
    num_frames: int = 6,
    size: int = 64,
) -> VisSplit:
    """Catalog loader: `train` or `test` generated clips; `root` is unused."""
    counts = {"train": n_train, "test": n_test}
    if split not in counts:
        raise UsageError(f"Dataset '{info.name}' has no split '{split}'; its splits are: train, test.")
    clips, tracks = _sprite_split(split, counts[split], num_frames, size)
    sizes = [(num_frames, size, size)] * len(clips)
    return VisSplit(info.name, split, SPRITE_CLASSES, tracks, sizes, clips=clips)


# --------------------------------------------------------------------------------------------- real


def load_ytvis_split(dataset: str, split: str, ann_file: Path, frames_dir: Path, hint: str = "") -> VisSplit:
    """A YouTube-VIS 2019/2021 or OVIS annotation file over its frame folder, validated before any training.

    `videos[].file_names` are frame paths relative to `frames_dir`; `annotations[].segmentations` hold one
    RLE (compressed or not), polygon list or None per frame; category ids may be any integers.
    """
    if not ann_file.is_file():
        raise DatasetNotFoundError(f"{dataset}/{split}: annotation file {ann_file} not found. {hint}")
    if not frames_dir.is_dir():
        raise DatasetNotFoundError(f"{dataset}/{split}: frame folder {frames_dir} not found. {hint}")
    data = _read_annotations(ann_file, split, hint)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: k for k, c in enumerate(cats)}
    videos = {v["id"]: v for v in data["videos"]}
    order = list(videos)
    tracks: dict[int, list] = {vid: [] for vid in order}
    for ann in data["annotations"]:
        vid = ann.get("video_id")
        if vid not in videos:
            raise VisAnnotationError(f"{ann_file}: annotation {ann.get('id')} refers to unknown video {vid}.")
        if ann.get("category_id") not in cat_index:
            raise VisAnnotationError(
                f"{ann_file}: annotation {ann.get('id')} has unknown category {ann.get('category_id')}."
            )
        video, segs = videos[vid], ann.get("segmentations")
        h, w, t = int(video["height"]), int(video["width"]), len(video["file_names"])
        if not isinstance(segs, list) or len(segs) != t:
            raise VisAnnotationError(
                f"{ann_file}: annotation {ann.get('id')} needs one segmentation (or null) per frame of video {vid} "
                f"({t}), got {len(segs) if isinstance(segs, list) else type(segs).__name__}."
            )
        if not ann.get("iscrowd", 0):
            tracks[vid].append((cat_index[ann["category_id"]], _rles(segs, h, w)))
    files = [_frame_files(dataset, split, frames_dir, videos[vid]["file_names"], hint) for vid in order]
    sizes = [(len(videos[v]["file_names"]), int(videos[v]["height"]), int(videos[v]["width"])) for v in order]
    names = tuple(c["name"] for c in cats)
    return VisSplit(dataset, split, names, [tracks[v] for v in order], sizes, files=files, root=frames_dir)


def _read_annotations(ann_file: Path, split: str, hint: str) -> dict[str, Any]:
    """The annotation JSON, with its videos, annotations and categories lists present and non-empty."""
    try:
        data = json.loads(ann_file.read_text())
    except (OSError, ValueError) as err:
        raise VisAnnotationError(f"{ann_file}: not readable JSON ({err}).") from err
    for key in ("videos", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise VisAnnotationError(f"{ann_file}: no '{key}' list; expected the YouTube-VIS layout. {hint}")
    if not data["videos"] or not data["categories"]:
        raise VisAnnotationError(f"{ann_file}: no videos or no categories.")
    if not data["annotations"]:
        raise VisAnnotationError(f"{ann_file}: no annotations; the {split} split must be annotated. {hint}")
    return data


def _rles(segs: list[Any], h: int, w: int) -> list[dict[str, Any] | None]:
    """One annotation's per-frame segmentations (None, polygons, RLE) as bytes-counts RLEs or None."""
    rles = []
    for seg in segs:
        if seg is None:
            rles.append(None)
        elif isinstance(seg, list):  # polygons
            rles.append(mask_util.merge(mask_util.frPyObjects(seg, h, w)) if seg else None)
        else:
            rles.append(mask_util.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else _bytes(seg))
    return rles


def _frame_files(dataset: str, split: str, frames_dir: Path, names: list[str], hint: str) -> list[Path]:
    """The frame paths of one video; a missing frame stops the load."""
    paths = [frames_dir / name for name in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{dataset}/{split}: {len(missing)} frame(s) missing, e.g. {missing[0]}. {hint}"
        )
    return paths


def _bytes(seg: dict[str, Any]) -> dict[str, Any]:
    counts = seg["counts"]
    return {
        "size": list(seg["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


def load_ytvis(info: DatasetInfo, split: str, *, root: Path, download: bool = False, subdir: str) -> VisSplit:
    """Catalog loader: ROOT/<subdir>/<split>/instances.json over ROOT/<subdir>/<split>/JPEGImages/."""
    if split not in ("train", "test"):
        raise UsageError(f"Dataset '{info.name}' has no split '{split}'; its splits are: train, test.")
    if download:
        raise UsageError(
            f"{info.name} cannot be downloaded by bob; fetch it from {info.source}. See docs/suites/vis.md."
        )
    base = Path(root) / subdir
    hint = (
        f"Expected layout: {base}/{{train,test}}/instances.json (YouTube-VIS JSON, test annotated) and "
        f"{base}/{{train,test}}/JPEGImages/<video>/<frame>.jpg. See docs/suites/vis.md."
    )
    return load_ytvis_split(
        info.name, split, base / split / "instances.json", base / split / "JPEGImages", hint
    )
