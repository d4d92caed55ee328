"""Any bob backbone → feature pyramid (tasks/common/pyramid.py) → torchvision Mask R-CNN (or Faster R-CNN
for box-only data): the detector of the detection and open-vocab suites.

The box head is torchvision's TwoMLPHead (1024-d); the mask head's four convs have the pyramid's
width (256 by default, torchvision's). Anchors are `anchor_size · stride / 4` per level, three aspect
ratios (torchvision's default at anchor_size 32). Images are normalised with the backbone's own mean
and std and resized so their longer side is `image_size`.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from bob.backbones.base import Backbone
from bob.tasks.common.args import DetectorArgs
from bob.tasks.common.pyramid import BackboneWithPyramid, accepts_any_size


def build_detector(
    backbone: Backbone,
    num_classes: int,
    *,
    masks: bool,
    image_size: int,
    fpn_channels: int = 256,
    anchor_size: int = 32,
    rois_per_image: int = 512,
    frozen: bool = False,
    norm_eval: bool = True,
    pad_to: int | None = None,
    frozen_stages: int = 0,
) -> nn.Module:
    """Mask R-CNN (masks=True) or Faster R-CNN over the backbone's pyramid; `num_classes` excludes background."""
    body = BackboneWithPyramid(
        backbone, fpn_channels, frozen=frozen, norm_eval=norm_eval, pad_to=pad_to, frozen_stages=frozen_stages
    )
    strides = [*body.plan.strides, 2 * body.plan.strides[-1]]
    anchors = AnchorGenerator(
        tuple((round(anchor_size * s / 4),) for s in strides), ((0.5, 1.0, 2.0),) * len(strides)
    )
    config = backbone.data_config
    kwargs = {
        "num_classes": num_classes + 1,
        "min_size": image_size,
        "max_size": image_size,
        "image_mean": list(config.mean),
        "image_std": list(config.std),
        "rpn_anchor_generator": anchors,
        "box_roi_pool": MultiScaleRoIAlign(body.feature_names, 7, 2),
        "box_batch_size_per_image": rois_per_image,
    }
    if masks:
        model = MaskRCNN(body, mask_roi_pool=MultiScaleRoIAlign(body.feature_names, 14, 2), **kwargs)
        # torchvision's mask head with its conv width tied to the pyramid's (it fixes 256, the default).
        model.roi_heads.mask_head = MaskRCNNHeads(fpn_channels, (fpn_channels,) * 4, 1)
        model.roi_heads.mask_predictor = MaskRCNNPredictor(fpn_channels, fpn_channels, num_classes + 1)
        return model
    return FasterRCNN(body, **kwargs)


def square_pad(backbone: Backbone, size: int) -> int | None:
    """The square size batches are padded to for backbones that only run at their build size (ViTs,
    Swin); None for those that take any size."""
    return None if accepts_any_size(backbone, size) else size


def rcnn_detector(
    backbone: Backbone, args: DetectorArgs, num_classes: int, masks: bool, size: int, frozen_stages: int = 0
) -> tuple[nn.Module, int | None]:
    """The R-CNN on `backbone` as the task args ask, and the square pad size it needs (if any);
    `frozen_stages` freezes the stem and that many first stages when fine-tuning (`stage_modules`)."""
    pad_to = square_pad(backbone, size)
    model = build_detector(
        backbone,
        num_classes,
        masks=masks,
        image_size=size,
        fpn_channels=args.fpn_channels,
        anchor_size=args.anchor_size,
        rois_per_image=args.rois_per_image,
        frozen=args.mode == "frozen",
        norm_eval=args.norm_eval,
        pad_to=pad_to,
        frozen_stages=frozen_stages,
    )
    return model, pad_to


def predicts_masks(model: nn.Module) -> bool:
    """Mask R-CNN predicts masks; Faster R-CNN and the query head predict boxes only."""
    heads = getattr(model, "roi_heads", None)
    return heads is not None and hasattr(heads, "mask_head") and heads.has_mask()


def describe_rcnn(model: nn.Module, args: DetectorArgs, masks: bool) -> dict[str, Any]:
    """The R-CNN's part of a run's protocol record."""
    return {
        "detector": "Mask R-CNN" if masks else "Faster R-CNN",
        "heads": "torchvision: RPNHead, TwoMLPHead box head" + (", MaskRCNNHeads" if masks else ""),
        "anchor_sizes": [int(s[0]) for s in model.rpn.anchor_generator.sizes],
        "rois_per_image": args.rois_per_image,
    }
