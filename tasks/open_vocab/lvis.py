"""LVIS v1 for the open-vocab suite: its JSON over COCO's images, and its federated AP through `lvis`.

Layout (ROOT is `--task-arg root=...`, else $BOB_DATA_ROOT, else ~/.cache/bob/data):

    ROOT/lvis/lvis_v1_{train,val}.json      LVIS v1 annotations (bob's test split is val)
    ROOT/coco/{train,val}2017/<image>       COCO 2017 images (LVIS names them by `coco_url`)

LVIS's categories carry `frequency` (`r`are, `c`ommon, `f`requent): the rare ones are the novel set
(ViLD's protocol). Its evaluation is *federated*: an image is scored only on the categories
verified present or absent in it (`neg_category_ids`), and false positives on its
`not_exhaustive_category_ids` are not counted. bob runs it with the `lvis` package's `LVISEval`
(300 detections per image, LVIS's official setting) and reports AP, AP50, AP75, APs/m/l and
APr/APc/APf, for boxes and for masks.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bob.data.base import DatasetInfo
from bob.data.coco import AnnotationError, DetectionSplit, split_from_coco
from bob.errors import DatasetNotFoundError, UsageError
from bob.tasks.common.coco_eval import bytes_rle

FILES = {"train": "lvis/lvis_v1_train.json", "test": "lvis/lvis_v1_val.json"}
LVIS_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def is_lvis(coco: dict[str, Any]) -> bool:
    """LVIS-format ground truth: categories with a frequency, images with negative-category lists."""
    cats, images = coco.get("categories") or [], coco.get("images") or []
    return bool(cats and images) and "frequency" in cats[0] and "neg_category_ids" in images[0]


def with_file_names(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """LVIS v1 names images by `coco_url` (…/val2017/000000397133.jpg): file_name = `val2017/…`."""
    for im in raw.get("images") or []:
        if "file_name" not in im:
            url = im.get("coco_url")
            if not isinstance(url, str) or url.count("/") < 2:
                raise AnnotationError(f"{where}: image {im.get('id')} has neither file_name nor a coco_url.")
            im["file_name"] = "/".join(url.rsplit("/", 2)[-2:])
    return raw


def load_lvis(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> DetectionSplit:
    """Catalog loader for `lvis-v1`."""
    if split not in FILES:
        raise UsageError(f"Dataset '{info.name}' has no split '{split}'; its splits are: train, test.")
    if download:
        raise UsageError(f"{info.name} cannot be downloaded by bob; fetch it from {info.source}.")
    path = Path(root) / FILES[split]
    hint = (
        f"Expected {root}/lvis/lvis_v1_{{train,val}}.json and the COCO 2017 images under {root}/coco/"
        "{train,val}2017/. See docs/suites/open-vocab.md."
    )
    if not path.is_file():
        raise DatasetNotFoundError(f"{info.name}/{split}: annotation file {path} not found. {hint}")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: not valid JSON ({err}).") from None
    if not isinstance(raw, dict):
        raise AnnotationError(f"{path}: the top level must be a JSON object.")
    split_ = split_from_coco(
        info.name, split, with_file_names(raw, str(path)), Path(root) / "coco", path, hint=hint
    )
    if not is_lvis(split_.coco):
        raise AnnotationError(f"{path}: not LVIS (categories need 'frequency', images 'neg_category_ids').")
    return split_


@contextlib.contextmanager
def _numpy_float_alias() -> Iterator[None]:
    """lvis 0.5.3 (its latest release) accumulates with `np.float`, which NumPy 1.24 removed; the
    alias (the builtin float, what it always meant) exists only while LVISEval runs."""
    import numpy as np

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
    try:
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
                evaluator = LVISEval(lvis_gt, LVISResults(lvis_gt, anns, max_dets=300), iou_type)
                evaluator.run()
                prefix = "box" if iou_type == "bbox" else "mask"
                for key in LVIS_KEYS:
                    value = float(evaluator.get_results()[key])
                    if value >= 0:  # -1: no ground truth of that kind
                        out[f"lvis_{prefix}_{key}"] = value
    return out
