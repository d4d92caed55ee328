"""The multilabel suite's datasets: images with a label *set* each.

A `MultiLabelSplit` is an `ImageSplit` whose pixels come from another split and which adds
`targets`, a multi-hot uint8 matrix [N, C], and `ignore`, a bool matrix [N, C] of (image, class)
pairs left out of scoring (VOC's difficult-only objects). Its `labels` (the single label every
`ImageSplit` has, and the one the feature cache stores) is each image's *primary* class — the
largest object for scenes, VOC and COCO, the original ILSVRC label for ImageNet — or -1 where an
image has none; the plain top-1 is measured against it. The targets are part of the fingerprint.

Layouts (ROOT is `--task-arg root=...`, else $BOB_DATA_ROOT, else ~/.cache/bob/data):

    voc2007-cls       ROOT/VOCdevkit/VOC2007/{Annotations/<id>.xml, JPEGImages/<id>.jpg,
                      ImageSets/Main/{train,val,test}.txt}
    coco-multilabel   ROOT/coco/annotations/instances_{train,val}2014.json + ROOT/coco/{train,val}2014/
    imagenet-real     ROOT/imagenet/train/<wnid>/*.JPEG (for classifier=probe) and
                      ROOT/imagenet/val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG; the ReaL sets are read
                      from ROOT/imagenet/real.json if present, else from the copy timm ships.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bob.data.base import DatasetInfo, FileSplit, ImageSplit
from bob.data.coco import DetectionSplit, load_coco_split
from bob.data.real import scan_image_folder
from bob.data.real_shifts import imagenet_wnids
from bob.data.scenes import load_scenes
from bob.errors import DatasetNotFoundError, UsageError

log = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
VOC_SPLITS = {"train": "train", "val": "val", "test": "test"}
COCO_LAYOUTS = {
    "coco2014": {"train": "train2014", "test": "val2014"},
    "coco2017": {"train": "train2017", "test": "val2017"},
}
_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$", re.IGNORECASE)


class MultiLabelSplit(ImageSplit):
    """Pixels from `source`, label sets as `targets` [N, C] (uint8), unscored pairs as `ignore`."""

    single_label = False  # `labels` is a primary class, not each image's one label

    def __init__(
        self,
        source: ImageSplit,
        classes: tuple[str, ...] | list[str],
        targets: np.ndarray,
        primary: np.ndarray,
        ignore: np.ndarray | None = None,
        split: str | None = None,
        notes: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(source.dataset, split or source.split, classes, primary)
        targets = np.ascontiguousarray(targets, dtype=np.uint8)
        if targets.shape != (len(source), len(self.classes)):
            raise ValueError(
                f"{source.dataset}/{self.split}: targets {targets.shape} do not match "
                f"{len(source)} images x {len(self.classes)} classes"
            )
        self.source = source
        self.targets = targets
        self.ignore = np.zeros(targets.shape, bool) if ignore is None else np.asarray(ignore, bool)
        self.notes = dict(notes or {})

    def image(self, index: int) -> Image.Image:
        return self.source.image(index)

    def _identity_chunks(self) -> list[bytes]:
        return [self.source.fingerprint.encode(), self.targets.tobytes(), np.packbits(self.ignore).tobytes()]

    def take(self, indices: np.ndarray, split: str) -> MultiLabelSplit:
        """The images `indices` as a new split (e.g. a held-out validation part of train)."""
        indices = np.asarray(indices, dtype=np.int64)
        return MultiLabelSplit(
            self.source.subset(indices, split),
            self.classes,
            self.targets[indices],
            self.labels[indices],
            self.ignore[indices],
            split,
            self.notes,
        )


def random_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held_out) index arrays: a seeded random `fraction` of `n` images held out."""
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"val_fraction must be in (0, 1), got {fraction}.")
    order = np.random.default_rng(seed).permutation(n)
    n_held = min(max(round(fraction * n), 1), n - 1)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


# ------------------------------------------------------------------------------------ COCO-style


def from_coco(split: DetectionSplit, drop_empty: bool = False) -> MultiLabelSplit:
    """Image-level label sets from a detection split's COCO annotations (any annotation counts,
    crowd ones included); the primary label is the class of the largest annotation by `area`."""
    index = {cid: k for k, cid in enumerate(split.category_ids)}
    n, c = len(split), len(split.category_ids)
    targets = np.zeros((n, c), np.uint8)
    primary = np.full(n, -1, np.int64)
    for i in range(n):
        anns = split.annotations(i)
        for ann in anns:
            targets[i, index[int(ann["category_id"])]] = 1
        if anns:
            primary[i] = index[int(max(anns, key=lambda a: float(a["area"]))["category_id"])]
    keep = targets.any(axis=1)
    notes = {"images_without_labels": int((~keep).sum())}
    if drop_empty and not keep.all():
        split = split.take(np.flatnonzero(keep), split.split)
        targets, primary = targets[keep], primary[keep]
        notes["images_without_labels_dropped"] = True
    return MultiLabelSplit(split, split.classes, targets, primary, notes=notes)


