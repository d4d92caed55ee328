"""COCO box and mask AP through pycocotools' COCOeval, the reference implementation.

`to_coco_results` turns detector outputs (xyxy boxes, contiguous labels, mask probabilities in the
original image's pixels) into COCO result records; `coco_metrics` scores them against a split's
ground truth with COCOeval's standard settings (IoU .50:.05:.95, 101 recall points, maxDets 100,
area ranges small < 32², medium < 96², large). Metrics are fractions in [0, 1]:

    box_ap, box_ap50, box_ap75, box_ap_s, box_ap_m, box_ap_l    (and mask_* for iou type segm)

COCOeval reports -1 for an area range without ground truth; such metrics are left out, not zeroed.
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
    gt: dict[str, Any], results: list[dict[str, Any]], iou_types: Sequence[str] = ("bbox",)
) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, COCOeval's printed summary per iou type) of `results` against the COCO dict `gt`."""
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
        for name, value in zip(STAT_NAMES, evaluator.stats[: len(STAT_NAMES)], strict=True):
            if value >= 0:  # -1: no ground truth in that area range
                metrics[f"{PREFIX[iou_type]}_{name}"] = float(value)
    return metrics, summaries


def bytes_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """An RLE as pycocotools takes it: `counts` as bytes (COCO JSON holds them as a string)."""
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
