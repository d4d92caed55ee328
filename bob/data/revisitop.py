"""Revisited Oxford and Paris (ROxford5k, RParis6k; Radenović et al., CVPR 2018), read from disk.

Layout under the data root, as the revisitop download script leaves it:

    <root>/roxford5k/gnd_roxford5k.pkl      <root>/rparis6k/gnd_rparis6k.pkl
    <root>/roxford5k/jpg/<name>.jpg         <root>/rparis6k/jpg/<name>.jpg

The pickle holds `imlist` (database names), `qimlist` (query names) and `gnd`: per query its `bbx`
(x1, y1, x2, y2) and the database indices that are `easy`, `hard` and `junk`. bob's one split, `test`,
holds the 70 queries, cropped to their box as the standard protocol does, followed by the database.
bob scores the Medium protocol: easy + hard are relevant, junk is ignored.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from bob.data.base import DatasetInfo, FileSplit
from bob.data.relevance import RETRIEVAL_SPLIT, RelevanceJudgements, mark_queries
from bob.errors import DatasetNotFoundError, UsageError

MEDIUM = "revisited Oxford/Paris Medium protocol: easy + hard relevant, junk ignored"


class CroppedFileSplit(FileSplit):
    """Files cropped to their box (x1, y1, x2, y2 in pixels; a NaN row = whole image); boxes are fingerprinted."""

    def __init__(self, dataset, split, classes, root, paths, labels, boxes: np.ndarray) -> None:
        super().__init__(dataset, split, classes, root, paths, labels)
        self.boxes = np.asarray(boxes, dtype=np.float64)

    def image(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as img:
            rgb = img.convert("RGB")
        box = self.boxes[index]
        return rgb if np.isnan(box).any() else rgb.crop(tuple(box))

    def _identity_chunks(self) -> list[bytes]:
        return [*super()._identity_chunks(), self.boxes.tobytes()]


def _read_ground_truth(name: str, folder: Path) -> dict:
    gnd_file = folder / f"gnd_{name}.pkl"
    if not gnd_file.is_file():
        raise DatasetNotFoundError(
            f"Dataset '{name}' was not found: bob looked for {gnd_file} and the images under {folder / 'jpg'}. "
            f"Download gnd_{name}.pkl and the images with the revisitop scripts "
            "(https://github.com/filipradenovic/revisitop), then point bob at the folder that holds "
            f"'{name}/' with `--task-arg root=DIR` or the BOB_DATA_ROOT environment variable."
        )
    try:
        with open(gnd_file, "rb") as f:
            cfg = pickle.load(f)
        missing = [key for key in ("imlist", "qimlist", "gnd") if key not in cfg]
        if missing:
            raise KeyError(", ".join(missing))
    except Exception as exc:
        raise UsageError(
            f"{gnd_file} is not a revisitop ground-truth pickle ({exc}); download it again."
        ) from None
    if len(cfg["gnd"]) != len(cfg["qimlist"]):
        raise UsageError(
            f"{gnd_file}: {len(cfg['gnd'])} ground-truth entries for {len(cfg['qimlist'])} queries."
        )
    return cfg


def _paths(name: str, folder: Path, names: list[str]) -> list[Path]:
    paths = [folder / "jpg" / f"{n}.jpg" for n in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"Dataset '{name}': {len(missing)} of {len(paths)} images listed in gnd_{name}.pkl are missing, "
            f"e.g. {missing[0]}. Download the images into {folder / 'jpg'}."
        )
    return paths


def medium_judgements(gnd: list[dict]) -> RelevanceJudgements:
    """Easy + hard relevant, junk ignored."""
    as_idx = lambda *lists: np.unique(np.concatenate([np.asarray(x, np.int64) for x in lists]))  # noqa: E731
    positives = tuple(as_idx(g["easy"], g["hard"]) for g in gnd)
    junk = tuple(as_idx(g["junk"]) for g in gnd)
    return RelevanceJudgements(positives, junk, MEDIUM)


def load_revisitop(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> FileSplit:
    """The `test` split of roxford5k / rparis6k: cropped queries, then the database, Medium judgements."""
    if download:
        raise UsageError(
            f"bob does not download {info.name}; fetch it with the revisitop scripts "
            "(https://github.com/filipradenovic/revisitop) and point `--task-arg root=DIR` at it."
        )
    if split != RETRIEVAL_SPLIT:
        raise UsageError(
            f"Dataset '{info.name}' has no split '{split}'; its only split is {RETRIEVAL_SPLIT}."
        )
    folder = Path(root) / info.name
    cfg = _read_ground_truth(info.name, folder)
    queries, database = list(cfg["qimlist"]), list(cfg["imlist"])
    names = queries + database
    boxes = np.full((len(names), 4), np.nan)
    try:
        boxes[: len(queries)] = np.array([g["bbx"] for g in cfg["gnd"]], dtype=np.float64).reshape(-1, 4)
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"gnd_{info.name}.pkl: every query needs a 'bbx' of four numbers.") from None
    labels = np.arange(len(names))
    out = CroppedFileSplit(info.name, split, names, folder, _paths(info.name, folder, names), labels, boxes)
    return mark_queries(out, len(queries), medium_judgements(cfg["gnd"]))
