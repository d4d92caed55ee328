"""Open-vocab scores beyond COCOeval on all categories: COCOeval restricted to the novel or the base
categories, and LVIS's federated AP through the `lvis` package.

LVIS's evaluation is *federated*: an image is scored only on the categories verified present or
absent in it (`neg_category_ids`), and false positives on its `not_exhaustive_category_ids` are not
counted. bob runs it with the `lvis` package's `LVISEval` (`LVIS_MAX_DETS` = 300 detections per
image, LVIS's official setting; the detector keeps up to that many per image on LVIS, run.py) and
reports AP, AP50, AP75, APs/m/l and APr/APc/APf (rare = novel), for boxes and for masks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bob.errors import UsageError
from bob.samples import SampleSet
from bob.tasks.common.coco_eval import bytes_rle, coco_metrics

# LVIS's official evaluation: up to 300 detections per image (LVISResults' max_dets).
LVIS_MAX_DETS = 300
LVIS_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def subset_metrics(
    gt: dict[str, Any],
    records: list[dict[str, Any]],
    ids: set[int],
    iou_types: Sequence[str],
    suffix: str,
    samples: dict[str, SampleSet] | None = None,
) -> dict[str, float]:
    """COCOeval restricted to categories `ids` (ground truth and detections), keys suffixed; with
    `samples`, each iou type's per-image evaluation goes there, its metric named `<box|mask>_ap_<suffix>`."""
    sub_gt = {
        **gt,
        "categories": [c for c in gt["categories"] if int(c["id"]) in ids],
        "annotations": [a for a in gt["annotations"] if int(a["category_id"]) in ids],
    }
    sub = [r for r in records if int(r["category_id"]) in ids]
    captured: dict[str, SampleSet] = {}
    metrics, _ = coco_metrics(sub_gt, sub, iou_types, captured)
    if samples is not None:
        samples.update(
            {t: dataclasses.replace(s, metric=f"{s.metric}_{suffix}") for t, s in captured.items()}
        )
    return {f"{k}_{suffix}": v for k, v in metrics.items()}


@contextlib.contextmanager
def _numpy_float_alias() -> Iterator[None]:
    """lvis 0.5.3 (its latest release) accumulates with `np.float`, which NumPy 1.24 removed; the
    alias (the builtin float, what it always meant) exists only while LVISEval runs."""
    had = "float" in np.__dict__
    if not had:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if not had:
            del np.float  # type: ignore[attr-defined]


def lvis_metrics(
    gt: dict[str, Any], records: list[dict[str, Any]], iou_types: tuple[str, ...]
) -> dict[str, float]:
    """LVIS federated AP of `records` (COCO result dicts) against LVIS ground truth, per iou type:
    `lvis_box_AP`, `lvis_box_APr`, …, `lvis_mask_APr`, …"""
    try:  # optional: `pip install 'bob-bench[lvis]'`
        from lvis import LVIS, LVISEval, LVISResults
    except ImportError as err:
        raise UsageError(
            f"LVIS evaluation needs the lvis package ({err}): pip install 'bob-bench[lvis]'."
        ) from None
    if not records:
        return {f"lvis_{'box' if t == 'bbox' else 'mask'}_{k}": 0.0 for t in iou_types for k in LVIS_KEYS}
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bob-lvis-") as tmp, _numpy_float_alias():
        path = Path(tmp) / "gt.json"
        path.write_text(json.dumps({**gt, "info": gt.get("info", {}), "licenses": []}))
        logging.getLogger("lvis").setLevel(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()):
            lvis_gt = LVIS(str(path))
            for iou_type in iou_types:
                anns = [dict(r) for r in records]
                for a in anns:
                    if iou_type == "bbox":
                        a.pop("segmentation", None)
                    elif "segmentation" in a:
                        a["segmentation"] = bytes_rle(a["segmentation"])
                evaluator = LVISEval(lvis_gt, LVISResults(lvis_gt, anns, max_dets=LVIS_MAX_DETS), iou_type)
                evaluator.run()
                prefix = "box" if iou_type == "bbox" else "mask"
                for key in LVIS_KEYS:
                    value = float(evaluator.get_results()[key])
                    if value >= 0:  # -1: no ground truth of that kind
                        out[f"lvis_{prefix}_{key}"] = value
    return out
