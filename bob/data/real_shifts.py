"""Real shifted test sets read from the data root: ImageNet-A, -R, -Sketch, -V2, -C and VisDA-2017.

Every ImageNet variant is labelled in ImageNet-1k's index space (the 1000 WordNet ids, sorted, as
timm and torchvision order them), so one classifier trained on ImageNet scores them all. ImageNet-A
and -R cover 200 of those classes; timm ships their index lists, which the `ood` suite uses to mask
logits (`valid_class_indices`). When files are missing, the error names the folder bob looked in and
the layout it expected there.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np

from bob.data.base import DatasetInfo, FileSplit, ImageSplit, stratified_partition
from bob.data.real import IMG_EXTENSIONS, _class_dirs, _scan_class_folder
from bob.errors import DatasetNotFoundError, UsageError

SPLIT_SEED = 0  # fixed seed of the drawn VisDA synthetic test split: part of the dataset's definition

LAYOUTS: dict[str, tuple[str, str]] = {
    # name: (folder under the data root, what bob expects inside it)
    "imagenet-a": ("imagenet-a", "one folder per WordNet id (200 of them, e.g. n01498041/) of .jpg images"),
    "imagenet-r": ("imagenet-r", "one folder per WordNet id (200 of them, e.g. n01443537/) of .jpg images"),
    "imagenet-sketch": (
        "imagenet-sketch",
        "one folder per WordNet id (1000, e.g. n01440764/) of .JPEG images",
    ),
    "imagenet-v2": (
        "imagenetv2-matched-frequency-format-val",
        "folders named 0..999 (the ImageNet-1k class index) of .jpeg images",
    ),
    "imagenet-c": (
        "imagenet-c",
        "<corruption>/<severity 1-5>/<WordNet id>/*.JPEG (the released ImageNet-C tarballs extracted)",
    ),
    "visda2017": (
        "visda2017",
        "train/ (synthetic) and validation/ (real), each with image_list.txt ('<class>/<file> <label>' "
        "per line) and the 12 class folders it lists",
    ),
}
VISDA_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bus",
    "car",
    "horse",
    "knife",
    "motorcycle",
    "person",
    "plant",
    "skateboard",
    "train",
    "truck",
)


def _missing(name: str, looked_in: Path, root: Path, detail: str = "") -> DatasetNotFoundError:
    subdir, expects = LAYOUTS[name]
    message = f"Dataset '{name}' was not found: bob looked in {looked_in} and expected {expects} there"
    message += f" ({detail})." if detail else "."
    return DatasetNotFoundError(
        f"{message} bob does not download it. Put it under DATA_ROOT/{subdir}/ and point bob at DATA_ROOT "
        "with `--task-arg root=DIR`, or set the BOB_DATA_ROOT environment variable to it."
    )


# ---------------------------------------------------------------------------------- ImageNet labels


def _timm_info_lines(filename: str) -> list[str]:
    import importlib.resources

    text = (importlib.resources.files("timm.data") / "_info" / filename).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (timm's list; sorted)."""
    return tuple(_timm_info_lines("imagenet_synsets.txt"))


@cache
def valid_class_indices(subset: str) -> np.ndarray:
    """ImageNet-1k indices of the 200 classes of ImageNet-A or -R (timm's published lists)."""
    files = {"imagenet-a": "imagenet_a_indices.txt", "imagenet-r": "imagenet_r_indices.txt"}
    if subset not in files:
        raise UsageError(f"No class subset '{subset}'; known subsets: {', '.join(files)}.")
    return np.asarray([int(v) for v in _timm_info_lines(files[subset])], dtype=np.int64)


def _wnid_split(
    name: str, split: str, folder: Path, root: Path, allowed: set[str] | None = None
) -> FileSplit:
    """`folder/<wnid>/*` labelled with ImageNet-1k indices; `allowed` limits the wnids it may hold."""
    if not folder.is_dir():
        raise _missing(name, folder, root)
    wnids = imagenet_wnids()
    index = {w: i for i, w in enumerate(wnids)}
    found = _class_dirs(folder)
    if not found:
        raise _missing(name, folder, root, "the folder holds no class folder")
    valid = allowed if allowed is not None else set(wnids)
    unknown = [d for d in found if d not in valid]
    if unknown:
        raise DatasetNotFoundError(
            f"Dataset '{name}': {folder} holds folders that are not among its classes: {', '.join(unknown[:5])}"
            f"{' …' if len(unknown) > 5 else ''}. Expected {LAYOUTS[name][1]}."
        )
    paths, labels = _scan_labelled([(folder / d, index[d]) for d in found])
    return FileSplit(name, split, wnids, folder, paths, labels)


