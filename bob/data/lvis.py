"""LVIS v1: its JSON over COCO's images, as a `DetectionSplit` (the `lvis-v1` dataset entry).

Layout (ROOT is `--task-arg root=...`, else $BOB_DATA_ROOT, else ~/.cache/bob/data):

    ROOT/lvis/lvis_v1_{train,val}.json      LVIS v1 annotations (bob's test split is val)
    ROOT/coco/{train,val}2017/<image>       COCO 2017 images (LVIS names them by `coco_url`)

LVIS's categories carry `frequency` (`r`are, `c`ommon, `f`requent), and its images the categories
verified absent (`neg_category_ids`) and not exhaustively annotated (`not_exhaustive_category_ids`);
the loader keeps them in the split's COCO dict for the open-vocab suite's federated AP
(tasks/open_vocab/metrics.py). The detection suite runs on LVIS as on any COCO-format set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bob.data.base import DatasetInfo
from bob.data.coco import AnnotationError, DetectionSplit, split_from_coco
from bob.errors import DatasetNotFoundError, UsageError

FILES = {"train": "lvis/lvis_v1_train.json", "test": "lvis/lvis_v1_val.json"}


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
