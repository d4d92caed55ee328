"""Detection splits as training and evaluation samples for torchvision-style detectors.

A sample is (image float [3,H,W] in 0..1, target): the target holds boxes (xyxy), labels 1..K in
category-id order (0 is background), the COCO image id and, when asked, the instance masks. Crowd
annotations and degenerate boxes are left out of training targets (torchvision's reference recipe);
images without any non-crowd instance are skipped in training (`train_indices`) and kept in evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_util
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2 import functional as F

from bob.data.coco import DetectionSplit

Sample = tuple[torch.Tensor, dict[str, Any]]


def decode_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """The binary [H, W] mask of a COCO annotation (polygons, uncompressed or compressed RLE)."""
    seg = ann["segmentation"]
    if isinstance(seg, list):  # polygons
        rle = mask_util.merge(mask_util.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = mask_util.frPyObjects(seg, height, width)
    else:
        rle = {
            "size": seg["size"],
            "counts": seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"],
        }
    return mask_util.decode(rle)


class DetectionDataset(Dataset):
    """(image float [3,H,W] in 0..1, target) pairs; the target holds boxes (xyxy), labels 1..K, masks."""

    def __init__(
        self, split: DetectionSplit, indices: list[int], masks: bool, transform: Transform | None = None
    ) -> None:
        self.split, self.indices, self.masks, self.transform = split, indices, masks, transform
        self.label_of = {cid: i + 1 for i, cid in enumerate(split.category_ids)}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Sample:
        index = self.indices[k]
        image = F.to_image(self.split.image(index))
        h, w = image.shape[-2:]
        anns = [
            a
            for a in self.split.annotations(index)
            if not a["iscrowd"] and a["bbox"][2] >= 1 and a["bbox"][3] >= 1
        ]
        boxes = torch.tensor(
            [[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)], dtype=torch.float32
        )
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes.reshape(-1, 4), format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": int(self.split.image_info(index)["id"]),
        }
        if self.masks:
            stack = np.stack([decode_mask(a, h, w) for a in anns]) if anns else np.zeros((0, h, w), np.uint8)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(stack))
        if self.transform is not None:
            image, target = self.transform(image, target)
        return F.to_dtype(image, torch.float32, scale=True), target


def collate(batch: list[Sample]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """A batch as torchvision's detectors take it: a list of images and a list of targets."""
    return [b[0] for b in batch], [b[1] for b in batch]


def train_indices(split: DetectionSplit) -> list[int]:
    """The images with at least one non-crowd instance: the ones training samples."""
    return [i for i in range(len(split)) if any(not a["iscrowd"] for a in split.annotations(i))]
