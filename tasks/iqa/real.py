"""Real IQA datasets, read from their released label files under the data root.

Layouts (ROOT is `--task-arg root=...`, else $BOB_DATA_ROOT, else ~/.cache/bob/data):

    koniq10k   ROOT/koniq10k/koniq10k_scores_and_distributions.csv   (columns image_name, MOS)
               ROOT/koniq10k/1024x768/<image_name>
               optional: ROOT/koniq10k/koniq10k_distributions_sets.csv (adds a `set` column:
               training / validation / test) -> the official split (train = training, test = test)
    kadid10k   ROOT/kadid10k/dmos.csv                                (columns dist_img, ref_img, dmos)
               ROOT/kadid10k/images/<dist_img> and <ref_img>
    live       ROOT/live/live.csv                                    (columns dist_img, ref_img, dmos;
               optional distortion) with paths relative to ROOT/live/
    tid2013    ROOT/tid2013/mos_with_names.txt                      (lines "<MOS> <file name>")
               ROOT/tid2013/distorted_images/<file name>, ROOT/tid2013/reference_images/I<xx>.BMP

Score direction: bob's scores are higher = better. KonIQ MOS (1-5 ACR), KADID-10k "dmos" (1-5 DCR,
5 = imperceptible, so higher is better despite its name) and TID2013 MOS (0-9) are kept as they
are; LIVE's DMOS (higher = worse) is negated.

Splits: the content-disjoint seeded 80/20 split by reference image (`data.content_partition`, seed 0)
for the full-reference sets; KonIQ uses its official split when the sets file is present, else the
same seeded 80/20 over images. Every file named by a label file is checked before anything runs.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from bob.data.base import DatasetInfo, FileSplit
from bob.errors import DatasetNotFoundError, UsageError
from bob.tasks.iqa.data import IQASplit, pick_split

LAYOUT_DOC = "docs/suites/iqa.md"


class LabelFileError(UsageError):
    """An IQA label file that is empty, lacks a column, has a non-numeric score or names no image."""


def _require(path: Path, what: str, layout: str) -> Path:
    if not path.exists():
        raise DatasetNotFoundError(
            f"{what} not found: {path}. Expected layout: {layout} (see {LAYOUT_DOC}). Real IQA sets are "
            "not downloaded by bob; fetch them from their authors' pages."
        )
    return path


def read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV file that must have `columns`; empty files and missing columns are errors."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise LabelFileError(
                f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'no header'}. "
                f"Expected columns: {', '.join(columns)}."
            )
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise LabelFileError(f"{path}: no data rows.")
    return rows


def parse_scores(values: list[str], path: Path, column: str) -> np.ndarray:
    out = np.empty(len(values), np.float64)
    for i, value in enumerate(values):
        try:
            out[i] = float(value)
        except ValueError:
            raise LabelFileError(f"{path}: row {i + 1}: {column} '{value}' is not a number.") from None
    if not np.isfinite(out).all():
        raise LabelFileError(f"{path}: column {column} holds non-finite values.")
    return out


def check_files(paths: list[Path], label_file: Path, layout: str) -> None:
    missing = [p for p in dict.fromkeys(paths) if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        raise DatasetNotFoundError(
            f"{len(missing)} image(s) named in {label_file} are missing, e.g. {shown}. "
            f"Expected layout: {layout} (see {LAYOUT_DOC})."
        )


def _refuse_download(info: DatasetInfo, download: bool) -> None:
    if download:
        raise UsageError(
            f"{info.name} cannot be downloaded by bob; fetch it from {info.source} and lay it out as "
            f"described in {LAYOUT_DOC}."
        )


def _types(names: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    classes = tuple(sorted(set(names)))
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.asarray([index[n] for n in names], np.int64)


def full_reference_split(
    info: DatasetInfo,
    base: Path,
    dist: list[Path],
    refs: list[Path],
    scores: np.ndarray,
    types: list[str],
    note: str,
) -> IQASplit:
    """An IQASplit over every row: references de-duplicated, content = reference."""
    ref_paths = list(dict.fromkeys(refs))
    ref_id = {p: i for i, p in enumerate(ref_paths)}
    ref_index = np.asarray([ref_id[p] for p in refs], np.int64)
    classes, labels = _types(types)
    references = FileSplit(info.name, "references", ["reference"], base, ref_paths, np.zeros(len(ref_paths)))
    return IQASplit(
        info.name,
        "all",
        FileSplit(info.name, "all", classes, base, dist, labels),
        scores,
        classes=classes,
        labels=labels,
        content=ref_index,
        references=references,
        ref_index=ref_index,
        score_note=note,
    )


def load_kadid(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> IQASplit:
    _refuse_download(info, download)
    base = root / "kadid10k"
    layout = f"{base}/dmos.csv (columns dist_img, ref_img, dmos) and {base}/images/"
    label_file = _require(base / "dmos.csv", "KADID-10k label file", layout)
    rows = read_csv(label_file, ("dist_img", "ref_img", "dmos"))
    dist = [base / "images" / r["dist_img"] for r in rows]
    refs = [base / "images" / r["ref_img"] for r in rows]
    check_files(dist + refs, label_file, layout)
    scores = parse_scores([r["dmos"] for r in rows], label_file, "dmos")
    # I01_03_02.png: reference 01, distortion type 03, level 02.
    types = [
        f"type{r['dist_img'].split('_')[1]}" if r["dist_img"].count("_") >= 2 else "unknown" for r in rows
    ]
    note = "KADID-10k 'dmos' (DCR 1-5, 5 = imperceptible); higher = better, used as is"
    return pick_split(full_reference_split(info, base, dist, refs, scores, types, note), split)


def load_live(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> IQASplit:
    _refuse_download(info, download)
    base = root / "live"
    layout = (
        f"{base}/live.csv (columns dist_img, ref_img, dmos; optional distortion), paths relative to {base}/"
    )
    label_file = _require(base / "live.csv", "LIVE label file", layout)
    rows = read_csv(label_file, ("dist_img", "ref_img", "dmos"))
    dist = [base / r["dist_img"] for r in rows]
    refs = [base / r["ref_img"] for r in rows]
    check_files(dist + refs, label_file, layout)
    scores = -parse_scores([r["dmos"] for r in rows], label_file, "dmos")
    types = [r.get("distortion") or Path(r["dist_img"]).parent.name or "unknown" for r in rows]
    note = "LIVE DMOS negated (DMOS: higher = worse); higher = better"
    return pick_split(full_reference_split(info, base, dist, refs, scores, types, note), split)


_TID_NAME = re.compile(r"^i(\d\d)_(\d\d)_(\d)\.bmp$", re.IGNORECASE)


def load_tid2013(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> IQASplit:
    _refuse_download(info, download)
    base = root / "tid2013"
    layout = (
        f"{base}/mos_with_names.txt (lines '<MOS> <name>'), {base}/distorted_images/, "
        f"{base}/reference_images/I<xx>.BMP"
    )
    label_file = _require(base / "mos_with_names.txt", "TID2013 label file", layout)
    dist_dir = _require(base / "distorted_images", "TID2013 image folder", layout)
    ref_dir = _require(base / "reference_images", "TID2013 reference folder", layout)
    lines = [line.split() for line in label_file.read_text().splitlines() if line.strip()]
    if not lines:
        raise LabelFileError(f"{label_file}: no data rows.")
    bad = [i + 1 for i, parts in enumerate(lines) if len(parts) != 2 or not _TID_NAME.match(parts[1])]
    if bad:
        raise LabelFileError(
            f"{label_file}: line {bad[0]} is not '<MOS> i<ref>_<type>_<level>.bmp' ({len(bad)} bad line(s))."
        )
    # The release mixes upper- and lower-case file names: match them case-insensitively.
    on_disk = {p.name.lower(): p for d in (dist_dir, ref_dir) for p in d.iterdir()}
    matches = [_TID_NAME.match(parts[1]) for parts in lines]
    dist_names = [parts[1].lower() for parts in lines]
    ref_names = [f"i{m.group(1)}.bmp" for m in matches]
    missing = [n for n in dict.fromkeys(dist_names + ref_names) if n not in on_disk]
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} image(s) named in {label_file} are missing, e.g. {', '.join(missing[:5])}. "
            f"Expected layout: {layout} (see {LAYOUT_DOC})."
        )
    scores = parse_scores([parts[0] for parts in lines], label_file, "MOS")
    dist = [on_disk[n] for n in dist_names]
    refs = [on_disk[n] for n in ref_names]
    types = [f"type{m.group(2)}" for m in matches]
    note = "TID2013 MOS (0-9); higher = better, used as is"
    return pick_split(full_reference_split(info, base, dist, refs, scores, types, note), split)


_KONIQ_SETS = {"train": "training", "test": "test"}


def load_koniq(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> IQASplit:
    _refuse_download(info, download)
    base = root / "koniq10k"
    layout = f"{base}/koniq10k_scores_and_distributions.csv (columns image_name, MOS) and {base}/1024x768/"
    sets_file = base / "koniq10k_distributions_sets.csv"
    official = sets_file.is_file()
    label_file = (
        sets_file
        if official
        else _require(base / "koniq10k_scores_and_distributions.csv", "KonIQ-10k label file", layout)
    )
    rows = read_csv(label_file, ("image_name", "MOS", "set") if official else ("image_name", "MOS"))
    paths = [base / "1024x768" / r["image_name"] for r in rows]
    check_files(paths, label_file, layout)
    scores = parse_scores([r["MOS"] for r in rows], label_file, "MOS")
    labels = np.zeros(len(rows), np.int64)
    full = IQASplit(
        info.name,
        "all",
        FileSplit(info.name, "all", ["authentic"], base, paths, labels),
        scores,
        classes=("authentic",),
        labels=labels,
        content=np.arange(len(rows)),
        score_note="KonIQ-10k MOS (ACR 1-5); higher = better, used as is",
    )
    sets = None
    if official:
        values = np.asarray([r["set"] for r in rows])
        sets = {s: np.flatnonzero(values == name) for s, name in _KONIQ_SETS.items()}
        if not all(len(v) for v in sets.values()):
            raise LabelFileError(f"{label_file}: column set has no 'training' or no 'test' rows.")
    return pick_split(full, split, sets)
