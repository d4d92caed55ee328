"""Real semantic-segmentation datasets, read from their official layouts under the data root.

Layouts (ROOT is `--task-arg root=...`, else $BOB_DATA_ROOT, else ~/.cache/bob/data):

    ade20k          ROOT/ADEChallengeData2016/images/{training,validation}/*.jpg
                    ROOT/ADEChallengeData2016/annotations/{training,validation}/*.png   (0 = other)
    cityscapes-seg  ROOT/cityscapes/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png
                    ROOT/cityscapes/gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png
    voc2012-seg     ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
                    ROOT/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
                    ROOT/VOCdevkit/VOC2012/SegmentationClass/<id>.png               (palette PNG)

bob's `test` split is each dataset's official validation set (the test sets have no public labels).
ADE20K is read with mmseg's `reduce_zero_label` (file value 0 → ignore, v → v − 1: 150 classes);
Cityscapes needs the 19-class `labelTrainIds` maps that cityscapesscripts writes; VOC's palette
indices are the labels (0 background, 1..20 objects, 255 the ignored object borders).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bob.data.base import DatasetInfo
from bob.errors import DatasetNotFoundError, UsageError
from bob.tasks.segmentation.data import SegmentationSplit

# mmseg's ADE20KDataset class order (the SceneParsing benchmark's objectInfo150 order).
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair",
    "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box",
    "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
    "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet",
    "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower",
    "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle",
    "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle",
    "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)  # fmt: skip
# cityscapesscripts' trainId order (labels.py, trainId 0..18).
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)  # fmt: skip
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """Where one dataset's images and label maps live, relative to ROOT, and how they pair up."""

    base: str
    images: dict[str, str]  # bob split → image folder under base
    masks: dict[str, str]  # bob split → mask folder under base
    image_suffix: str
    mask_suffix: str
    classes: tuple[str, ...]
    reduce_zero_label: bool = False
    id_lists: dict[str, str] | None = None  # bob split → list of image ids (VOC), else every file
    hint: str = ""


LAYOUTS: dict[str, Layout] = {
    "ade20k": Layout(
        base="ADEChallengeData2016",
        images={"train": "images/training", "test": "images/validation"},
        masks={"train": "annotations/training", "test": "annotations/validation"},
        image_suffix=".jpg",
        mask_suffix=".png",
        classes=ADE20K_CLASSES,
        reduce_zero_label=True,
        hint="Unpack ADEChallengeData2016.zip (http://sceneparsing.csail.mit.edu) into ROOT.",
    ),
    "cityscapes-seg": Layout(
        base="cityscapes",
        images={"train": "leftImg8bit/train", "test": "leftImg8bit/val"},
        masks={"train": "gtFine/train", "test": "gtFine/val"},
        image_suffix="_leftImg8bit.png",
        mask_suffix="_gtFine_labelTrainIds.png",
        classes=CITYSCAPES_CLASSES,
        hint="Unpack leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into ROOT/cityscapes, then "
        "write the trainId maps: pip install cityscapesscripts; "
        "CITYSCAPES_DATASET=ROOT/cityscapes csCreateTrainIdLabelImgs.",
    ),
    "voc2012-seg": Layout(
        base="VOCdevkit/VOC2012",
        images={"train": "JPEGImages", "test": "JPEGImages"},
        masks={"train": "SegmentationClass", "test": "SegmentationClass"},
        image_suffix=".jpg",
        mask_suffix=".png",
        classes=VOC_CLASSES,
        id_lists={"train": "ImageSets/Segmentation/train.txt", "test": "ImageSets/Segmentation/val.txt"},
        hint="Unpack VOCtrainval_11-May-2012.tar into ROOT (it creates VOCdevkit/VOC2012).",
    ),
}


def _describe(layout: Layout, root: Path) -> str:
    parts = []
    for split in layout.images:
        where = f"{layout.base}/{layout.images[split]}/**/*{layout.image_suffix} + "
        where += f"{layout.base}/{layout.masks[split]}/**/*{layout.mask_suffix}"
        if layout.id_lists:
            where = f"{layout.base}/{layout.id_lists[split]} listing ids of " + where
        parts.append(f"{split}: {where}")
    return f"Expected layout under {root}: " + "; ".join(parts) + f". {layout.hint}"


def _ids_from_list(path: Path, name: str, expected: str) -> list[str]:
    if not path.is_file():
        raise DatasetNotFoundError(f"{name}: image list {path} not found. {expected}")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise UsageError(f"{name}: image list {path} is empty.")
    return ids


def pair_files(layout: Layout, root: Path, split: str, name: str) -> tuple[list[Path], list[Path]]:
    """(image paths, mask paths) of one split, sorted; missing folders, images without a mask and
    empty splits raise before anything is read."""
    expected = _describe(layout, root)
    base = root / layout.base
    image_dir, mask_dir = base / layout.images[split], base / layout.masks[split]
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DatasetNotFoundError(f"{name}/{split}: folder {folder} not found. {expected}")
    if layout.id_lists:
        ids = _ids_from_list(base / layout.id_lists[split], f"{name}/{split}", expected)
        images = [image_dir / f"{i}{layout.image_suffix}" for i in ids]
        absent = [p for p in images if not p.is_file()]
        if absent:
            shown = ", ".join(str(p) for p in absent[:3])
            raise DatasetNotFoundError(
                f"{name}/{split}: {len(absent)} listed image(s) are missing: {shown}. {expected}"
            )
    else:
        images = sorted(p for p in image_dir.rglob(f"*{layout.image_suffix}") if p.is_file())
    if not images:
        raise UsageError(f"{name}/{split}: no *{layout.image_suffix} image under {image_dir}. {expected}")
    masks = [
        mask_dir
        / p.relative_to(image_dir).with_name(p.name[: -len(layout.image_suffix)] + layout.mask_suffix)
        for p in images
    ]
    unmatched = [(i, m) for i, m in zip(images, masks, strict=True) if not m.is_file()]
    if unmatched:
        shown = "; ".join(f"{i.name} (expected {m})" for i, m in unmatched[:3])
        raise DatasetNotFoundError(
            f"{name}/{split}: {len(unmatched)} image(s) have no label map: {shown}. {expected}"
        )
    return images, masks


def load_segmentation_layout(
    info: DatasetInfo, split: str, *, root: Path, download: bool = False, layout: str
) -> SegmentationSplit:
    """Catalog loader for the layouts above; `download` is refused (these sets need registration or
    a licence click-through)."""
    spec = LAYOUTS[layout]
    if split not in spec.images:
        raise UsageError(f"Dataset '{info.name}' has no split '{split}'; its splits are: train, test.")
    if download:
        raise UsageError(
            f"{info.name} cannot be downloaded by bob; fetch it from {info.source} and lay it out as "
            "described in docs/suites/segmentation.md."
        )
    images, masks = pair_files(spec, Path(root), split, info.name)
    return SegmentationSplit(
        info.name,
        split,
        spec.classes,
        image_paths=images,
        mask_paths=masks,
        root=Path(root),
        reduce_zero_label=spec.reduce_zero_label,
    )
