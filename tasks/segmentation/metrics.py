"""Semantic-segmentation metrics, accumulated over the whole dataset (mmseg's `IoUMetric`).

Every evaluated image adds its pixel counts to one K×K confusion matrix (rows: ground truth, columns:
prediction; pixels whose label is `ignore_index` are left out). The metrics come from that matrix
only, never as a mean of per-image scores:

    intersect_k = C[k, k]      area_label_k = Σ_j C[k, j]      area_pred_k = Σ_i C[i, k]
    IoU_k  = intersect_k / (area_label_k + area_pred_k − intersect_k)
    Acc_k  = intersect_k / area_label_k
    mIoU   = mean of IoU_k over the classes whose union is not empty
    mAcc   = mean of Acc_k over the classes present in the ground truth
    aAcc   = Σ_k intersect_k / Σ_k area_label_k

A class that appears neither in the labels nor in the predictions has IoU NaN (0/0) and is skipped by
the mean; a class only predicted (never labelled) has IoU 0 and counts. Metrics are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bob import distributed
from bob.samples import SampleSet, make_samples

IGNORE_INDEX = 255


def confusion_matrix(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """K×K int64 pixel counts of (label, prediction) over the pixels whose label is not `ignore_index`."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from label shape {target.shape}")
    keep = target != ignore_index
    t = target[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(
            f"label values must be 0..{num_classes - 1} or {ignore_index} (ignore), found {t.min()}..{t.max()}"
        )
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted class out of range 0..{num_classes - 1}: {p.min()}..{p.max()}")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def scores_from_confusion(matrix: np.ndarray) -> dict[str, Any]:
    """Per-class IoU and accuracy (NaN where undefined) and the dataset-level mIoU, mAcc, aAcc."""
    matrix = np.asarray(matrix, dtype=np.float64)
    intersect = np.diag(matrix)
    area_label = matrix.sum(axis=1)
    area_pred = matrix.sum(axis=0)
    union = area_label + area_pred - intersect
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersect / union, np.nan)
        acc = np.where(area_label > 0, intersect / area_label, np.nan)
    total = area_label.sum()
    if total == 0:
        raise ValueError("no labelled pixel was evaluated (every pixel is ignore); mIoU is undefined")
    return {
        "miou": float(np.nanmean(iou)),
        "macc": float(np.nanmean(acc)),
        "aacc": float(intersect.sum() / total),
        "iou": iou,
        "acc": acc,
    }


@dataclass
class IoUAccumulator:
    """Adds images' predictions one at a time; `result()` gives the dataset-level metrics and
    `samples()` each image's intersection, label and prediction areas per class (what they sum)."""

    num_classes: int
    ignore_index: int = IGNORE_INDEX
    matrix: np.ndarray = field(init=False)
    images: int = field(default=0, init=False)
    per_image: list[np.ndarray] = field(default_factory=list, init=False)  # [3, K] per image

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        counts = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.matrix += counts
        self.images += 1
        self.per_image.append(np.stack([np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)]))

    def gathered(self, rows: Sequence[int], total: int) -> IoUAccumulator:
        """The accumulator of a whole split of `total` images from every rank's share of a data-parallel
        run, this one having added the images `rows` in that order: the matrices summed (integer
        counts, so exact) and the per-image areas put back in dataset order, as one process would
        have accumulated them. Outside a data-parallel run, `self`."""
        if len(rows) != self.images:
            raise ValueError(f"{self.images} images were added but {len(rows)} rows are named")
        if not distributed.active():
            return self
        out = IoUAccumulator(self.num_classes, self.ignore_index)
        out.matrix = distributed.all_sum(self.matrix)
        out.per_image = distributed.gather_objects(self.per_image, rows, total)
        out.images = total
        return out

    def samples(self) -> SampleSet:
        """The per-image file of mIoU: a resample of images sums their areas, as the matrix does."""
        areas = np.stack(self.per_image) if self.per_image else np.zeros((0, 3, self.num_classes), np.int64)
        dtype = np.int32 if areas.size == 0 or areas.max() < np.iinfo(np.int32).max else np.int64
        names = ("intersect", "area_label", "area_pred")
        arrays = {name: areas[:, i].astype(dtype) for i, name in enumerate(names)}
        return make_samples("iou", "miou", arrays, units="image", truth=(arrays["area_label"],))

    def result(self, class_names: tuple[str, ...] | list[str]) -> tuple[dict[str, float], dict[str, Any]]:
        """(metrics, per-class table): `miou`, `aacc`, `macc` plus `iou/<class>` for every class
        whose IoU is defined; the table holds IoU, accuracy and pixel counts of every class (None when
        undefined), for the run's protocol."""
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        scores = scores_from_confusion(self.matrix)
        metrics = {k: scores[k] for k in ("miou", "aacc", "macc")}
        table: dict[str, Any] = {}
        for k, name in enumerate(class_names):
            iou, acc = scores["iou"][k], scores["acc"][k]
            if not np.isnan(iou):
                metrics[f"iou/{name}"] = float(iou)
            table[name] = {
                "iou": None if np.isnan(iou) else float(iou),
                "acc": None if np.isnan(acc) else float(acc),
                "label_pixels": int(self.matrix[k].sum()),
                "pred_pixels": int(self.matrix[:, k].sum()),
            }
        return metrics, table
