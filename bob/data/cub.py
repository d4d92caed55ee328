"""CUB-200-2011 (Wah et al., 2011) from its official files: 200 bird species, 11,788 images.

Layout under the data root (CUB_200_2011.tgz extracted):

    <root>/CUB_200_2011/images.txt                <image id> <relative path>
    <root>/CUB_200_2011/image_class_labels.txt    <image id> <class id, 1-based>
    <root>/CUB_200_2011/classes.txt               <class id> <class name>
    <root>/CUB_200_2011/train_test_split.txt      <image id> <1 = train, 0 = test>
    <root>/CUB_200_2011/images/<class>/<image>.jpg

Splits are the official train (5,994) / test (5,794) lists. As a class-as-relevance retrieval set
(`retrieval/cub200`) both are pooled, as BoB pooled all images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bob.data.base import DatasetInfo, FileSplit
from bob.errors import DatasetNotFoundError, UsageError

FILES = ("images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt")


def _table(path: Path) -> dict[int, str]:
    """`<id> <value>` lines as {id: value}; a malformed line is an error naming the file and line."""
    out: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not key.isdigit() or not value:
            raise UsageError(f"{path}:{number} is not '<id> <value>': {line!r}.")
        out[int(key)] = value.strip()
    return out


def load_cub(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> FileSplit:
    if download:
        raise UsageError("bob does not download CUB-200-2011; extract CUB_200_2011.tgz into the data root.")
    folder = Path(root) / "CUB_200_2011"
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"Dataset 'cub200' was not found: bob looked in {folder} for {', '.join(FILES)} and images/. "
            f"Missing: {', '.join(missing)}. Extract CUB_200_2011.tgz into the data root and point bob at it "
            "with `--task-arg root=DIR` or the BOB_DATA_ROOT environment variable."
        )
    images, labels, classes, is_train = (_table(folder / f) for f in FILES)
    class_ids = sorted(classes)
    position = {cid: i for i, cid in enumerate(class_ids)}
    want = "1" if split == "train" else "0"
    ids = sorted(i for i, flag in is_train.items() if flag == want)
    broken = [
        i for i in ids if i not in images or not labels.get(i, "").isdigit() or int(labels[i]) not in position
    ]
    if broken:
        raise UsageError(
            f"{folder}: image id {broken[0]} of train_test_split.txt has no path, no label or an unknown class "
            "in images.txt / image_class_labels.txt / classes.txt. The files do not belong together."
        )
    paths = [folder / "images" / images[i] for i in ids]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise DatasetNotFoundError(
            f"Dataset 'cub200': {len(absent)} listed images are missing, e.g. {absent[0]}."
        )
    y = np.array([position[int(labels[i])] for i in ids], dtype=np.int64)
    for c in range(len(class_ids)):
        if not np.any(y == c):
            raise UsageError(f"{folder}: class '{classes[class_ids[c]]}' has no image in the {split} split.")
    names = [classes[c] for c in class_ids]
    return FileSplit(info.name, split, names, folder, paths, y)
