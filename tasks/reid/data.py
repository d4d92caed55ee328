"""Re-ID data: splits that carry identities and cameras, and the Market-1501 / DukeMTMC-reID layouts.

A re-ID dataset (task type "reid") has two splits: `train` (Market/Duke's bounding_box_train/) and
`test`, which holds the queries first (query/) and the gallery after them (bounding_box_test/), the
convention of bob's retrieval sets (`bob.data.relevance.mark_queries`), so one extraction serves both.
Every image has a person id (`pids`, also the split's `labels`) and a 0-based camera id (`camids`); the
suite evaluates queries against the gallery (metrics.py) and trains, if asked, on `train` (train.py).
The generated `shapes-reid` sets live in shapes.py.

Real layouts are read the way torchreid reads them (`torchreid/data/datasets/image/market1501.py`,
`dukemtmcreid.py`): only `*.jpg` files, person and camera parsed from the file name, the camera made
0-based, and Market's junk images (person id -1) dropped, which is what the official evaluation does by
ignoring them. Market's distractors (person id 0000) stay in the gallery as negatives.

Re-ID crops are tall (Market 128×64); bob's transforms are square, so file images are padded to a
square with black borders (centred) before the backbone's eval transform, which keeps the whole person
instead of cropping the head and feet off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from bob.data.base import ArraySplit, DatasetInfo, FileSplit, ImageSplit
from bob.data.relevance import mark_queries
from bob.errors import DatasetNotFoundError, UsageError

REID_SPLITS = ("train", "test")
JUNK_PID = -1  # Market-1501: images the official evaluation ignores
DISTRACTOR_PID = 0  # Market-1501: gallery distractors, kept as negatives


@dataclass(frozen=True)
class ReidLayout:
    """Where a re-ID dataset lives under the data root and how its file names read."""

    folders: tuple[str, ...]  # candidates under the root, first match wins
    pattern: str  # regex with groups (pid, camera) over the file name
    example: str
    num_cameras: int
    subfolders: tuple[tuple[str, str], ...] = (
        ("train", "bounding_box_train"),
        ("query", "query"),
        ("gallery", "bounding_box_test"),
    )  # bob's test split = query, then gallery


LAYOUTS: dict[str, ReidLayout] = {
    "market1501": ReidLayout(
        folders=("market1501/Market-1501-v15.09.15", "market1501", "Market-1501-v15.09.15"),
        pattern=r"^(-1|\d+)_c(\d+)s\d+_\d+_\d+\.jpg$",
        example="0002_c1s1_000451_03.jpg (<pid>_c<cam>s<seq>_<frame>_<idx>.jpg)",
        num_cameras=6,
    ),
    "dukemtmc-reid": ReidLayout(
        folders=("dukemtmc-reid/DukeMTMC-reID", "dukemtmc-reid", "DukeMTMC-reID"),
        pattern=r"^(\d+)_c(\d+)_f\d+\.jpg$",
        example="0001_c2_f0046182.jpg (<pid>_c<cam>_f<frame>.jpg)",
        num_cameras=8,
    ),
}


def _pid_names(pids: np.ndarray) -> list[str]:
    return [f"{int(p):04d}" for p in np.unique(pids)]


class ReidArraySplit(ArraySplit):
    """In-memory re-ID images; `labels` are the person ids, `camids` the 0-based cameras."""

    def __init__(
        self, dataset: str, split: str, images: np.ndarray, pids: ArrayLike, camids: ArrayLike
    ) -> None:
        pids = np.asarray(pids, dtype=np.int64)
        super().__init__(dataset, split, _pid_names(pids), images, pids)
        self.camids = np.asarray(camids, dtype=np.int64)
        if self.camids.shape != self.labels.shape:
            raise ValueError(
                f"{dataset}/{split}: {len(self.camids)} camera ids for {len(self.labels)} images"
            )

    @property
    def pids(self) -> np.ndarray:
        return self.labels

    def _identity_chunks(self) -> list[bytes]:
        return [*super()._identity_chunks(), self.camids.tobytes()]


class ReidFileSplit(FileSplit):
    """Re-ID images as files (pid and camera parsed from the names), padded to a square when read."""

    def __init__(
        self,
        dataset: str,
        split: str,
        root: Path,
        paths: list[Path],
        pids: ArrayLike,
        camids: ArrayLike,
        dropped: int,
    ) -> None:
        pids = np.asarray(pids, dtype=np.int64)
        super().__init__(dataset, split, _pid_names(pids), root, paths, pids)
        self.camids = np.asarray(camids, dtype=np.int64)
        self.junk_dropped = dropped

    @property
    def pids(self) -> np.ndarray:
        return self.labels

    def image(self, index: int) -> Image.Image:
        return pad_to_square(super().image(index))


def pad_to_square(img: Image.Image) -> Image.Image:
    """Centre `img` on a black square canvas whose side is its longer side."""
    side = max(img.size)
    if img.width == img.height:
        return img
    canvas = Image.new("RGB", (side, side))
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return canvas


def num_queries(split: ImageSplit) -> int:
    """How many leading images of a re-ID `test` split are queries (the rest is the gallery)."""
    count = getattr(split, "num_queries", None)
    if count is None:
        raise UsageError(
            f"Dataset '{split.dataset}' split '{split.split}' does not say which images are queries; re-ID "
            "evaluates the `test` split of a re-ID loader (bob.tasks.reid.data), queries first, then the gallery."
        )
    return int(count)


def reid_arrays(split: ImageSplit) -> tuple[np.ndarray, np.ndarray]:
    """(person ids, camera ids) of a re-ID split; a split without cameras is a usage error."""
    camids = getattr(split, "camids", None)
    if camids is None:
        raise UsageError(
            f"Dataset '{split.dataset}' split '{split.split}' has no camera ids: re-ID needs a split from "
            "a re-ID loader (bob.tasks.reid.data), which parses person and camera per image."
        )
    return split.labels, camids


# ------------------------------------------------------------------------------------- real layouts


def find_layout_folder(name: str, layout: ReidLayout, root: Path) -> Path:
    """The folder under `root` holding the three split folders; missing ones are named in the error."""
    needed = [sub for _, sub in layout.subfolders]
    expects = ", ".join(f"{sub}/" for sub in needed)
    for rel in layout.folders:
        folder = root / rel
        if all((folder / sub).is_dir() for sub in needed):
            return folder
    partial = [root / rel for rel in layout.folders if (root / rel).is_dir()]
    if partial:
        folder = partial[0]
        missing = [sub for sub in needed if not (folder / sub).is_dir()]
        raise DatasetNotFoundError(
            f"Dataset '{name}': {folder} exists but lacks {', '.join(m + '/' for m in missing)}. A re-ID "
            f"dataset folder holds {expects} with images named like {layout.example}."
        )
    looked = ", ".join(str(root / rel) for rel in layout.folders)
    raise DatasetNotFoundError(
        f"Dataset '{name}' was not found: bob looked in {looked} for {expects} (images named like "
        f"{layout.example}). Extract the dataset under the data root and point bob at it with "
        "`--task-arg root=DIR` or the BOB_DATA_ROOT environment variable. bob does not download it."
    )


def parse_reid_folder(
    name: str, layout: ReidLayout, folder: Path
) -> tuple[list[Path], np.ndarray, np.ndarray, int]:
    """(paths, pids, 0-based camids, junk images dropped) of one split folder, sorted by file name."""
    pattern = re.compile(layout.pattern)
    paths, pids, camids, dropped = [], [], [], 0
    for path in sorted(folder.glob("*.jpg")):
        match = pattern.match(path.name)
        if match is None:
            raise UsageError(
                f"Dataset '{name}': cannot read person and camera from the file name {path}; expected names "
                f"like {layout.example}."
            )
        pid, cam = int(match.group(1)), int(match.group(2))
        if not 1 <= cam <= layout.num_cameras:
            raise UsageError(
                f"Dataset '{name}': {path} names camera {cam}; this dataset has cameras 1..{layout.num_cameras}."
            )
        if pid == JUNK_PID:
            dropped += 1
            continue
        paths.append(path)
        pids.append(pid)
        camids.append(cam - 1)
    if not paths:
        raise UsageError(
            f"Dataset '{name}': {folder} holds no usable image (*.jpg named like {layout.example}"
            + (f"; {dropped} junk images with person id -1 were dropped)." if dropped else ").")
        )
    return paths, np.asarray(pids, np.int64), np.asarray(camids, np.int64), dropped


def load_reid_layout(
    info: DatasetInfo, split: str, *, root: Path, download: bool = False, layout: str | None = None
) -> ReidFileSplit:
    """Catalog loader for Market-1501 / DukeMTMC-reID folders (see LAYOUTS)."""
    key = layout or info.name
    if key not in LAYOUTS:
        raise UsageError(f"No re-ID layout '{key}'; known layouts: {', '.join(LAYOUTS)}.")
    if download:
        raise UsageError(
            f"bob does not download '{info.name}' (distributed by its authors on request); extract it under "
            "the data root instead."
        )
    spec = LAYOUTS[key]
    if split not in REID_SPLITS:
        raise UsageError(
            f"Dataset '{info.name}' has no split '{split}'; its splits are: {', '.join(REID_SPLITS)}."
        )
    base = find_layout_folder(info.name, spec, Path(root))
    folders = dict(spec.subfolders)
    parts = [parse_reid_folder(info.name, spec, base / folders[name]) for name in _PARTS[split]]
    paths = [path for part in parts for path in part[0]]
    pids, camids = (np.concatenate([part[i] for part in parts]) for i in (1, 2))
    out = ReidFileSplit(info.name, split, base, paths, pids, camids, sum(part[3] for part in parts))
    return mark_queries(out, len(parts[0][0])) if split == "test" else out


_PARTS = {"train": ("train",), "test": ("query", "gallery")}
