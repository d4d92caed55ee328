"""Real datasets read from a data root: torchvision's parsers for the classic ones, a plain folder scan
for ImageNet and for any ImageFolder-style tree.

bob reuses the file lists torchvision parses (it never copies pixels for file-based sets) and wraps
them as `FileSplit`s rooted at the dataset's own folder, so fingerprints do not depend on where the data
root lives. Nothing is downloaded unless asked (`download=True`). When files are missing, the error
names the dataset, the directory bob looked in, what it expected there, and the ways out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bob.data.base import ArraySplit, DatasetInfo, FileSplit, ImageSplit, stratified_partition
from bob.errors import DatasetNotFoundError, UsageError

log = logging.getLogger(__name__)

SPLIT_SEED = 0  # fixed seed of the drawn splits (eurosat): part of the dataset's definition
# The image extensions torchvision's ImageFolder accepts (matched case-insensitively).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Layout:
    """Where a dataset lives under the data root, in torchvision's own layout."""

    subdir: str  # relative to the root
    expects: str  # what bob expects to find inside it, for the error message


LAYOUTS: dict[str, Layout] = {
    "cifar10": Layout(
        "cifar-10-batches-py",
        "the CIFAR-10 python batches data_batch_1..5, test_batch and batches.meta "
        "(cifar-10-python.tar.gz extracted in the root)",
    ),
    "cifar100": Layout(
        "cifar-100-python",
        "the CIFAR-100 files train, test and meta (cifar-100-python.tar.gz extracted in the root)",
    ),
    "flowers102": Layout("flowers-102", "jpg/image_00001.jpg…, imagelabels.mat and setid.mat"),
    "fgvc-aircraft": Layout(
        "fgvc-aircraft-2013b",
        "data/images/*.jpg, data/variants.txt and data/images_variant_{train,val,test}.txt",
    ),
    "dtd": Layout("dtd/dtd", "images/<class>/*.jpg and labels/{train,val,test}1.txt"),
    "pets": Layout("oxford-iiit-pet", "images/*.jpg and annotations/{trainval,test}.txt"),
    "food101": Layout("food-101", "images/<class>/*.jpg and meta/{train,test}.json"),
    "eurosat": Layout("eurosat/2750", "one folder per class (AnnualCrop, Forest, …) of the RGB .jpg tiles"),
    "eurosat-coop": Layout(
        "eurosat",
        "2750/<class>/*.jpg (the RGB tiles) and CoOp's split file split_zhou_EuroSAT.json beside 2750/ "
        "(from https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md#eurosat)",
    ),
    "imagenet": Layout(
        "imagenet",
        "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (the ILSVRC-2012 images, validation images sorted "
        "into one folder per class)",
    ),
}


def not_found_message(name: str, looked_in: Path, expects: str, root: Path, detail: str = "") -> str:
    """One paragraph: which dataset, where bob looked and for what, and the three ways out."""
    message = f"Dataset '{name}' was not found: bob looked in {looked_in} and expected {expects} there"
    message += f" ({detail})." if detail else "."
    return (
        f"{message} Point bob at the folder that holds '{looked_in.relative_to(root)}' with "
        "`--task-arg root=DIR`, or set the BOB_DATA_ROOT environment variable to it, or add "
        f"`--task-arg download=true` to download it into {root} (needs internet)."
    )


def _layout_key(info: DatasetInfo, layout: str | None, known: dict[str, Any]) -> str:
    """Which built-in layout a catalog entry uses: its `layout` option, else its own name."""
    key = layout or info.name
    if key not in known:
        raise UsageError(
            f"Dataset '{info.name}' needs the option layout=<one of: {', '.join(known)}> to say which "
            "torchvision dataset it reads."
        )
    return key


def _torchvision_call(info: DatasetInfo, key: str, root: Path, build: Callable[[], Any]) -> Any:
    """Run a torchvision constructor, turning its missing-or-corrupt errors into bob's message."""
    layout = LAYOUTS[key]
    try:
        return build()
    except RuntimeError as err:
        if "not found" not in str(err).lower():
            raise
        # Only torchvision's first sentence: its advice ("use download=True") is the Python spelling.
        detail = "torchvision: " + str(err).split(". ")[0].rstrip(".")
        raise DatasetNotFoundError(
            not_found_message(info.name, root / layout.subdir, layout.expects, root, detail)
        ) from err
    except OSError as err:  # a missing annotation file, or a failed download
        detail = f"{type(err).__name__}: {err}"
        raise DatasetNotFoundError(
            not_found_message(info.name, root / layout.subdir, layout.expects, root, detail)
        ) from err


