"""Detection splits: images plus one COCO-format annotation dict, validated before any training.

A `DetectionSplit` is an `ImageSplit` whose per-image content is a list of instances (box, category,
optional mask) held as a COCO dict (`images`, `annotations`, `categories`). Generated scenes hold
their pixels in memory; real datasets read image files named by the JSON. Either way the split is
checked on load: every annotation points at an existing image and a declared category, every box is
four finite numbers with non-negative size, every image file exists, and the split is not empty. A
problem is a `UsageError` that names the file and the offending id, raised before any model is built.

Category ids stay as the JSON has them (COCO's run 1..90 with gaps); the detector sees contiguous
labels 1..K in category-id order (0 is background), and `category_ids` maps them back for COCOeval.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bob.data.base import DatasetInfo, ImageSplit
from bob.errors import DatasetNotFoundError, UsageError


class AnnotationError(UsageError):
    """A COCO annotation file that is malformed or refers to things that do not exist."""


class DetectionSplit(ImageSplit):
    """One split of a detection dataset: `coco` (the annotation dict) and `image(i)` as RGB PIL.

    Image `i` is `coco["images"][i]`. There is no image-level label: `labels` is all zeros, kept
    only because every `ImageSplit` has one.
    """

    def __init__(
        self,
        dataset: str,
        split: str,
        coco: dict[str, Any],
        *,
        arrays: np.ndarray | None = None,
        image_dir: Path | None = None,
        has_masks: bool = True,
    ) -> None:
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        super().__init__(
            dataset, split, [c["name"] for c in categories], np.zeros(len(coco["images"]), np.int64)
        )
        if (arrays is None) == (image_dir is None):
            raise ValueError("a DetectionSplit holds either in-memory arrays or an image directory")
        self.coco = coco
        self.arrays = arrays
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.has_masks = has_masks
        self.category_ids = [int(c["id"]) for c in categories]
        self._by_image: dict[int, list[dict[str, Any]]] = {int(im["id"]): [] for im in coco["images"]}
        for ann in coco["annotations"]:
            self._by_image[int(ann["image_id"])].append(ann)

    def image_info(self, index: int) -> dict[str, Any]:
        return self.coco["images"][index]

    def annotations(self, index: int) -> list[dict[str, Any]]:
        return self._by_image[int(self.coco["images"][index]["id"])]

    def image(self, index: int) -> Image.Image:
        if self.arrays is not None:
            return Image.fromarray(self.arrays[index], mode="RGB")
        with Image.open(self.image_path(index)) as img:
            return img.convert("RGB")

    def image_path(self, index: int) -> Path:
        assert self.image_dir is not None
        return self.image_dir / self.coco["images"][index]["file_name"]

    def _identity_chunks(self) -> list[bytes]:
        ann = json.dumps(self.coco, sort_keys=True, separators=(",", ":")).encode()
        chunks = [hashlib.sha256(ann).digest()]
        if self.arrays is not None:
            chunks.append(self.arrays.tobytes())
        else:
            for i in range(len(self)):
                chunks.append(
                    f"{self.coco['images'][i]['file_name']}\x1f{self.image_path(i).stat().st_size}".encode()
                )
        return chunks

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "num_instances": len(self.coco["annotations"])}

    def take(self, indices: Any, split: str) -> DetectionSplit:
        """A new split of images `indices` (and their annotations), e.g. a held-out validation part."""
        indices = [int(i) for i in indices]
        images = [self.coco["images"][i] for i in indices]
        ids = {int(im["id"]) for im in images}
        coco = {
            **self.coco,
            "images": images,
            "annotations": [a for a in self.coco["annotations"] if int(a["image_id"]) in ids],
        }
        arrays = self.arrays[indices] if self.arrays is not None else None
        return DetectionSplit(
            self.dataset, split, coco, arrays=arrays, image_dir=self.image_dir, has_masks=self.has_masks
        )


# ------------------------------------------------------------------------------------- validation


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise AnnotationError(f"{where}: {message}")


def validate_coco(coco: Any, where: str) -> dict[str, Any]:
    """Check a COCO dict's structure and references; returns it normalised (in place, no copy:
    COCO train's annotations are hundreds of MB).

    Missing optional fields get COCO's meaning: `iscrowd` 0, `area` the box area, `id` a running
    number. Everything else that is wrong raises `AnnotationError` naming the first offender.
    """
    _require(isinstance(coco, dict), where, "the top level must be a JSON object")
    for key in ("images", "annotations", "categories"):
        _require(isinstance(coco.get(key), list), where, f"missing or non-list '{key}'")
    coco = {k: coco[k] for k in ("images", "annotations", "categories")}
    _require(bool(coco["images"]), where, "no images; the split is empty")
    _require(bool(coco["categories"]), where, "no categories")
    known_cats = _category_ids(coco["categories"], where)
    image_ids = _image_ids(coco["images"], where)
    for n, ann in enumerate(coco["annotations"]):
        _check_annotation(ann, n, image_ids, known_cats, where)
    _require(bool(coco["annotations"]), where, "no annotations; nothing to train or evaluate on")
    return coco


def _category_ids(categories: list[dict[str, Any]], where: str) -> set[int]:
    """The declared category ids: unique integers, each category with a name."""
    cat_ids = [c.get("id") for c in categories]
    _require(len(set(cat_ids)) == len(cat_ids), where, "duplicate category ids")
    for cat in categories:
        _require(
            isinstance(cat.get("id"), int) and "name" in cat,
            where,
            f"category {cat} needs an integer id and a name",
        )
    return set(cat_ids)


def _image_ids(images: list[dict[str, Any]], where: str) -> set[int]:
    """The declared image ids: unique, each image with its file name and size."""
    image_ids = set()
    for im in images:
        _require(
            all(k in im for k in ("id", "file_name", "width", "height")),
            where,
            f"image {im.get('id', im)} needs id, file_name, width and height",
        )
        _require(im["id"] not in image_ids, where, f"image id {im['id']} appears twice")
        image_ids.add(im["id"])
    return image_ids


def _check_annotation(
    ann: dict[str, Any], n: int, image_ids: set[int], known_cats: set[int], where: str
) -> None:
    """Annotation `n`: its references and box checked, its optional fields filled in (in place)."""
    ann.setdefault("id", n + 1)
    ann.setdefault("iscrowd", 0)
    aid = ann["id"]
    _require(
        ann.get("image_id") in image_ids,
        where,
        f"annotation {aid} points to image id {ann.get('image_id')}, which is not in 'images'",
    )
    _require(
        ann.get("category_id") in known_cats,
        where,
        f"annotation {aid} has category id {ann.get('category_id')}, which is not in 'categories' "
        f"(known: {sorted(known_cats)})",
    )
    box = ann.get("bbox")
    ok = (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)
    )
    _require(
        ok and box[2] >= 0 and box[3] >= 0,
        where,
        f"annotation {aid} has bbox {box}; expected [x, y, width, height] with width, height >= 0",
    )
    ann.setdefault("area", float(box[2] * box[3]))


def keep_categories(coco: dict[str, Any], names: tuple[str, ...], where: str) -> dict[str, Any]:
    """Restrict a COCO dict to the named categories (e.g. `car` for Sim10k → Cityscapes)."""
    by_name = {c["name"]: c for c in coco["categories"]}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise AnnotationError(
            f"{where}: no category named {', '.join(missing)}; the file has: {', '.join(sorted(by_name))}."
        )
    ids = {by_name[n]["id"] for n in names}
    out = {
        "images": coco["images"],
        "categories": [c for c in coco["categories"] if c["id"] in ids],
        "annotations": [a for a in coco["annotations"] if a["category_id"] in ids],
    }
    _require(bool(out["annotations"]), where, f"no annotations of {', '.join(names)}")
    return out


def load_coco_split(
    dataset: str,
    split: str,
    annotation_file: Path,
    image_dir: Path,
    *,
    categories: tuple[str, ...] | None = None,
    has_masks: bool = True,
    hint: str = "",
) -> DetectionSplit:
    """A split from a COCO instances JSON and its image folder, fully validated."""
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    if not annotation_file.is_file():
        raise DatasetNotFoundError(
            f"{dataset}/{split}: annotation file {annotation_file} not found. {hint}".strip()
        )
    if not image_dir.is_dir():
        raise DatasetNotFoundError(f"{dataset}/{split}: image folder {image_dir} not found. {hint}".strip())
    try:
        raw = json.loads(annotation_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{annotation_file}: not valid JSON ({err}).") from None
    return split_from_coco(dataset, split, raw, image_dir, annotation_file, categories, has_masks, hint)


def split_from_coco(
    dataset: str,
    split: str,
    raw: Any,
    image_dir: Path,
    annotation_file: Path,
    categories: tuple[str, ...] | None = None,
    has_masks: bool = True,
    hint: str = "",
) -> DetectionSplit:
    """A split from an already parsed COCO dict (read from `annotation_file`), fully validated."""
    coco = validate_coco(raw, str(annotation_file))
    if categories:
        coco = keep_categories(coco, categories, str(annotation_file))
    missing = [im["file_name"] for im in coco["images"] if not os.path.isfile(image_dir / im["file_name"])]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DatasetNotFoundError(
            f"{dataset}/{split}: {len(missing)} image file(s) named in {annotation_file} are missing under "
            f"{image_dir}: {shown}. {hint}".strip()
        )
    if has_masks:
        no_mask = [a["id"] for a in coco["annotations"] if not a["iscrowd"] and not a.get("segmentation")]
        _require(
            not no_mask,
            str(annotation_file),
            f"annotation {no_mask[:1]} has no segmentation, but {dataset} is scored with mask AP",
        )
    return DetectionSplit(dataset, split, coco, image_dir=image_dir, has_masks=has_masks)


# Real detection datasets, read from COCO instances JSON under the data root.
#
# Layouts (ROOT is `--task-arg root=...`, else $BOB_DATA_ROOT, else ~/.cache/bob/data):
#
#     coco2017            ROOT/coco/annotations/instances_{train,val}2017.json
#                         ROOT/coco/{train,val}2017/<file_name>
#     sim10k-cityscapes   ROOT/sim10k/annotations/instances_car.json         (train: Sim10k in COCO JSON)
#                         ROOT/sim10k/images/<file_name>
#                         ROOT/cityscapes/annotations/instancesonly_filtered_gtFine_val.json   (test)
#                         ROOT/cityscapes/leftImg8bit/val/<file_name>
#
# bob's `test` split of COCO is the official val2017 set (test-dev has no public labels).

# (annotation file, image folder) relative to ROOT, per bob split.
LAYOUTS: dict[str, dict[str, tuple[str, str]]] = {
    "coco2017": {
        "train": ("coco/annotations/instances_train2017.json", "coco/train2017"),
        "test": ("coco/annotations/instances_val2017.json", "coco/val2017"),
    },
    "sim10k-cityscapes": {
        "train": ("sim10k/annotations/instances_car.json", "sim10k/images"),
        "test": (
            "cityscapes/annotations/instancesonly_filtered_gtFine_val.json",
            "cityscapes/leftImg8bit/val",
        ),
    },
}


def load_coco_layout(
    info: DatasetInfo,
    split: str,
    *,
    root: Path,
    download: bool = False,
    layout: str,
    categories: tuple[str, ...] | None = None,
    has_masks: bool = True,
) -> DetectionSplit:
    """Catalog loader for the layouts above; `download` is refused (these sets need registration)."""
    files = LAYOUTS[layout]
    if split not in files:
        raise UsageError(f"Dataset '{info.name}' has no split '{split}'; its splits are: {', '.join(files)}.")
    if download:
        raise UsageError(
            f"{info.name} cannot be downloaded by bob; fetch it from {info.source} and lay it out as "
            "described in docs/suites/detection.md."
        )
    ann, images = files[split]
    hint = (
        f"Expected layout under {root}: "
        + "; ".join(f"{s}: {a} + {d}/" for s, (a, d) in files.items())
        + ". See docs/suites/detection.md."
    )
    return load_coco_split(
        info.name, split, root / ann, root / images, categories=categories, has_masks=has_masks, hint=hint
    )
