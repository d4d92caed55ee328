"""Real video datasets read from the data root: class folders, or the official UCF-101 / HMDB-51 split lists.

Two layouts, under `<root>/<subdir>/`:
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

from pathlib import Path

import numpy as np

from bob.data.base import DatasetInfo
from bob.data.video import VIDEO_EXTENSIONS, FileVideoSplit
from bob.errors import DatasetNotFoundError, UsageError

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


def _split_or_fail(info: DatasetInfo, split: str, base: Path, classes, paths, labels) -> FileVideoSplit:
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