def load_cifar(
    info: DatasetInfo, split: str, *, root: Path, download: bool = False, layout: str | None = None
) -> ArraySplit:
    """CIFAR-10 / CIFAR-100 (`layout`, default the dataset's name) as in-memory arrays."""
    from torchvision import datasets

    key = _layout_key(info, layout, {"cifar10": None, "cifar100": None})
    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[key]
    ds = _torchvision_call(info, key, root, lambda: cls(str(root), train=split == "train", download=download))
    # torchvision hands out an HWC view of its NCHW array: one compaction, after which the original
    # is freed with `ds`.
    images = np.ascontiguousarray(ds.data)
    return ArraySplit(info.name, split, list(ds.classes), images, np.asarray(ds.targets))


@dataclass(frozen=True)
class _FileSet:
    """How to get a file list out of one torchvision dataset class."""

    cls_name: str
    split_arg: Callable[[str], dict[str, Any]]
    files_attr: str
    labels_attr: str = "_labels"


_FILE_SETS: dict[str, _FileSet] = {
    "flowers102": _FileSet("Flowers102", lambda s: {"split": s}, "_image_files"),
    "fgvc-aircraft": _FileSet("FGVCAircraft", lambda s: {"split": s}, "_image_files"),
    "dtd": _FileSet("DTD", lambda s: {"split": s}, "_image_files"),
    "pets": _FileSet("OxfordIIITPet", lambda s: {"split": "trainval" if s == "train" else s}, "_images"),
    "food101": _FileSet("Food101", lambda s: {"split": s}, "_image_files"),
}


def load_torchvision_files(
    info: DatasetInfo,
    split: str,
    *,
    root: Path,
    download: bool = False,
    layout: str | None = None,
    **kwargs: Any,
) -> FileSplit:
    """A file-based torchvision dataset (Flowers102, FGVCAircraft, DTD, OxfordIIITPet, Food101).

    `layout` picks the dataset (default: the entry's name); other `kwargs` go to the torchvision
    constructor (e.g. `annotation_level`, `partition`).
    """
    from torchvision import datasets

    key = _layout_key(info, layout, _FILE_SETS)
    spec = _FILE_SETS[key]
    cls = getattr(datasets, spec.cls_name)
    args = {**spec.split_arg(split), **kwargs, "download": download}
    ds = _torchvision_call(info, key, root, lambda: cls(str(root), **args))
    paths = [Path(p) for p in getattr(ds, spec.files_attr)]
    labels = np.asarray(getattr(ds, spec.labels_attr), dtype=np.int64)
    classes = list(getattr(ds, "classes", None) or [str(i) for i in range(info.num_classes or 0)])
    return FileSplit(info.name, split, classes, root / LAYOUTS[key].subdir, paths, labels)


