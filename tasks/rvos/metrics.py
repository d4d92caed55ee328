"""DAVIS region (J) and boundary (F) measures, written from the DAVIS 2017 evaluation's definition.

  - J: the IoU of the predicted and ground-truth masks of one frame; a frame where both are empty
    scores 1 (`db_eval_iou`).
  - F: the boundary F-measure. Boundaries are the one-pixel maps of `seg2bmap` (a pixel is on the
    boundary when it differs from its right, lower or lower-right neighbour); each boundary is
    dilated with a disk of radius `ceil(bound_th × image diagonal)` (bound_th 0.008), a boundary
    pixel of one mask counts as matched when it lies in the other's dilated boundary, and precision
    and recall of the predicted boundary are combined as 2PR / (P + R) (`db_eval_boundary`). No
    predicted boundary: P = 1, R = 0; no ground-truth boundary: P = 0, R = 1; neither: 1.
  - J&F: per referred object, J and F are averaged over its frames; J-mean and F-mean average those
    over objects, and J&F = (J-mean + F-mean) / 2.
The dilation uses scipy instead of OpenCV (`cv2.dilate` with the same disk equals
`binary_dilation` with zero border).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import binary_dilation
from skimage.morphology import disk

BOUND_TH = 0.008


def region_jaccard(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-frame J of boolean masks [..., H, W]; empty-vs-empty is 1."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: ground truth {gt.shape}, prediction {pred.shape}")
    inter = np.sum(gt & pred, axis=(-2, -1))
    union = np.sum(gt | pred, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return np.asarray(j, np.float64)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS's one-pixel boundary map of a boolean mask [H, W]."""
    seg = np.asarray(seg, bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def boundary_radius(shape: Sequence[int], bound_th: float = BOUND_TH) -> int:
    """The matching tolerance in pixels: bound_th itself when >= 1, else ceil(bound_th × diagonal)."""
    return int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(*shape[-2:]))


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """The boundary F-measure of one frame (boolean [H, W] masks)."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: ground truth {gt.shape}, prediction {pred.shape}")
    footprint = disk(boundary_radius(gt.shape, bound_th)).astype(bool)
    fg_b, gt_b = seg2bmap(pred), seg2bmap(gt)
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0  # (P, R) = (1, 0) or (0, 1)
    fg_dil = binary_dilation(fg_b, structure=footprint)
    gt_dil = binary_dilation(gt_b, structure=footprint)
    precision = float((fg_b & gt_dil).sum()) / n_fg
    recall = float((gt_b & fg_dil).sum()) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def track_scores(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> tuple[float, float]:
    """(mean J, mean F) of one object's mask track, boolean [T, H, W] each."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    j = region_jaccard(gt, pred)
    f = [boundary_f(g, p, bound_th) for g, p in zip(gt, pred, strict=True)]
    return float(np.mean(j)), float(np.mean(f))


def j_and_f(per_object: Sequence[tuple[float, float]]) -> dict[str, float]:
    """J-mean, F-mean and J&F over objects from their per-track (mean J, mean F)."""
    if not per_object:
        raise ValueError("J&F needs at least one object track")
    arr = np.asarray(per_object, np.float64)
    j_mean, f_mean = float(arr[:, 0].mean()), float(arr[:, 1].mean())
    return {"j_and_f": (j_mean + f_mean) / 2, "j_mean": j_mean, "f_mean": f_mean}
