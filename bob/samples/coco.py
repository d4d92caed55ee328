"""COCOeval's AP re-accumulated from per-image matches, for any resampling of the images (numpy only).

COCO AP is not a mean of per-image numbers: detections of all images are ranked together by score,
per category. But the *matching* (which detection hits which ground truth at each IoU threshold) is
decided inside each image. So a resample of images is evaluated exactly by re-running only COCOeval's
`accumulate` step on the stored matches, each detection counting as often as its image was drawn:

- the sample file holds, per detection (after COCOeval's per-image `maxDets` cut), its image (unit),
  category, score and, per IoU threshold, whether it matched a ground truth and whether it is ignored
  (matched to a crowd region), in COCOeval's order; and per (image, category) the non-ignored ground
  truths;
- per category and threshold: detections sorted by score (mergesort, as COCOeval), true and false
  positives accumulated with the images' counts as weights, precision made monotone from the right,
  read at the 101 recall thresholds (searchsorted, as COCOeval);
- AP = the mean over thresholds, recall points and the categories with ground truth in the resample.

A weight of k gives the same interpolated precision as k copies of the image (copies of a true
positive only raise precision between them; copies of a false positive leave recall unchanged), so
this is COCOeval on the resampled image set, not an approximation. Area range `all`, maxDets 100.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]
WORK_ENTRIES = 1 << 22  # [replicates × detections] entries handled at a time
FIELDS = ("det_unit", "det_cat", "det_score", "det_matched", "det_ignore", "gt_unit", "gt_cat", "gt_count")


def coco_check(arrays: Arrays, params: dict[str, Any]) -> int:
    missing = [f for f in FIELDS if f not in arrays]
    if missing or set(arrays) - set(FIELDS):
        raise ValueError(f"coco sample fields must be {', '.join(FIELDS)}")
    n_dets, n_gt = len(arrays["det_unit"]), len(arrays["gt_unit"])
    if any(len(arrays[f]) != n_dets for f in FIELDS[:5]) or any(len(arrays[f]) != n_gt for f in FIELDS[5:]):
        raise ValueError("detection fields (det_*) and ground-truth fields (gt_*) must each have one length")
    n_units, thresholds = int(params["n_units"]), params["iou_thresholds"]
    if not 0 < len(thresholds) <= 16 or len(params["rec_thresholds"]) < 2:
        raise ValueError("1 to 16 IoU thresholds and at least 2 recall thresholds")
    for f in ("det_unit", "gt_unit"):
        if len(arrays[f]) and (arrays[f].min() < 0 or arrays[f].max() >= n_units):
            raise ValueError(f"{f} out of range")
    return n_units


def _bits(packed: np.ndarray, n_thresholds: int) -> np.ndarray:
    """[T, D] booleans from one uint16 bit mask per detection (bit t = threshold t)."""
    return (packed[None, :].astype(np.uint32) >> np.arange(n_thresholds, dtype=np.uint32)[:, None]) & 1 == 1


def pack_bits(flags: np.ndarray) -> np.ndarray:
    """[T, D] booleans → one uint16 per detection."""
    flags = np.asarray(flags, dtype=bool)
    return (
        (flags.astype(np.uint32) << np.arange(flags.shape[0], dtype=np.uint32)[:, None])
        .sum(0)
        .astype(np.uint16)
    )


def _category_precision(
    weights: np.ndarray, unit: np.ndarray, tp: np.ndarray, fp: np.ndarray, npig: np.ndarray, rec: np.ndarray
) -> np.ndarray:
    """Σ over thresholds and recall points of the interpolated precision, per replicate ([B]).

    Only the true-positive positions are visited per threshold: recall rises only there, and the
    precision to the right of any position peaks at one of them (after a false positive precision
    only falls until the next true positive), so COCOeval's envelope and recall lookup read the same
    numbers from them. The running count of non-ignored detections (tp + fp) is shared by every
    threshold whose ignore flags are those of the first (all of them, unless a crowd is matched)."""
    w = weights[:, unit]  # [B, m], detections already in score order
    total = np.zeros(len(weights))
    counted = tp | fp  # not ignored
    shared = np.cumsum(w * counted[0], axis=1) if (counted == counted[0]).all() else None
    for t in range(tp.shape[0]):
        pos = np.flatnonzero(tp[t])
        if len(pos) == 0:
            continue  # no true positive: precision 0 at every recall point
        seen = (shared if shared is not None else np.cumsum(w * counted[t], axis=1))[:, pos]
        tp_sum = np.cumsum(w[:, pos], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rc = np.where(npig[:, None] > 0, tp_sum / npig[:, None], 0.0)
        pr = tp_sum / (seen + np.spacing(1))
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
        # COCOeval reads, for each recall threshold, the envelope at the first position whose recall
        # reaches it: position j takes the thresholds in (rc[j-1], rc[j]], as many as
        # #{rec ≤ rc[j]} − #{rec ≤ rc[j-1]}; thresholds above the last recall read 0.
        reached = np.searchsorted(rec, rc.ravel(), side="right").reshape(rc.shape)
        total += (np.diff(reached, axis=1, prepend=0) * pr).sum(axis=1)
    return total


def coco_ap(arrays: Arrays, params: dict[str, Any], weights: np.ndarray) -> np.ndarray:
    """[B] COCO AP (IoU thresholds × recall points × categories with ground truth) of each resample."""
    weights = weights.astype(np.float64)
    n_t = len(params["iou_thresholds"])
    rec = np.asarray(params["rec_thresholds"], dtype=np.float64)
    matched = _bits(arrays["det_matched"], n_t)
    ignored = _bits(arrays["det_ignore"], n_t)
    sums = np.zeros(len(weights))
    counted = np.zeros(len(weights))
    cats = np.union1d(np.unique(arrays["gt_cat"]), np.unique(arrays["det_cat"]))
    for k in cats:
        gt = arrays["gt_cat"] == k
        npig_all = weights[:, arrays["gt_unit"][gt]] @ arrays["gt_count"][gt].astype(np.float64)
        rows = np.flatnonzero(arrays["det_cat"] == k)
        rows = rows[np.argsort(-arrays["det_score"][rows].astype(np.float64), kind="mergesort")]
        tp = matched[:, rows] & ~ignored[:, rows]
        fp = ~matched[:, rows] & ~ignored[:, rows]
        has_gt = npig_all > 0
        counted += has_gt * (n_t * len(rec))
        if len(rows) == 0:
            continue  # ground truth but no detection: precision 0 at every recall point
        step = max(1, WORK_ENTRIES // len(rows))
        for start in range(0, len(weights), step):
            sl = slice(start, start + step)
            part = _category_precision(weights[sl], arrays["det_unit"][rows], tp, fp, npig_all[sl], rec)
            sums[sl] += np.where(has_gt[sl], part, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counted > 0, sums / counted, np.nan)
