"""Segmentation splits: images plus one label map each, checked before any training.

A `SegmentationSplit` is an `ImageSplit` whose per-image content is an H×W uint8 label map with
values 0..K-1 and `IGNORE_INDEX` (255) for pixels that are not scored. Generated scenes hold pixels
and maps in memory; real datasets read image and mask files (the pairing and layout checks live in
`real`). `reduce_zero_label` is mmseg's convention for ADE20K, whose files use 0 for "other": 0
becomes 255 and every other value drops by one. `validate_masks` reads every map once and stops the
run with the offending file named when a map is not single-channel, has another size than its
image, or holds a value outside 0..K-1 and 255.

The scenes' semantic maps come from the generated scenes of bob/data/scenes.py (the detection suite's
data): each annotated object's visible mask painted with its class id + 1 on background 0, so `K = 6`
(background + five shapes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from bob.data.base import DatasetInfo, ImageSplit
from bob.data.scenes import SCENE_CLASSES, load_scenes
from bob.errors import UsageError
from bob.progress import progress_bar
from bob.tasks.segmentation.metrics import IGNORE_INDEX


class MaskError(UsageError):
    """A label map that does not fit its image or its dataset's classes."""


class SegmentationSplit(ImageSplit):
    """One split of a segmentation dataset: `image(i)` (RGB PIL) and `mask(i)` (H×W uint8 label map).

    There is no image-level label: `labels` is all zeros, kept only because every `ImageSplit` has one.
    """

    ignore_index = IGNORE_INDEX
    single_label = False  # `labels` is a stand-in: a draw of images is not stratified by it

    def __init__(
        self,
        dataset: str,
        split: str,
        classes: tuple[str, ...] | list[str],
        *,
        images: np.ndarray | None = None,
        masks: np.ndarray | None = None,
        image_paths: list[Path] | None = None,
        mask_paths: list[Path] | None = None,
        root: Path | None = None,
        reduce_zero_label: bool = False,
    ) -> None:
        in_memory = images is not None and masks is not None
        on_disk = image_paths is not None and mask_paths is not None and root is not None
        if in_memory == on_disk:
            raise ValueError("a SegmentationSplit holds either image and mask arrays or file lists")
        n = len(images) if in_memory else len(image_paths)  # type: ignore[arg-type]
        super().__init__(dataset, split, classes, np.zeros(n, np.int64))
        if in_memory and masks.shape != images.shape[:3]:  # type: ignore[union-attr]
            raise ValueError(f"masks {masks.shape} do not match images {images.shape}")  # type: ignore[union-attr]
        if on_disk and len(mask_paths) != n:  # type: ignore[arg-type]
            raise ValueError(f"{n} images but {len(mask_paths)} masks")  # type: ignore[arg-type]
        self.images, self.masks = images, masks
        self.image_paths = [Path(p) for p in image_paths] if image_paths is not None else None
        self.mask_paths = [Path(p) for p in mask_paths] if mask_paths is not None else None
        self.root = Path(root) if root is not None else None
        self.reduce_zero_label = reduce_zero_label

    def image(self, index: int) -> Image.Image:
        if self.images is not None:
            return Image.fromarray(self.images[index], mode="RGB")
        with Image.open(self.image_paths[index]) as img:  # type: ignore[index]
            return img.convert("RGB")

    def mask(self, index: int) -> np.ndarray:
        """The label map of image `index`: H×W uint8, classes 0..K-1, 255 = ignore."""
        if self.masks is not None:
            raw = self.masks[index]
        else:
            path = self.mask_paths[index]  # type: ignore[index]
            with Image.open(path) as img:
                if img.mode not in ("L", "P"):
                    raise MaskError(
                        f"{path}: a label map must be a single-channel (L or palette) PNG, got mode {img.mode}."
                    )
                raw = np.array(img, dtype=np.uint8)
        if self.reduce_zero_label:
            raw = raw.astype(np.int16) - 1
            raw[raw < 0] = IGNORE_INDEX
            raw = raw.astype(np.uint8)
        return raw

    def image_size(self, index: int) -> tuple[int, int]:
        """(width, height) of image `index`, from the file header when on disk."""
        if self.images is not None:
            return self.images.shape[2], self.images.shape[1]
        with Image.open(self.image_paths[index]) as img:  # type: ignore[index]
            return img.size

    def where(self, index: int) -> str:
        if self.mask_paths is not None:
            return str(self.mask_paths[index])
        return f"{self.dataset}/{self.split} image {index}"

    def _identity_chunks(self) -> list[bytes]:
        chunks = [f"reduce_zero_label={self.reduce_zero_label}".encode()]
        if self.images is not None:
            return [*chunks, self.images.tobytes(), self.masks.tobytes()]  # type: ignore[union-attr]
        assert self.root is not None
        for image, mask in zip(self.image_paths, self.mask_paths, strict=True):  # type: ignore[arg-type]
            for path in (image, mask):
                chunks.append(f"{path.relative_to(self.root)}\x1f{path.stat().st_size}\x1e".encode())
        return chunks

    def take(self, indices: np.ndarray, split: str) -> SegmentationSplit:
        """The images `indices`, each with its own label map, as a new split over the same classes
        (e.g. a `limit` draw); its fingerprint is that of its own pixels and maps (or files)."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.images is not None:
            assert self.masks is not None
            return SegmentationSplit(
                self.dataset, split, self.classes, images=self.images[idx], masks=self.masks[idx],
                reduce_zero_label=self.reduce_zero_label,
            )  # fmt: skip
        assert self.image_paths is not None and self.mask_paths is not None
        return SegmentationSplit(
            self.dataset, split, self.classes,
            image_paths=[self.image_paths[i] for i in idx], mask_paths=[self.mask_paths[i] for i in idx],
            root=self.root, reduce_zero_label=self.reduce_zero_label,
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "ignore_index": self.ignore_index,
            "reduce_zero_label": self.reduce_zero_label,
        }


def validate_masks(split: SegmentationSplit) -> dict[str, int]:
    """Read every label map once; a bad one raises `MaskError` naming it (before any training).

    Returns the labelled pixels per class (ignore excluded), for the run's protocol."""
    if len(split) == 0:
        raise UsageError(f"{split.dataset}/{split.split}: the split is empty.")
    k = len(split.classes)
    allowed = np.zeros(256, bool)
    allowed[:k] = True
    allowed[IGNORE_INDEX] = True
    counts = np.zeros(256, np.int64)
    with progress_bar(f"checking {split.dataset}/{split.split} masks", len(split), "masks") as bar:
        for i in range(len(split)):
            mask = split.mask(i)
            if mask.ndim != 2:
                raise MaskError(f"{split.where(i)}: a label map must be 2-D, got shape {mask.shape}.")
            width, height = split.image_size(i)
            if mask.shape != (height, width):
                raise MaskError(
                    f"{split.where(i)}: label map is {mask.shape[1]}×{mask.shape[0]} but its image is "
                    f"{width}×{height}."
                )
            values = np.unique(mask)
            bad = values[~allowed[values]]
            if bad.size:
                raise MaskError(
                    f"{split.where(i)}: label values {bad[:5].tolist()} are out of range; {split.dataset} "
                    f"has {k} classes (0..{k - 1}) and {IGNORE_INDEX} = ignore"
                    + (
                        " after reduce_zero_label (file values 0..K, 0 = ignore)."
                        if split.reduce_zero_label
                        else "."
                    )
                )
            counts += np.bincount(mask.ravel(), minlength=256)
            bar.advance(1)
    if counts[:k].sum() == 0:
        raise UsageError(
            f"{split.dataset}/{split.split}: every pixel is ignore ({IGNORE_INDEX}); nothing to learn or score."
        )
    return dict(zip(split.classes, (int(c) for c in counts[:k]), strict=True))


