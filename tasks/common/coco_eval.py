"""COCO box and mask AP through pycocotools' COCOeval, the reference implementation.

`to_coco_results` turns detector outputs (xyxy boxes, contiguous labels, mask probabilities in the
original image's pixels) into COCO result records; `coco_metrics` scores them against a split's
ground truth with COCOeval's standard settings (IoU .50:.05:.95, 101 recall points, maxDets 100,
area ranges small < 32², medium < 96², large). Metrics are fractions in [0, 1]:

    box_ap, box_ap50, box_ap75, box_ap_s, box_ap_m, box_ap_l    (and mask_* for iou type segm)

COCOeval reports -1 for an area range without ground truth; such metrics are left out, not zeroed.

`coco_samples` keeps what the AP is accumulated from (per image: its detections' scores, matches and
ignore flags at every IoU threshold; its non-ignored ground truths per category), so the run's sample
file reproduces COCO AP on any resample of the images (bob.samples.coco).
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

from bob.samples import SampleSet, make_samples
from bob.samples.coco import pack_bits

# COCOeval.stats[0:6] in order, and the prefix per iou type.
STAT_NAMES = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")
PREFIX = {"bbox": "box", "segm": "mask"}


def to_coco_results(
    image_id: int,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    category_ids: Sequence[int],
    masks: np.ndarray | None = None,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """COCO result records for one image; `labels` are 1..K indexes into `category_ids`."""
    records = []
    for j in range(len(boxes)):
        x0, y0, x1, y1 = (float(v) for v in boxes[j])
        rec: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(category_ids[int(labels[j]) - 1]),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": float(scores[j]),
        }
        if masks is not None:
            binary = np.asfortranarray((masks[j] >= mask_threshold).astype(np.uint8))
            rle = mask_util.encode(binary)
            rec["segmentation"] = {
                "size": [int(v) for v in rle["size"]],
                "counts": rle["counts"].decode("ascii"),
            }
        records.append(rec)
    return records


def coco_index(dataset: dict[str, Any]) -> COCO:
    """A pycocotools `COCO` over an in-memory COCO dict, indexed quietly (no file, no prints)."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_metrics(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    iou_types: Sequence[str] = ("bbox",),
    samples: dict[str, SampleSet] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, COCOeval's printed summary per iou type) of `results` against the COCO dict `gt`.
    With `samples` (a dict), each iou type's per-image evaluation is put there (`coco_samples`)."""
    gt_coco = coco_index({**gt, "info": gt.get("info", {})})
    metrics: dict[str, float] = {}
    summaries: dict[str, str] = {}
    for iou_type in iou_types:
        # loadRes would fail on an empty list and recomputes areas/boxes; build the result set directly.
        anns = [dict(r, id=i + 1) for i, r in enumerate(results)]
        for ann in anns:
            w, h = ann["bbox"][2:]
            if iou_type == "segm":
                ann["area"] = float(mask_util.area(bytes_rle(ann["segmentation"])))
            else:
                ann["area"] = w * h
                ann.pop("segmentation", None)
            ann["iscrowd"] = 0
        dt_coco = coco_index({"images": gt["images"], "categories": gt["categories"], "annotations": anns})
        evaluator = COCOeval(gt_coco, dt_coco, iou_type)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        summaries[iou_type] = out.getvalue()
        if samples is not None:
            samples[iou_type] = coco_samples(evaluator, f"{PREFIX[iou_type]}_ap")
        for name, value in zip(STAT_NAMES, evaluator.stats[: len(STAT_NAMES)], strict=True):
            if value >= 0:  # -1: no ground truth in that area range
                metrics[f"{PREFIX[iou_type]}_{name}"] = float(value)
    return metrics, summaries


def bytes_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """An RLE as pycocotools takes it: `counts` as bytes (COCO JSON holds them as a string)."""
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def coco_samples(evaluator: COCOeval, metric: str, units: str = "image") -> SampleSet:
    """The per-image evaluation of an evaluated COCOeval (area range `all`, the last maxDets), in
    COCOeval's accumulation order: per category, per image, detections as the image ranked them."""
    p = evaluator.params
    n_img, n_area = len(p.imgIds), len(p.areaRng)
    det: dict[str, list[Any]] = {k: [] for k in ("unit", "cat", "score", "matched", "ignore")}
    gt: dict[str, list[int]] = {k: [] for k in ("unit", "cat", "count")}
    for k in range(len(p.catIds)):
        for i in range(n_img):
            e = evaluator.evalImgs[k * n_area * n_img + i]  # area range index 0 is `all`
            if e is None:
                continue
            scores = np.asarray(e["dtScores"], dtype=np.float64)
            det["unit"].append(np.full(len(scores), i))
            det["cat"].append(np.full(len(scores), k))
            det["score"].append(scores)
            det["matched"].append(pack_bits(np.asarray(e["dtMatches"]).reshape(len(p.iouThrs), -1) > 0))
            det["ignore"].append(pack_bits(np.asarray(e["dtIgnore"]).reshape(len(p.iouThrs), -1) > 0))
            gt["unit"].append(i)
            gt["cat"].append(k)
            gt["count"].append(int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)))
    scores = _cat(det["score"], np.float64)
    exact32 = np.array_equal(scores.astype(np.float32).astype(np.float64), scores)
    arrays = {
        "det_unit": _cat(det["unit"], np.int32),
        "det_cat": _cat(det["cat"], np.int32),
        "det_score": scores.astype(np.float32) if exact32 else scores,
        "det_matched": _cat(det["matched"], np.uint16),
        "det_ignore": _cat(det["ignore"], np.uint16),
        "gt_unit": np.asarray(gt["unit"], dtype=np.int32),
        "gt_cat": np.asarray(gt["cat"], dtype=np.int32),
        "gt_count": np.asarray(gt["count"], dtype=np.int32),
    }
    params = {
        "n_units": n_img,
        "iou_thresholds": [float(t) for t in p.iouThrs],
        "rec_thresholds": [float(r) for r in p.recThrs],
        "max_dets": int(p.maxDets[-1]),
        "categories": [int(c) for c in p.catIds],
    }
    truth = (np.asarray(p.imgIds), arrays["gt_unit"], arrays["gt_cat"], arrays["gt_count"])
    return make_samples("coco", metric, arrays, units=units, truth=truth, params=params)


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
