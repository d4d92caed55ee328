"""The video-cls datasets: the generated `moving-sprites` clips, and real videos read from the data root.

**moving-sprites**: short generated videos whose label is the sprite's motion.

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

**Real video sets** (Kinetics, UCF-101, HMDB-51), read from the data root in one of two layouts under
`<root>/<subdir>/`:
  - split folders: `<split dir>/<class>/<video>.mp4|avi|mkv|webm|mov` (Kinetics as the usual download
    scripts leave it; bob's `test` split reads `val/` for Kinetics);
  - official split lists, used when `splits/` exists: the videos as `videos/<class>/<video>`, and
    UCF-101's `splits/classInd.txt`, `splits/trainlist0N.txt`, `splits/testlist0N.txt`, or HMDB-51's
    `splits/<class>_test_splitN.txt` (one `<video> <1|2|0>` line per video: train, test, unused).
Every listed or found file must exist, every class must have a video and no split may be empty; the
error names the path and the layout bob expected. Decodability is checked before training by
`VideoSplit.check_readable`.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from bob.data.base import DatasetInfo
from bob.data.shapes import _BACKGROUNDS, _UNIT_SHAPES, _fill_colour, _mask, _place
from bob.data.video import VIDEO_EXTENSIONS, ArrayVideoSplit, FileVideoSplit
from bob.errors import DatasetNotFoundError, UsageError

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
) -> ArrayVideoSplit:
    """Catalog loader: `train` (n_train) or `test` (n_test) clips; `root` is unused."""
    counts = {"train": n_train, "test": n_test}
    if split not in counts:
        raise UsageError(f"Dataset '{info.name}' has no split '{split}'; its splits are: train, test.")
    clips, labels = _split_arrays(domain, split, counts[split], num_frames)
    return ArrayVideoSplit(info.name, split, MOTION_CLASSES, clips, labels.copy())


# ------------------------------------------------------------------------------------ real videos

FOLDER_LAYOUT = "<split>/<class>/<video>.mp4|avi (one folder per class)"
UCF_LAYOUT = (
    "videos/<class>/<video>.avi plus splits/classInd.txt, splits/trainlist0N.txt, splits/testlist0N.txt"
)
HMDB_LAYOUT = "videos/<class>/<video>.avi plus splits/<class>_test_splitN.txt"


def _missing(info: DatasetInfo, path: Path, expects: str, detail: str = "") -> DatasetNotFoundError:
    extra = f" ({detail})" if detail else ""
    return DatasetNotFoundError(
        f"Dataset '{info.name}' not found at {path}{extra}. bob expects {expects} there. Put the data "
        "in that layout under the data root (--task-arg root=DIR or $BOB_DATA_ROOT); see docs/suites/video-cls.md."
    )


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def _split_or_fail(
    info: DatasetInfo, split: str, base: Path, classes: list[str], paths: list[Path], labels: list[int]
) -> FileVideoSplit:
    if not paths:
        raise UsageError(f"Dataset '{info.name}': split '{split}' under {base} has no videos.")
    return FileVideoSplit(info.name, split, classes, base, paths, np.asarray(labels, np.int64))


def _from_split_folders(
    info: DatasetInfo, split: str, base: Path, split_dirs: dict[str, str]
) -> FileVideoSplit:
    folder = base / split_dirs.get(split, split)
    expects = FOLDER_LAYOUT.replace("<split>", folder.name)
    if not folder.is_dir():
        raise _missing(info, folder, expects)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not class_dirs:
        raise _missing(info, folder, expects, "it has no class folder")
    paths, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        videos = _videos_in(class_dir)
        if not videos:
            raise UsageError(
                f"Dataset '{info.name}': class folder {class_dir} has no video ({', '.join(VIDEO_EXTENSIONS)})."
            )
        paths += videos
        labels += [label] * len(videos)
    return _split_or_fail(info, split, base, [d.name for d in class_dirs], paths, labels)


def _read_lines(path: Path, info: DatasetInfo, expects: str) -> list[list[str]]:
    if not path.is_file():
        raise _missing(info, path, expects, "split list missing")
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _listed(info: DatasetInfo, base: Path, rel: str, where: Path) -> Path:
    path = base / "videos" / rel
    if not path.is_file():
        raise UsageError(f"Dataset '{info.name}': {where} lists {rel}, but {path} does not exist.")
    return path


def _from_ucf_lists(info: DatasetInfo, split: str, base: Path, fold: int) -> FileVideoSplit:
    splits = base / "splits"
    index = _read_lines(splits / "classInd.txt", info, UCF_LAYOUT)
    classes = [name for _, name in sorted((int(parts[0]), parts[1]) for parts in index)]
    label_of = {name: i for i, name in enumerate(classes)}
    listing = splits / f"{'trainlist' if split == 'train' else 'testlist'}{fold:02d}.txt"
    paths, labels = [], []
    for parts in _read_lines(listing, info, UCF_LAYOUT):
        rel = parts[0]
        name = rel.split("/")[0]
        if name not in label_of:
            raise UsageError(
                f"Dataset '{info.name}': {listing} lists {rel}, whose class '{name}' is not in classInd.txt."
            )
        paths.append(_listed(info, base, rel, listing))
        labels.append(label_of[name])
    return _split_or_fail(info, split, base, classes, paths, labels)


def _from_hmdb_lists(info: DatasetInfo, split: str, base: Path, fold: int) -> FileVideoSplit:
    suffix = f"_test_split{fold}.txt"
    lists = sorted((base / "splits").glob(f"*{suffix}"))
    if not lists:
        raise _missing(info, base / "splits", HMDB_LAYOUT, f"no *{suffix}")
    wanted = "1" if split == "train" else "2"
    classes = [p.name[: -len(suffix)] for p in lists]
    paths, labels = [], []
    for label, listing in enumerate(lists):
        for parts in _read_lines(listing, info, HMDB_LAYOUT):
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise UsageError(f"Dataset '{info.name}': malformed line '{' '.join(parts)}' in {listing}.")
            if parts[1] == wanted:
                paths.append(_listed(info, base, f"{classes[label]}/{parts[0]}", listing))
                labels.append(label)
    return _split_or_fail(info, split, base, classes, paths, labels)


_SPLIT_LISTS = {"ucf101": _from_ucf_lists, "hmdb51": _from_hmdb_lists}


def load_video_folder(
    info: DatasetInfo,
    split: str,
    *,
    root: Path,
    download: bool = False,
    subdir: str,
    split_dirs: dict[str, str] | None = None,
    split_lists: str | None = None,
    fold: int = 1,
) -> FileVideoSplit:
    """Catalog loader for real video sets: split lists when `splits/` exists, else split folders."""
    if download:
        raise UsageError(
            f"bob cannot download '{info.name}' (its videos come from the authors' sites or YouTube); "
            "fetch them yourself and lay them out as docs/suites/video-cls.md describes."
        )
    base = Path(root) / subdir
    if not base.is_dir():
        layouts = (
            FOLDER_LAYOUT
            if split_lists is None
            else f"{FOLDER_LAYOUT}, or {UCF_LAYOUT if split_lists == 'ucf101' else HMDB_LAYOUT}"
        )
        raise _missing(info, base, layouts)
    if split_lists is not None and (base / "splits").is_dir():
        return _SPLIT_LISTS[split_lists](info, split, base, fold)
    return _from_split_folders(info, split, base, split_dirs or {})
