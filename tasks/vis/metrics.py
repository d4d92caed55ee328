"""YouTube-VIS AP / AR: COCO's accumulation over whole-track mask IoUs.

Ground truth and results use the YouTube-VIS JSON shapes:

    gt       {"videos": [{"id", "length", ...}], "categories": [{"id", "name"}],
              "annotations": [{"id", "video_id", "category_id", "segmentations": [RLE | None, ...],
                               "iscrowd": 0}]}
    results  [{"video_id", "category_id", "score", "segmentations": [RLE | None, ...]}]

One segmentation per frame of the video; None (or an empty mask) where the instance is absent.

The IoU of a predicted track with a ground-truth track is the sum over frames of the per-frame
intersections divided by the sum of the per-frame unions (frames where both are empty add nothing),
computed with pycocotools' RLE ops exactly as the youtubevis fork of cocoapi does. Everything else is
pycocotools' COCOeval, untouched: `computeIoU` is overridden to return those track IoUs, with one
"image" per video and one "annotation" per track. Settings are COCO's: IoU .50:.05:.95, 101 recall
points, maxDets 1 / 10 / 100; a track's area (for the area ranges) is its mean area over the frames
where it is present. Metrics are fractions in [0, 1]:

    ap, ap50, ap75, ar1, ar10
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bob.samples import SampleSet
from bob.tasks.common.coco_eval import coco_index, coco_samples

STATS = {"ap": 0, "ap50": 1, "ap75": 2, "ar1": 6, "ar10": 7}  # indexes into COCOeval.stats

# One frame's mask as COCO RLE: {"size": [h, w], "counts": bytes, str or a list of run lengths}.
Rle = dict[str, Any]


def _rle(seg: Rle | None) -> Rle | None:
    """bytes-counts RLE, or None for an absent frame."""
    if seg is None:
        return None
    counts = seg["counts"]
    if isinstance(counts, list):  # uncompressed RLE, as YouTube-VIS annotations store it
        h, w = seg["size"]
        return mask_util.frPyObjects(seg, h, w)
    return {
        "size": list(seg["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


def track_iou(dt: Sequence[Rle | None], gt: Sequence[Rle | None]) -> float:
    """Sum of per-frame intersections over sum of per-frame unions of two tracks (RLE or None per frame)."""
    if len(dt) != len(gt):
        raise ValueError(f"tracks of different lengths: {len(dt)} and {len(gt)} frames")
    inter = union = 0.0
    for d, g in zip(dt, gt, strict=True):
        d, g = _rle(d), _rle(g)
        if d is not None and g is not None:
            inter += float(mask_util.area(mask_util.merge([d, g], intersect=True)))
            union += float(mask_util.area(mask_util.merge([d, g], intersect=False)))
        elif g is not None:
            union += float(mask_util.area(g))
        elif d is not None:
            union += float(mask_util.area(d))
    return inter / union if union > 0 else 0.0


def track_area(segs: Sequence[Rle | None]) -> float:
    """Mean mask area over the frames where the track is present (0 for a track that is never present)."""
    areas = [float(mask_util.area(r)) for r in map(_rle, segs) if r is not None]
    areas = [a for a in areas if a > 0]
    return float(np.mean(areas)) if areas else 0.0


class TrackEval(COCOeval):
    """COCOeval whose IoU is the whole-track mask IoU; 'images' are videos."""

    def __init__(self, gt_coco: COCO, dt_coco: COCO, tracks: dict[tuple[str, int], list[Rle | None]]) -> None:
        super().__init__(gt_coco, dt_coco, "bbox")  # bbox: no per-image mask decoding in _prepare
        self.tracks = tracks

    def computeIoU(self, imgId: int, catId: int) -> np.ndarray | list[float]:
        p = self.params
        gts = self._gts[imgId, catId] if p.useCats else [g for c in p.catIds for g in self._gts[imgId, c]]
        dts = self._dts[imgId, catId] if p.useCats else [d for c in p.catIds for d in self._dts[imgId, c]]
        if not gts or not dts:
            return []
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")
        dts = [dts[i] for i in order][: p.maxDets[-1]]
        out = np.zeros((len(dts), len(gts)))
        for i, d in enumerate(dts):
            for j, g in enumerate(gts):
                out[i, j] = track_iou(self.tracks["dt", d["id"]], self.tracks["gt", g["id"]])
        return out


def vis_metrics(
    gt: dict[str, Any], results: list[dict[str, Any]], samples: dict[str, SampleSet] | None = None
) -> tuple[dict[str, float], str]:
    """(metrics, COCOeval's printed summary) of `results` against the YouTube-VIS dict `gt`; with
    `samples`, the per-video evaluation AP is accumulated from goes to `samples["ap"]`."""
    lengths = {v["id"]: int(v["length"]) for v in gt["videos"]}
    tracks: dict[tuple[str, int], list[Rle | None]] = {}
    images = [{"id": vid} for vid in lengths]
    gt_anns, dt_anns = [], []
    for ann in gt["annotations"]:
        segs = list(ann["segmentations"])
        if len(segs) != lengths[ann["video_id"]]:
            raise ValueError(
                f"annotation {ann['id']} has {len(segs)} frames, its video {lengths[ann['video_id']]}"
            )
        tracks["gt", ann["id"]] = segs
        gt_anns.append(
            _ann(ann["id"], ann["video_id"], ann["category_id"], segs, ann.get("iscrowd", 0), None)
        )
    for i, res in enumerate(results, start=1):
        segs = list(res["segmentations"])
        if len(segs) != lengths[res["video_id"]]:
            raise ValueError(f"result {i} has {len(segs)} frames, its video {lengths[res['video_id']]}")
        tracks["dt", i] = segs
        dt_anns.append(_ann(i, res["video_id"], res["category_id"], segs, 0, float(res["score"])))
    categories = gt["categories"]
    gt_coco = coco_index({"images": images, "categories": categories, "annotations": gt_anns})
    dt_coco = coco_index({"images": images, "categories": categories, "annotations": dt_anns})
    evaluator = TrackEval(gt_coco, dt_coco, tracks)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # COCOeval reports -1 where nothing is defined (no ground truth): left out, not zeroed.
    metrics = {name: float(evaluator.stats[i]) for name, i in STATS.items() if evaluator.stats[i] >= 0}
    if samples is not None:
        samples["ap"] = coco_samples(evaluator, "ap", units="video")
    return metrics, out.getvalue()


def _ann(
    ann_id: int, video: int, cat: int, segs: list[Rle | None], crowd: int, score: float | None
) -> dict[str, Any]:
    rec = {
        "id": int(ann_id),
        "image_id": int(video),
        "category_id": int(cat),
        "area": track_area(segs),
        "bbox": [0.0, 0.0, 1.0, 1.0],  # unused: IoUs come from computeIoU
        "iscrowd": int(crowd),
    }
    if score is not None:
        rec["score"] = score
    return rec
