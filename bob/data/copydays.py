"""INRIA Copydays (Jégou et al., 2008) as copy detection: originals are the queries, their copies the database.

Layout under the data root (the official archives extracted side by side):

    <root>/copydays/original/<block><00>.jpg        157 originals, e.g. 200000.jpg
    <root>/copydays/strong/<block><nn>.jpg          strong attacks (print-scan, paint, …), e.g. 200001.jpg
    <root>/copydays/jpegqual/<quality>/<name>.jpg   JPEG re-encodes, named like their original
    <root>/copydays/crops/<percent>/<name>.jpg      crops, named like their original

bob's one split, `test`, holds the originals (the queries) followed by every image outside
`original/` (the database); its group is the first four characters of its file
name (Copydays' block id), and a query's relevant items are the copies of its own block. Any subset of
the variant folders works; a variant whose block has no original is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bob.data.base import DatasetInfo, FileSplit
from bob.data.relevance import RETRIEVAL_SPLIT, mark_queries
from bob.errors import DatasetNotFoundError, UsageError

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
