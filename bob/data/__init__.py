"""Datasets: a registry of named datasets with fingerprinted splits.

    >>> from bob import data
    >>> data.dataset_info("digits").num_classes
    10
    >>> split = data.load_split("digits", "train")   # an ImageSplit

Embedded datasets (shipped in installed packages) and generated ones work offline. Real datasets
are read from a data root (`root=`, else $BOB_DATA_ROOT, else ~/.cache/bob/data) and are downloaded
only when asked (`download=True`).
"""

from __future__ import annotations

import os
from pathlib import Path

from bob.data.base import DatasetInfo, ImageSplit
from bob.data.registry import DATASETS
from bob.errors import UsageError

__all__ = ["DATASETS", "DatasetInfo", "ImageSplit", "dataset_info", "default_data_root", "load_split"]


def default_data_root() -> Path:
    """Where real datasets are looked for when no root is given."""
    env = os.environ.get("BOB_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "bob" / "data"


def dataset_info(name: str) -> DatasetInfo:
    """Static info of a registered dataset; unknown names raise with close matches."""
    return DATASETS.get(name).meta["info"]


def load_split(name: str, split: str, root: str | Path | None = None, download: bool = False) -> ImageSplit:
    """Load one split of a registered dataset."""
    entry = DATASETS.get(name)
    info: DatasetInfo = entry.meta["info"]
    if split not in info.splits:
        raise UsageError(
            f"Dataset '{name}' has no split '{split}'; its splits are: {', '.join(info.splits)}."
        )
    loader = entry.load()
    resolved_root = Path(root).expanduser() if root is not None else default_data_root()
    return loader(info, split, root=resolved_root, download=download, **entry.meta.get("options", {}))