# ---------------------------------------------------------------------------------- generated scenes


def semantic_maps(coco: dict[str, Any], n: int, size: int) -> np.ndarray:
    """N×size×size uint8 maps from a scenes COCO dict: background 0, object pixels category id (1..5)."""
    maps = np.zeros((n, size, size), np.uint8)
    for ann in coco["annotations"]:
        seg = ann["segmentation"]
        visible = mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode("ascii")})
        maps[ann["image_id"] - 1][visible.astype(bool)] = ann["category_id"]
    return maps


def scene_classes() -> tuple[str, ...]:
    return ("background", *SCENE_CLASSES)


def load_scene_maps(
    info: DatasetInfo,
    split: str,
    *,
    root: Path | None = None,
    download: bool = False,
    train_domain: str = "texture",
    test_domain: str = "texture",
    n_train: int = 1000,
    n_test: int = 200,
    size: int = 128,
) -> SegmentationSplit:
    """Catalog loader: the detection scenes of each split (the detection loader's) as semantic maps."""
    scenes = load_scenes(
        info, split, root=root, train_domain=train_domain, test_domain=test_domain,
        n_train=n_train, n_test=n_test, size=size,
    )  # fmt: skip
    maps = semantic_maps(scenes.coco, len(scenes), size)
    return SegmentationSplit(info.name, split, scene_classes(), images=scenes.arrays, masks=maps)
