"""Real detection datasets, read from COCO instances JSON under the data root.

Layouts (ROOT is `--task-arg root=...`, else $BOB_DATA_ROOT, else ~/.cache/bob/data):

    coco2017            ROOT/coco/annotations/instances_{train,val}2017.json
                        ROOT/coco/{train,val}2017/<file_name>
    sim10k-cityscapes   ROOT/sim10k/annotations/instances_car.json         (train: Sim10k in COCO JSON)
                        ROOT/sim10k/images/<file_name>
                        ROOT/cityscapes/annotations/instancesonly_filtered_gtFine_val.json   (test)
                        ROOT/cityscapes/leftImg8bit/val/<file_name>

bob's `test` split of COCO is the official val2017 set (test-dev has no public labels).
"""

from __future__ import annotations

from pathlib import Path

from bob.data.base import DatasetInfo
from bob.errors import UsageError
from bob.tasks.detection.data import DetectionSplit, load_coco_split

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