def load_scenes_multilabel(
    info: DatasetInfo, split: str, *, root: Path, download: bool = False, **options: Any
) -> MultiLabelSplit:
    """Generated scenes (the detection suite's generator): the classes present are the label set."""
    return from_coco(load_scenes(info, split, root=root, **options))


def load_coco_multilabel(
    info: DatasetInfo, split: str, *, root: Path, download: bool = False, layout: str = "coco2014"
) -> MultiLabelSplit:
    """COCO instances JSON → 80-class image-level label sets; images without annotations are dropped."""
    folders = COCO_LAYOUTS[layout]
    if split not in folders:
        raise UsageError(
            f"Dataset '{info.name}' has no split '{split}'; its splits are: {', '.join(folders)}."
        )
    _refuse_download(info, download)
    folder = folders[split]
    hint = (
        f"Expected ROOT/coco/annotations/instances_{{{','.join(folders.values())}}}.json and "
        f"ROOT/coco/{{{','.join(folders.values())}}}/ with ROOT = {root}. See docs/suites/multilabel.md."
    )
    det = load_coco_split(
        info.name,
        split,
        root / "coco" / "annotations" / f"instances_{folder}.json",
        root / "coco" / folder,
        has_masks=False,
        hint=hint,
    )
    return from_coco(det, drop_empty=True)


def _refuse_download(info: DatasetInfo, download: bool) -> None:
    if download:
        raise UsageError(
            f"{info.name} cannot be downloaded by bob; fetch it from {info.source} and lay it out as "
            "described in docs/suites/multilabel.md."
        )


# --------------------------------------------------------------------------------------- VOC 2007