def load_eurosat(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> ImageSplit:
    """EuroSAT RGB; it has no official split, so a stratified 80/20 one is drawn with a fixed seed."""
    from torchvision import datasets

    ds = _torchvision_call(info, "eurosat", root, lambda: datasets.EuroSAT(str(root), download=download))
    paths = [Path(p) for p, _ in ds.samples]
    labels = np.asarray([t for _, t in ds.samples], dtype=np.int64)
    full = FileSplit(info.name, "all", list(ds.classes), root / LAYOUTS["eurosat"].subdir, paths, labels)
    train_idx, test_idx = stratified_partition(labels, 0.2, SPLIT_SEED)
    return full.subset(train_idx if split == "train" else test_idx, split)


def load_eurosat_json(
    info: DatasetInfo,
    split: str,
    *,
    root: Path,
    download: bool = False,
    split_file: str = "split_zhou_EuroSAT.json",
) -> FileSplit:
    """EuroSAT RGB in the CoOp-style JSON split BoB used (train / val / test lists of
    [path under 2750/, label, class name]); classes are named by their folders, in label order."""
    import json

    if download:
        log.warning("CoOp's EuroSAT split file cannot be downloaded by bob; ignoring download=true")
    layout = LAYOUTS["eurosat-coop"]
    folder = root / layout.subdir
    path = folder / split_file
    if not path.is_file() or not (folder / "2750").is_dir():
        missing = "the split file" if not path.is_file() else "the 2750/ image folder"
        raise DatasetNotFoundError(
            f"Dataset '{info.name}' was not found: bob looked in {folder} and expected {layout.expects} "
            f"there ({missing} is missing). Point bob at the folder that holds 'eurosat/' with "
            "`--task-arg root=DIR`, or set the BOB_DATA_ROOT environment variable to it."
        )
    splits = json.loads(path.read_text())
    if split not in splits:
        raise UsageError(f"{path} has no '{split}' list (it has: {', '.join(sorted(splits))}).")
    names: dict[int, str] = {}
    for items in splits.values():
        for rel, label, _ in items:
            cls = Path(rel).parts[0]
            if names.setdefault(int(label), cls) != cls:
                raise UsageError(
                    f"{path}: label {label} names two class folders, {names[int(label)]} and {cls}."
                )
    if sorted(names) != list(range(len(names))):
        raise UsageError(f"{path}: labels must be 0..{len(names) - 1}, got {sorted(names)}.")
    items = splits[split]
    paths = [folder / "2750" / rel for rel, _, _ in items]
    labels = np.asarray([int(label) for _, label, _ in items], dtype=np.int64)
    classes = [names[i] for i in range(len(names))]
    return FileSplit(info.name, split, classes, folder, paths, labels)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(
        entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith(".")
    )


def _scan_class_folder(folder: Path) -> list[Path]:
    """Image files under one class folder (recursively, links followed), in a stable order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(IMG_EXTENSIONS)]
    return found


def scan_image_folder(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """Files and labels of an ImageFolder-style `folder/<class>/**/<image>` tree.

    `classes` fixes the label order (so every split of a tree agrees); a class folder that is absent
    from this split is allowed, one that exists but holds no image is an error.
    """
    paths: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        class_dir = folder / cls
        if not class_dir.is_dir():
            continue
        files = _scan_class_folder(class_dir)
        if not files:
            raise UsageError(
                f"Class folder {class_dir} holds no image file (looked for {', '.join(IMG_EXTENSIONS)}, any "
                "case). Remove the empty folder or add its images."
            )
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def _tree_classes(split_dirs: list[Path]) -> list[str]:
    """The union of class folder names over a tree's split folders, sorted like ImageFolder does."""
    return sorted({cls for d in split_dirs if d.is_dir() for cls in _class_dirs(d)})


def _folder_split(info: DatasetInfo, split: str, tree: Path, folder: Path, missing: str) -> FileSplit:
    split_dirs = [tree / s for s in ("train", "val", "test")]
    if not folder.is_dir():
        raise DatasetNotFoundError(missing)
    classes = _tree_classes(split_dirs)
    if not _class_dirs(folder):
        raise DatasetNotFoundError(f"{missing} ({folder} exists but has no class folder.)")
    if info.num_classes is not None and len(classes) != info.num_classes:
        log.warning(
            "%s: found %d class folders under %s, expected %d",
            info.name,
            len(classes),
            tree,
            info.num_classes,
        )
    paths, labels = scan_image_folder(folder, classes)
    log.debug("%s/%s: %d images in %d classes under %s", info.name, split, len(paths), len(classes), folder)
    return FileSplit(info.name, split, classes, tree, paths, labels)


def load_imagenet(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> FileSplit:
    """ImageNet-1k from `<root>/imagenet/{train,val}`; bob's `test` split is the official val set."""
    if download:
        log.warning("imagenet cannot be downloaded by bob; ignoring download=true")
    layout = LAYOUTS["imagenet"]
    tree = root / layout.subdir
    folder = tree / ("train" if split == "train" else "val")
    missing = (
        f"Dataset 'imagenet' was not found: bob looked in {folder} and expected {layout.expects} "
        f"under {tree}. "
        "bob cannot download ImageNet (its terms require registering at image-net.org). Put the images in "
        f"that layout and point bob at the folder that holds 'imagenet/' with `--task-arg root=DIR`, or set "
        "the BOB_DATA_ROOT environment variable to it."
    )
    return _folder_split(info, split, tree, folder, missing)


def load_imagefolder(info: DatasetInfo, split: str, *, root: Path, download: bool = False) -> FileSplit:
    """Any `<root>/{train,val,test}/<class>/*` tree; `test` falls back to `val/` when there is no `test/`."""
    if download:
        log.warning("an image folder cannot be downloaded; ignoring download=true")
    tree = root
    has_test = (tree / "test").is_dir()
    if split == "val" and not has_test and (tree / "val").is_dir():
        raise UsageError(
            f"The image folder {tree} has no test/ folder, so its val/ folder serves as the test split and "
            "there is no separate val split. Add a test/ folder to use val/ for validation."
        )
    folder = tree / (split if split != "test" or has_test else "val")
    wanted = "train/" if split == "train" else ("val/" if split == "val" else "test/ (or val/)")
    looked = f"{tree / 'test'} and {folder}" if split == "test" and not has_test else str(folder)
    missing = (
        f"Dataset 'imagefolder' split '{split}' was not found: bob looked in {looked} and expected the tree "
        f"{tree} to hold {wanted} with one sub-folder of images per class (<split>/<class>/<image>). "
        "An image folder cannot be downloaded; point bob at the tree with `--task-arg root=DIR`, or set the "
        "BOB_DATA_ROOT environment variable to it."
    )
    return _folder_split(info, split, tree, folder, missing)
