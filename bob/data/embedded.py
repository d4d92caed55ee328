"""Datasets shipped inside installed Python packages: they work offline and never download.

* `digits`: scikit-learn's copy of the UCI handwritten digits (8×8, values 0..16).
* `animal-mnist`: the 28×28 animal silhouettes in the `animal-mnist` wheel, stored there as
  gzip-compressed pickles. Unpickling can execute code, so the files are checked against pinned
  sha256 digests first and then read by an unpickler that only rebuilds numpy arrays.

Both have no official test split; bob draws a stratified one with a fixed seed that is part of the
dataset's definition (independent of any run seed).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np

from bob.data.base import ArraySplit, DatasetInfo, stratified_partition
from bob.data.safe_pickle import safe_loads
from bob.errors import DatasetNotFoundError

log = logging.getLogger(__name__)

SPLIT_SEED = 0  # part of the datasets' definition: changing it changes every fingerprint

DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
# Label order checked against the images: label k is the k-th name in alphabetical order.
ANIMAL_MNIST_CLASSES: tuple[str, ...] = (
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
)
ANIMAL_MNIST_INSTALL = "pip install --no-deps animal-mnist==0.4"
# sha256 of the files in animal-mnist 0.4; nothing else is ever unpickled.
ANIMAL_MNIST_SHA256: dict[str, str] = {
    "animal_data_version_3.gz": "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    "animal_label_version_3.gz": "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
}


def safe_unpickle_array(data: bytes) -> np.ndarray:
    """Unpickle bytes that must hold exactly one numpy array, refusing every other global."""
    obj = safe_loads(data)
    if not isinstance(obj, np.ndarray):
        raise pickle.UnpicklingError(f"expected a pickled numpy array, got {type(obj).__name__}")
    return obj


def leak_free_partition(
    images: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held_out) as `stratified_partition` draws them, but leak-free.

    Byte-identical images always land on the same side.
    Animal-MNIST holds 284 exact duplicate pairs; a plain random split would put about a hundred test
    images in train as well. The first copy of each image is partitioned and its duplicates follow it,
    so a set without duplicates (like digits) gets exactly `stratified_partition`'s split.
    """
    _, first, inverse = np.unique(
        images.reshape(len(images), -1), axis=0, return_index=True, return_inverse=True
    )
    order = np.argsort(first)  # representatives in their original order
    _, held = stratified_partition(labels[first[order]], fraction, seed)
    rep_held = np.zeros(len(first), dtype=bool)
    rep_held[order[held]] = True
    held_mask = rep_held[inverse.ravel()]
    return np.flatnonzero(~held_mask), np.flatnonzero(held_mask)


def _split_arrays(images: np.ndarray, labels: np.ndarray, split: str, fraction: float):
    train_idx, test_idx = leak_free_partition(images, labels, fraction, SPLIT_SEED)
    idx = {"train": train_idx, "test": test_idx}[split]
    return images[idx], labels[idx]


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 0..16 intensities → 0..255; rounding (not truncation) keeps 16 → 255 and 8 → 128.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    for array in (images, labels):
        array.setflags(write=False)
    return images, labels


def load_digits(
    info: DatasetInfo, split: str, *, root: Path | None = None, download: bool = False
) -> ArraySplit:
    """scikit-learn digits, stratified 75/25 train/test with a fixed seed; `root` is unused."""
    images, labels = _split_arrays(*_digits_arrays(), split, fraction=0.25)
    return ArraySplit(info.name, split, DIGITS_CLASSES, images, labels)


def _animal_mnist_dir() -> Path:
    """The folder in the installed `animal-mnist` package that holds the two pickles."""
    import importlib.resources

    try:
        package = importlib.resources.files("animal_mnist")
    except ModuleNotFoundError:
        raise DatasetNotFoundError(
            "Dataset 'animal-mnist' needs the 'animal-mnist' package, which is not installed. "
            f"Install it with `{ANIMAL_MNIST_INSTALL}` (--no-deps matters: the package declares "
            "tensorflow, which bob never uses)."
        ) from None
    return Path(str(package)) / "data" / "Animal_MNIST"


def _read_verified(path: Path) -> bytes:
    """The file's bytes, only if its sha256 matches the pinned one."""
    if not path.is_file():
        raise DatasetNotFoundError(
            f"Dataset 'animal-mnist': expected the file {path} in the installed animal-mnist package, but it "
            f"is missing. Reinstall the package with `{ANIMAL_MNIST_INSTALL} --force-reinstall`."
        )
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    expected = ANIMAL_MNIST_SHA256[path.name]
    if digest != expected:
        raise DatasetNotFoundError(
            f"Dataset 'animal-mnist': {path} has sha256 {digest}, but bob pins {expected} "
            "(animal-mnist 0.4). "
            "The file was modified or comes from another version, and bob refuses to unpickle it. "
            f"Reinstall the package with `{ANIMAL_MNIST_INSTALL} --force-reinstall`."
        )
    return data


@lru_cache(maxsize=2)
def _animal_mnist_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    # Verify both files before unpickling either of them.
    raw = {name: _read_verified(folder / name) for name in ANIMAL_MNIST_SHA256}
    images = safe_unpickle_array(gzip.decompress(raw["animal_data_version_3.gz"]))
    labels = safe_unpickle_array(gzip.decompress(raw["animal_label_version_3.gz"]))
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) != len(labels):
        raise DatasetNotFoundError(
            f"Dataset 'animal-mnist': unexpected arrays in {folder} "
            f"(images {images.dtype} {images.shape}, labels {labels.shape})."
        )
    labels = labels.astype(np.int64)
    log.debug("animal-mnist: %d images of %s from %s", len(images), images.shape[1:], folder)
    for array in (images, labels):
        array.setflags(write=False)
    return images, labels


def load_animal_mnist(
    info: DatasetInfo, split: str, *, root: Path | None = None, download: bool = False
) -> ArraySplit:
    """Animal-MNIST silhouettes, stratified 80/20 train/test with a fixed seed; `root` is unused."""
    images, labels = _split_arrays(*_animal_mnist_arrays(_animal_mnist_dir()), split, fraction=0.2)
    return ArraySplit(info.name, split, ANIMAL_MNIST_CLASSES, images, labels)
