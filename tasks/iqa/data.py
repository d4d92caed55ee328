"""IQA splits: distorted images with a quality score each and, for full-reference sets, a reference.

An `IQASplit` is an `ImageSplit` whose `image(i)` is the i-th assessed (distorted) image and whose
extra, row-aligned arrays say what the suite needs:
  - `scores`: float64 quality in bob's direction, **higher = better** (DMOS labels are negated on load,
    so every dataset reads the same way; `score_note` says what the number is);
  - `ref_index`: index into `references` (an `ImageSplit` of pristine images), or -1 for sets that
    have none (KonIQ-10k is authentic-distortion, no-reference only);
  - `content`: the id of the scene an image shows; train and test never share one;
  - `labels` / `classes`: the distortion type of each image (one class `authentic` when unknown),
    used for per-type SRCC.
The fingerprint covers the pixels (through the wrapped splits), the scores, the reference links and
the content ids, so a changed label file never reads stale cached features.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from PIL import Image

from bob.data.base import ImageSplit
from bob.errors import UsageError

SPLIT_SEED = 0  # the content-disjoint 80/20 partition is part of each dataset's definition
TEST_FRACTION = 0.2


class IQASplit(ImageSplit):
    """Assessed images with their scores, distortion types, content ids and reference links."""

    single_label = False  # `labels` is the distortion type, not a class to balance a draw by

    def __init__(
        self,
        dataset: str,
        split: str,
        images: ImageSplit,
        scores: np.ndarray,
        *,
        classes: tuple[str, ...],
        labels: np.ndarray,
        content: np.ndarray,
        references: ImageSplit | None = None,
        ref_index: np.ndarray | None = None,
        score_note: str = "",
    ) -> None:
        super().__init__(dataset, split, classes, labels)
        n = len(images)
        self.images = images
        self.scores = np.asarray(scores, dtype=np.float64)
        self.content = np.asarray(content, dtype=np.int64)
        self.references = references
        self.ref_index = (
            np.full(n, -1, np.int64) if ref_index is None else np.asarray(ref_index, dtype=np.int64)
        )
        self.score_note = score_note
        self.split_note = ""
        for name in ("scores", "content", "ref_index", "labels"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{dataset}/{split}: {n} images but {len(getattr(self, name))} {name}")
        if (
            references is not None
            and n
            and not (0 <= self.ref_index.min() <= self.ref_index.max() < len(references))
        ):
            raise ValueError(f"{dataset}/{split}: reference index out of range")

    @property
    def has_references(self) -> bool:
        return self.references is not None

    def image(self, index: int) -> Image.Image:
        return self.images.image(index)

    def _identity_chunks(self) -> list[bytes]:
        chunks = [self.images.fingerprint.encode(), self.scores.tobytes(), self.content.tobytes()]
        chunks.append(self.ref_index.tobytes())
        if self.references is not None:
            chunks.append(self.references.fingerprint.encode())
        return chunks

    def subset(self, indices: np.ndarray, split: str) -> IQASplit:
        idx = np.asarray(indices, dtype=np.int64)
        return IQASplit(
            self.dataset,
            split,
            self.images.subset(idx, split),
            self.scores[idx],
            classes=self.classes,
            labels=self.labels[idx],
            content=self.content[idx],
            references=self.references,
            ref_index=self.ref_index[idx],
            score_note=self.score_note,
        )

    def take(self, indices: np.ndarray, split: str) -> IQASplit:
        """The images `indices` with their own scores, types, contents and reference links (e.g. a
        `limit` draw). The references are kept whole, so every kept full-reference pair is still a
        distorted image and its own pristine reference."""
        out = self.subset(indices, split)
        out.split_note = self.split_note
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "score_note": self.score_note}


def content_partition(content: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices with `fraction` of the distinct contents (scenes) held out, seeded.

    Every image of one content lands on the same side, so no scene is seen in training and test.
    """
    content = np.asarray(content)
    ids = np.unique(content)
    if len(ids) < 2:
        raise UsageError(f"A content-disjoint split needs at least 2 distinct scenes, got {len(ids)}.")
    # Shuffle a stable ordering of the ids with a generator seeded from (seed, the id set).
    digest = hashlib.sha256(f"{seed}/".encode() + ids.astype(np.int64).tobytes()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    shuffled = ids[rng.permutation(len(ids))]
    n_test = min(max(round(fraction * len(ids)), 1), len(ids) - 1)
    test_mask = np.isin(content, shuffled[:n_test])
    return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)


def pick_split(full: IQASplit, split: str, official: dict[str, np.ndarray] | None = None) -> IQASplit:
    """Train or test of `full`: the official index lists when given, else the seeded content split."""
    if official is not None:
        out = full.subset(official[split], split)
        out.split_note = "the dataset's official split"
        return out
    train, test = content_partition(full.content, TEST_FRACTION, SPLIT_SEED)
    out = full.subset(train if split == "train" else test, split)
    out.split_note = f"seeded content-disjoint {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} split by scene (seed {SPLIT_SEED})"
    return out
