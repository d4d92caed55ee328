"""What a dataset is to bob: static info (torch-free) and named, fingerprinted splits of images.

A split hands out RGB PIL images by index plus an int64 label array; transforms are the backbone's
business, so the same split feeds every backbone. Two cheaper views serve the `tensor` pipeline, which
decodes without PIL: `source(i)`, the image's file when it has one, and `array(i)`, its uint8 RGB
pixels when the split holds them in memory. Its `fingerprint` is a sha256 over the split's
content identity (pixels for in-memory data; relative path, size and label for files), and it is part
of every feature-cache key: change the data and nothing stale is ever read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image

from bob.errors import UsageError

DatasetKind = Literal["embedded", "generated", "real"]
# The dataset task types the `limit` task arg applies to: their splits are images with a label (or,
# for detection, images with their annotations; for video, clips with a label; for segmentation,
# images with their label map; for IQA, images with their quality score and reference link; for
# multilabel, images with their label set), so a seeded draw of samples is a smaller dataset of the
# same kind. Retrieval (queries and a database with judgements), re-identification (query and
# gallery) and video segmentation splits tie samples to one another, and the efficiency suite reads
# no split: those refuse it.
LIMIT_TASK_TYPES = (
    "classification", "detection", "open-vocab", "shift", "domains", "video",
    "segmentation", "iqa", "multilabel",
)  # fmt: skip


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset, shown by `bob ls datasets` without loading anything."""

    name: str
    title: str
    kind: DatasetKind
    num_classes: int | None
    splits: tuple[str, ...]
    source: str
    license: str
    task_type: str = "classification"
    # Default eval resolution for this dataset; None means the backbone's own input size.
    image_size: int | None = None
    # Crop fraction override for images that are already tightly framed (1.0 = resize only).
    crop_pct: float | None = None
    needs_root: bool = False
    description: str = ""
    # Images per split ({"train": 1281167, "test": 50000}) where the entry states them: the sweep's
    # dry run sizes the geometry cache from them without loading anything.
    split_sizes: dict[str, int] | None = field(default=None, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageSplit:
    """One named split: `len`, `image(i)` as RGB PIL, `labels`, `classes` and a content fingerprint."""

    # Whether a sample is its image and its label and nothing more, so that `take` may pick samples
    # by index. A subclass is not unless its own body says so: one that holds more per sample (boxes,
    # masks, clips, query and gallery roles) defines `take` itself, or `limit` refuses it.
    plain: ClassVar[bool] = False
    # Whether `labels` is each sample's one class label, so that a draw of samples (`limit_split`)
    # is stratified by it. Splits whose `labels` is a stand-in (all zeros for label maps, a primary
    # class for label sets, a distortion type for quality scores) say False: they are drawn plainly.
    single_label: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "plain" not in cls.__dict__:
            cls.plain = False

    def __init__(
        self, dataset: str, split: str, classes: list[str] | tuple[str, ...], labels: np.ndarray
    ) -> None:
        self.dataset = dataset
        self.split = split
        self.classes = tuple(classes)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def source(self, index: int) -> Path | None:
        """The file image `index` is read from, if it is one file as it is on disk; None otherwise."""
        return None

    def array(self, index: int) -> np.ndarray | None:
        """Image `index` as uint8 RGB [H, W, 3] when the split holds its pixels in memory; else None."""
        return None

    def _identity_chunks(self) -> list[bytes]:
        """Byte chunks that identify the split's content; subclasses say what identifies them."""
        raise NotImplementedError

    @cached_property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self.dataset}/{self.split}/{len(self)}".encode())
        h.update("\x1f".join(self.classes).encode())
        h.update(self.labels.tobytes())
        for chunk in self._identity_chunks():
            h.update(chunk)
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "num_samples": len(self),
            "num_classes": len(self.classes),
            "fingerprint": self.fingerprint,
        }

    def subset(self, indices: np.ndarray, split: str) -> ImageSplit:
        """A new split holding `indices` of this one (used for seeded train/test partitions)."""
        return SubsetSplit(self, np.asarray(indices, dtype=np.int64), split)

    def take(self, indices: np.ndarray, split: str) -> ImageSplit:
        """A new split of samples `indices` with everything they carry. Raises NotImplementedError for
        a split that does not say what that is (see `plain`)."""
        if not self.plain:
            raise NotImplementedError(f"{type(self).__name__} does not say how to take samples from it")
        return self.subset(indices, split)


class ArraySplit(ImageSplit):
    """Images held in memory as uint8 arrays, [N, H, W] (gray) or [N, H, W, 3] (RGB)."""

    plain = True

    def __init__(self, dataset: str, split: str, classes, images: np.ndarray, labels: np.ndarray) -> None:
        super().__init__(dataset, split, classes, labels)
        if images.dtype != np.uint8:
            raise TypeError(f"{dataset}/{split}: images must be uint8, got {images.dtype}")
        if len(images) != len(self.labels):
            raise ValueError(f"{dataset}/{split}: {len(images)} images but {len(self.labels)} labels")
        self.images = np.ascontiguousarray(images)

    def image(self, index: int) -> Image.Image:
        array = self.images[index]
        if array.ndim == 2:
            return Image.fromarray(array, mode="L").convert("RGB")
        return Image.fromarray(array, mode="RGB")

    def array(self, index: int) -> np.ndarray | None:
        if type(self).image is not ArraySplit.image:
            return None  # a subclass that changes the image (a crop, an overlay) decodes through it
        array = self.images[index]
        # PIL's L -> RGB conversion copies the gray value into all three channels; so does this.
        return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array

    def _identity_chunks(self) -> list[bytes]:
        return [str(self.images.shape).encode(), self.images.tobytes()]


