"""The base / novel vocabulary: which categories are novel, and the training split without them."""

from __future__ import annotations

from bob.data.coco import DetectionSplit
from bob.errors import UsageError


def novel_ids(split: DetectionSplit, names: tuple[str, ...], where: str) -> set[int]:
    """Category ids of the novel set: `names` if given, else the dataset's own marks."""
    cats = split.coco["categories"]
    if names:
        by_name = {c["name"]: int(c["id"]) for c in cats}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise UsageError(
                f"{where}: novel categories {unknown} are not among the dataset's: {', '.join(by_name)}."
            )
        ids = {by_name[n] for n in names}
    else:
        ids = {int(c["id"]) for c in cats if c.get("split") == "novel" or c.get("frequency") == "r"}
        if not ids:
            raise UsageError(
                f"{where}: the dataset marks no novel categories; name them with -a novel=<name>,<name>."
            )
    if len(ids) == len(cats):
        raise UsageError(f"{where}: every category is novel, so nothing is left to train on.")
    return ids


def without_categories(split: DetectionSplit, ids: set[int], name: str) -> DetectionSplit:
    """The same images with the annotations of categories `ids` removed (they become background)."""
    coco = {
        **split.coco,
        "annotations": [a for a in split.coco["annotations"] if int(a["category_id"]) not in ids],
    }
    return DetectionSplit(
        split.dataset, name, coco, arrays=split.arrays, image_dir=split.image_dir, has_masks=split.has_masks
    )
