"""The retrieval suite's own datasets on disk: revisited Oxford/Paris and INRIA Copydays.

Each loader returns the one split these sets have, `test`: the queries first, then the database,
marked with `bob.data.relevance.mark_queries` and, where the set brings them, its relevance
judgements.

**Revisited Oxford and Paris** (ROxford5k, RParis6k; Radenović et al., CVPR 2018), laid out under the
data root as the revisitop download script leaves it:

    <root>/roxford5k/gnd_roxford5k.pkl      <root>/rparis6k/gnd_rparis6k.pkl
    <root>/roxford5k/jpg/<name>.jpg         <root>/rparis6k/jpg/<name>.jpg

The pickle holds `imlist` (database names), `qimlist` (query names) and `gnd`: per query its `bbx`
(x1, y1, x2, y2) and the database indices that are `easy`, `hard` and `junk`. The split holds the 70
queries, cropped to their box as the standard protocol does, followed by the database
(`CroppedFileSplit.variant` gives whole-image queries, as BoB used, and BoB's 224 px thumbnails). bob scores
the Medium protocol: easy + hard are relevant, junk is ignored.

**INRIA Copydays** (Jégou et al., 2008) as copy detection: originals are the queries, their copies the
database. Layout under the data root (the official archives extracted side by side):

    <root>/copydays/original/<block><00>.jpg        157 originals, e.g. 200000.jpg
    <root>/copydays/strong/<block><nn>.jpg          strong attacks (print-scan, paint, …), e.g. 200001.jpg
    <root>/copydays/jpegqual/<quality>/<name>.jpg   JPEG re-encodes, named like their original
    <root>/copydays/crops/<percent>/<name>.jpg      crops, named like their original

The split holds the originals (the queries) followed by every image outside `original/` (the
database); its group is the first four characters of its file name (Copydays' block id), and a
query's relevant items are the copies of its own block. Any subset of the variant folders works; a
variant whose block has no original is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from bob.data.base import DatasetInfo, FileSplit
from bob.data.relevance import RETRIEVAL_SPLIT, RelevanceJudgements, mark_queries
from bob.data.safe_pickle import safe_load_file
from bob.errors import DatasetNotFoundError, UsageError

# ------------------------------------------------------------------------ revisited Oxford / Paris

MEDIUM = "revisited Oxford/Paris Medium protocol: easy + hard relevant, junk ignored"


class CroppedFileSplit(FileSplit):
    """Files cropped to their box (x1, y1, x2, y2 in pixels; a NaN row = whole image), then, with
    `thumbnail`, shrunk to fit a `thumbnail` px square (PIL's `Image.thumbnail`, Lanczos, aspect kept,
    never enlarged). Boxes and the thumbnail size are fingerprinted."""

    def __init__(
        self,
        dataset: str,
        split: str,
        classes: Sequence[str],
        root: Path,
        paths: list[Path],
        labels: np.ndarray,
        boxes: np.ndarray,
        thumbnail: int | None = None,
    ) -> None:
        super().__init__(dataset, split, classes, root, paths, labels)
        self.boxes = np.asarray(boxes, dtype=np.float64)
        self.thumbnail = thumbnail

    def image(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as img:
            rgb = img.convert("RGB")
        box = self.boxes[index]
        out = rgb if np.isnan(box).any() else rgb.crop(tuple(box))
        if self.thumbnail is not None:
            out.thumbnail((self.thumbnail, self.thumbnail), Image.Resampling.LANCZOS)
        return out

    def _identity_chunks(self) -> list[bytes]:
        chunks = [*super()._identity_chunks(), self.boxes.tobytes()]
        # only when set, so the fingerprints (and feature-cache keys) of earlier splits stay the same
        return chunks if self.thumbnail is None else [*chunks, f"thumbnail={self.thumbnail}".encode()]

    def variant(self, crop_queries: bool, thumbnail: int | None) -> CroppedFileSplit:
        """The same images with the queries cropped to their boxes or whole, and an optional thumbnail;
        the query marks and judgements carry over."""
        boxes = self.boxes if crop_queries else np.full_like(self.boxes, np.nan)
        out = CroppedFileSplit(
            self.dataset, self.split, self.classes, self.root, self.paths, self.labels, boxes, thumbnail
        )
        out.num_queries = getattr(self, "num_queries", None)
        out.judgements = getattr(self, "judgements", None)
        return out


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
        # A pickle from the data root can name any global: read it with the restricted unpickler
        # (plain data and numpy arrays only), never `pickle.load`, so a crafted file runs nothing.
        cfg = safe_load_file(gnd_file, encoding="latin1")
        if not isinstance(cfg, dict):
            raise TypeError(f"it holds a {type(cfg).__name__}, not a dict")
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


# ------------------------------------------------------------------------------------------ Copydays

BLOCK_CHARS = 4


def _jpgs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))


def load_copydays(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> FileSplit:
    """The `test` split: originals (queries), then every copy; labels = the original's index (its block)."""
    if download:
        raise UsageError(
            "bob does not download Copydays; extract its archives as described in docs/suites/retrieval.md."
        )
    if split != RETRIEVAL_SPLIT:
        raise UsageError(
            f"Dataset '{info.name}' has no split '{split}'; its only split is {RETRIEVAL_SPLIT}."
        )
    folder = Path(root) / "copydays"
    originals = _jpgs(folder / "original") if (folder / "original").is_dir() else []
    if not originals:
        raise DatasetNotFoundError(
            f"Dataset 'copydays' was not found: bob looked for {folder / 'original'}/*.jpg (the originals) and "
            "copy folders such as strong/, jpegqual/<q>/ and crops/<p>/ next to it. Extract the Copydays "
            "archives there and point bob at the folder that holds 'copydays/' with `--task-arg root=DIR` "
            "or the BOB_DATA_ROOT environment variable."
        )
    blocks = [p.stem[:BLOCK_CHARS] for p in originals]
    if len(set(blocks)) != len(blocks):
        raise UsageError(
            f"{folder / 'original'}: two originals share a block id (first {BLOCK_CHARS} characters)."
        )
    copies = [p for p in _jpgs(folder) if p.relative_to(folder).parts[0] != "original"]
    if not copies:
        raise DatasetNotFoundError(
            f"Dataset 'copydays': {folder} holds originals but no copies; expected strong/, jpegqual/<q>/ "
            "or crops/<p>/ folders of .jpg files."
        )
    index = {b: i for i, b in enumerate(blocks)}
    orphans = [p for p in copies if p.stem[:BLOCK_CHARS] not in index]
    if orphans:
        raise UsageError(
            f"Dataset 'copydays': {len(orphans)} copies belong to no original, e.g. {orphans[0]} (block "
            f"'{orphans[0].stem[:BLOCK_CHARS]}'). Add the missing originals or remove those files."
        )
    labels = [*range(len(originals)), *(index[p.stem[:BLOCK_CHARS]] for p in copies)]
    out = FileSplit(info.name, split, blocks, folder, originals + copies, np.array(labels, dtype=np.int64))
    return mark_queries(out, len(originals))