class _PathSplit(ImageSplit):
    """Image files by path, identified by name and size (the pixels of a multi-label split)."""

    def __init__(self, dataset: str, split: str, root: Path, paths: list[Path]) -> None:
        super().__init__(dataset, split, (), np.zeros(len(paths), np.int64))
        self.root, self.paths = root, paths

    def image(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as img:
            return img.convert("RGB")

    def _identity_chunks(self) -> list[bytes]:
        return [f"{p.relative_to(self.root)}\x1f{p.stat().st_size}\x1e".encode() for p in self.paths]


def _voc_objects(xml_path: Path) -> list[tuple[str, bool, float]]:
    """(class name, difficult, box area) of every object in one VOC annotation file."""
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as err:
        raise UsageError(f"{xml_path}: not a valid VOC annotation XML ({err}).") from None
    objects = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise UsageError(f"{xml_path}: object class '{name}' is not one of the 20 VOC classes.")
        box = obj.find("bndbox")
        area = 0.0
        if box is not None:
            coords = [float(box.findtext(k) or 0) for k in ("xmin", "ymin", "xmax", "ymax")]
            area = max(coords[2] - coords[0], 0.0) * max(coords[3] - coords[1], 0.0)
        objects.append((name, (obj.findtext("difficult") or "0").strip() == "1", area))
    return objects


def load_voc2007(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> MultiLabelSplit:
    """VOC 2007 classification labels from the detection XMLs (ImageSets/Main/<split>.txt ids).

    A class whose only objects in an image are marked `difficult` is positive for training and
    ignored when scoring (ML-GCN's convention); a class with any non-difficult object is positive.
    """
    _refuse_download(info, download)
    base = root / "VOCdevkit" / "VOC2007"
    layout = (
        "VOCdevkit/VOC2007/Annotations/<id>.xml, VOCdevkit/VOC2007/JPEGImages/<id>.jpg and "
        "VOCdevkit/VOC2007/ImageSets/Main/{train,val,test}.txt"
    )
    ids_file = base / "ImageSets" / "Main" / f"{VOC_SPLITS[split]}.txt"
    if not ids_file.is_file():
        raise DatasetNotFoundError(
            f"Dataset '{info.name}': {ids_file} not found. Expected {layout} under {root}. Point bob at "
            "the folder that holds VOCdevkit/ with `--task-arg root=DIR` or $BOB_DATA_ROOT."
        )
    ids = [line.split()[0] for line in ids_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise UsageError(f"{ids_file} lists no image id; the {split} split is empty.")
    for kind, folder, ext in (("annotation", "Annotations", ".xml"), ("image", "JPEGImages", ".jpg")):
        missing = [i for i in ids if not (base / folder / f"{i}{ext}").is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"Dataset '{info.name}/{split}': {len(missing)} {kind} file(s) listed in {ids_file} are "
                f"missing, e.g. {base / folder / (missing[0] + ext)}. Expected {layout}."
            )
    index = {name: k for k, name in enumerate(VOC_CLASSES)}
    targets = np.zeros((len(ids), len(VOC_CLASSES)), np.uint8)
    clear = np.zeros(targets.shape, bool)  # the class has at least one non-difficult object
    primary = np.full(len(ids), -1, np.int64)
    for i, image_id in enumerate(ids):
        objects = _voc_objects(base / "Annotations" / f"{image_id}.xml")
        for name, difficult, _ in objects:
            targets[i, index[name]] = 1
            clear[i, index[name]] |= not difficult
        if objects:
            primary[i] = index[max(objects, key=lambda o: (not o[1], o[2]))[0]]
    ignore = (targets == 1) & ~clear
    paths = [base / "JPEGImages" / f"{i}.jpg" for i in ids]
    notes = {
        "difficult_only_pairs": int(ignore.sum()),
        "difficult": "positive in training, ignored in scoring",
    }
    return MultiLabelSplit(
        _PathSplit(info.name, split, base, paths), VOC_CLASSES, targets, primary, ignore, notes=notes
    )


# ----------------------------------------------------------------------------------- ImageNet ReaL


def read_real_json(path: Path | None) -> tuple[list[list[int]], dict[str, str]]:
    """The ReaL label sets (one list per val image, in ILSVRC2012_val_<n> order) and their source."""
    if path is not None:
        raw, source = path.read_bytes(), str(path)
    else:
        raw = (importlib.resources.files("timm.data") / "_info" / "imagenet_real_labels.json").read_bytes()
        source = "timm.data/_info/imagenet_real_labels.json"
    try:
        sets = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{source}: not valid JSON ({err}).") from None
    ok = isinstance(sets, list) and all(
        isinstance(s, list) and all(isinstance(v, int) and 0 <= v < 1000 for v in s) for s in sets
    )
    if not ok or not sets:
        raise UsageError(f"{source}: expected a non-empty list of lists of class indices 0..999 (real.json).")
    return sets, {"real_json": source, "real_json_sha256": hashlib.sha256(raw).hexdigest()}


def load_imagenet_real(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> ImageSplit:
    """`train`: ImageNet train (single labels, for a probe); `test`: ImageNet val with ReaL sets."""
    _refuse_download(info, download)
    wnids = list(imagenet_wnids())
    folder = root / "imagenet" / ("train" if split == "train" else "val")
    expects = "imagenet/train/<wnid>/*.JPEG and imagenet/val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG"
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"Dataset '{info.name}': {folder} not found. Expected {expects} under {root} (validation "
            "images sorted into one folder per class). bob cannot download ImageNet; point bob at the "
            "folder that holds imagenet/ with `--task-arg root=DIR` or $BOB_DATA_ROOT."
        )
    unknown = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name not in set(wnids))
    if unknown:
        raise UsageError(
            f"{folder} holds folders that are not ImageNet-1k WordNet ids: {', '.join(unknown[:5])}."
        )
    paths, labels = scan_image_folder(folder, wnids)
    if not paths:
        raise DatasetNotFoundError(f"Dataset '{info.name}': {folder} holds no class folder with images.")
    if split == "train":  # single labels: a softmax probe trains on them
        return FileSplit(info.name, split, wnids, folder, paths, labels)
    return _with_real_sets(_PathSplit(info.name, split, folder, paths), wnids, labels, root)


def _with_real_sets(files: _PathSplit, wnids: list[str], labels: np.ndarray, root: Path) -> MultiLabelSplit:
    local = root / "imagenet" / "real.json"
    sets, notes = read_real_json(local if local.is_file() else None)
    numbers = []
    for path in files.paths:
        match = _VAL_NAME.match(path.name)
        if match is None:
            raise UsageError(
                f"{path}: ReaL labels are matched by file name, and this is not an ILSVRC2012_val_<8 "
                "digits>.JPEG name."
            )
        numbers.append(int(match.group(1)))
    if sorted(numbers) != list(range(1, len(sets) + 1)):
        missing = sorted(set(range(1, len(sets) + 1)) - set(numbers))
        raise UsageError(
            f"ReaL label file {notes['real_json']} has {len(sets)} entries but {files.root} holds "
            f"{len(numbers)} validation images numbered {min(numbers)}..{max(numbers)}; they must be exactly "
            f"ILSVRC2012_val_00000001 .. {len(sets):08d}"
            + (f" (e.g. {missing[0]:08d} is missing)." if missing else " (duplicate or extra numbers).")
        )
    # Sorted val order, as timm's RealLabelsImagenet expects its filenames.
    order = np.argsort(numbers, kind="stable")
    files = _PathSplit(files.dataset, files.split, files.root, [files.paths[i] for i in order])
    targets = np.zeros((len(order), len(wnids)), np.uint8)
    for row, number in enumerate(np.asarray(numbers)[order]):
        targets[row, sets[number - 1]] = 1
    notes["real_empty_sets"] = int((~targets.any(axis=1)).sum())
    return MultiLabelSplit(files, wnids, targets, labels[order], notes=notes)