def _scan_labelled(folders: list[tuple[Path, int]]) -> tuple[list[Path], np.ndarray]:
    paths: list[Path] = []
    labels: list[int] = []
    for class_dir, label in folders:
        files = _scan_class_folder(class_dir)
        if not files:
            raise DatasetNotFoundError(
                f"Class folder {class_dir} holds no image file (looked for {', '.join(IMG_EXTENSIONS)}, any "
                "case). Remove the empty folder or restore its images."
            )
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def _valid_wnids(subset: str) -> set[str]:
    wnids = imagenet_wnids()
    return {wnids[i] for i in valid_class_indices(subset)}


def load_imagenet_a(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> FileSplit:
    return _wnid_split("imagenet-a", split, root / LAYOUTS["imagenet-a"][0], root, _valid_wnids("imagenet-a"))


def load_imagenet_r(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> FileSplit:
    return _wnid_split("imagenet-r", split, root / LAYOUTS["imagenet-r"][0], root, _valid_wnids("imagenet-r"))


def load_imagenet_sketch(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> FileSplit:
    return _wnid_split("imagenet-sketch", split, root / LAYOUTS["imagenet-sketch"][0], root)


def load_imagenet_v2(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> FileSplit:
    """ImageNet-V2 (matched frequency): folder `k` holds images of ImageNet-1k class index k."""
    folder = root / LAYOUTS["imagenet-v2"][0]
    if not folder.is_dir():
        raise _missing("imagenet-v2", folder, root)
    found = _class_dirs(folder)
    if not found:
        raise _missing("imagenet-v2", folder, root, "the folder holds no class folder")
    bad = [d for d in found if not (d.isdigit() and 0 <= int(d) < 1000)]
    if bad:
        raise DatasetNotFoundError(
            f"Dataset 'imagenet-v2': {folder} holds folders that are not class indices 0..999: "
            f"{', '.join(bad[:5])}. Expected {LAYOUTS['imagenet-v2'][1]}."
        )
    ordered = sorted(found, key=int)
    paths, labels = _scan_labelled([(folder / d, int(d)) for d in ordered])
    return FileSplit("imagenet-v2", split, imagenet_wnids(), folder, paths, labels)


def load_imagenet_c(
    info: DatasetInfo, split: str, *, root: Path, download: bool = False, corruption: str, severity: int
) -> FileSplit:
    """One pre-rendered ImageNet-C set: `imagenet-c/<corruption>/<severity>/<wnid>/*`."""
    folder = root / LAYOUTS["imagenet-c"][0] / corruption / str(severity)
    return _wnid_split("imagenet-c", split, folder, root)


# ------------------------------------------------------------------------------------------ VisDA


def _visda_list(part: str, root: Path) -> tuple[Path, list[Path], np.ndarray]:
    tree = root / LAYOUTS["visda2017"][0] / part
    listing = tree / "image_list.txt"
    if not listing.is_file():
        raise _missing("visda2017", tree, root, f"{listing} is missing")
    paths: list[Path] = []
    labels: list[int] = []
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= len(VISDA_CLASSES):
            raise DatasetNotFoundError(
                f"Dataset 'visda2017': line {number} of {listing} reads '{line.strip()}'; expected "
                f"'<relative path> <label 0..{len(VISDA_CLASSES) - 1}>'."
            )
        paths.append(tree / parts[0])
        labels.append(int(parts[1]))
    if not paths:
        raise _missing("visda2017", tree, root, f"{listing} lists no image")
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
        raise DatasetNotFoundError(
            f"Dataset 'visda2017': {len(absent)} files listed in {listing} are missing, e.g. {absent[0]}. "
            f"Expected {LAYOUTS['visda2017'][1]}."
        )
    return tree, paths, np.asarray(labels, dtype=np.int64)


def load_visda_synthetic(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> ImageSplit:
    """VisDA-2017 synthetic renderings; no official test split, so a seeded stratified 10% is held out."""
    tree, paths, labels = _visda_list("train", root)
    full = FileSplit(info.name, "all", VISDA_CLASSES, tree, paths, labels)
    train_idx, test_idx = stratified_partition(labels, 0.1, SPLIT_SEED)
    return full.subset(train_idx if split == "train" else test_idx, split)


def load_visda_real(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> FileSplit:
    """VisDA-2017 real photos (the official validation set, 55,388 images)."""
    tree, paths, labels = _visda_list("validation", root)
    return FileSplit("visda2017-real", split, VISDA_CLASSES, tree, paths, labels)