class FileSplit(ImageSplit):
    """Images as files under `root`; identified by relative path, size and label (not by pixels)."""

    plain = True

    def __init__(self, dataset: str, split: str, classes, root: Path, paths: list[Path], labels) -> None:
        super().__init__(dataset, split, classes, labels)
        if len(paths) != len(self.labels):
            raise ValueError(f"{dataset}/{split}: {len(paths)} files but {len(self.labels)} labels")
        self.root = Path(root)
        self.paths = [Path(p) for p in paths]

    def image(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as img:
            return img.convert("RGB")

    def source(self, index: int) -> Path | None:
        if type(self).image is not FileSplit.image:
            return None  # a subclass that changes the image (a crop, an overlay) decodes through it
        return self.paths[index]

    def _identity_chunks(self) -> list[bytes]:
        chunks = []
        for path in self.paths:
            rel = os.path.relpath(path, self.root)
            chunks.append(f"{rel}\x1f{path.stat().st_size}\x1e".encode())
        return chunks


class SubsetSplit(ImageSplit):
    """A view on another split by index (same images, fewer of them)."""

    def __init__(self, parent: ImageSplit, indices: np.ndarray, split: str) -> None:
        super().__init__(parent.dataset, split, parent.classes, parent.labels[indices])
        self.parent = parent
        self.indices = indices
        self.plain = parent.plain  # a view is as plain as what it views
        self.single_label = parent.single_label

    def image(self, index: int) -> Image.Image:
        return self.parent.image(int(self.indices[index]))

    def source(self, index: int) -> Path | None:
        return self.parent.source(int(self.indices[index]))

    def array(self, index: int) -> np.ndarray | None:
        return self.parent.array(int(self.indices[index]))

    def _identity_chunks(self) -> list[bytes]:
        return [self.parent.fingerprint.encode(), self.indices.tobytes()]


def stratified_partition(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held_out) with `fraction` of every class held out, seeded.

    Every class keeps at least one sample on each side when it has two or more.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    rest, held = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_held = round(fraction * len(idx))
        if len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)
        held.append(idx[:n_held])
        rest.append(idx[n_held:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` indices of `labels` (sorted), drawn seeded and stratified: every class keeps one sample
    while `size` allows it (the classes drawn in a seeded order), and the rest go to the classes in
    proportion to their sizes. All indices when `size` is at least their number."""
    labels = np.asarray(labels)
    n = len(labels)
    if size >= n:
        return np.arange(n, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(n)
    _, cls, counts = np.unique(labels[order], return_inverse=True, return_counts=True)
    cls = cls.reshape(-1)
    by_class = np.argsort(cls, kind="stable")  # positions in `order`, class by class, in drawn order
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    # A class's k-th drawn sample comes at the share (k + 0.5) / class size; its first comes first.
    share = np.where(rank == 0, -1.0, (rank + 0.5) / counts[cls])
    picked = order[np.argsort(share, kind="stable")[:size]]
    return np.sort(picked).astype(np.int64)


def seeded_sample(n: int, size: int, seed: int) -> np.ndarray:
    """`size` of the indices 0..n-1 (sorted), a seeded draw without replacement; all of them when
    `size` is at least `n`."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False)).astype(np.int64)


def limit_split(split: ImageSplit, limit: int, seed: int) -> ImageSplit:
    """At most `limit` samples of `split` (the `limit` task arg), as a split of its own, with its own
    fingerprint, so features of a limited split are cached under their own keys.

    The draw is seeded. Where `labels` is each sample's one class label (`single_label`) it is
    stratified by it (`stratified_sample`); otherwise (label maps, label sets, quality scores) it is a
    plain draw without replacement (`seeded_sample`), which is the right draw there: there is no one
    class per sample to balance, and every kept sample keeps its own target (`take`). A split of no
    more than `limit` samples is returned as it is (its features and cache keys are those of the full
    split). A split whose samples carry more than can be taken by index raises a UsageError."""
    if len(split) <= limit:
        return split
    refusal = (
        f"limit={limit} cannot apply to {split.dataset}/{split.split}: its samples carry more than an "
        "image and a label ({}); run it without limit."
    )
    if getattr(split, "num_queries", None) is not None:
        raise UsageError(refusal.format("queries and a database"))
    if split.single_label:
        indices = stratified_sample(split.labels, limit, seed)
    else:
        indices = seeded_sample(len(split), limit, seed)
    try:
        return split.take(indices, split.split)
    except NotImplementedError:
        raise UsageError(refusal.format(type(split).__name__)) from None
