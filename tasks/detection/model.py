"""Any bob backbone → feature pyramid (tasks/common/pyramid.py) → torchvision Mask R-CNN (or Faster R-CNN
for box-only data).

The box head is torchvision's TwoMLPHead (1024-d); the mask head's four convs have the pyramid's
width (256 by default, torchvision's). Anchors are `anchor_size · stride / 4` per level, three aspect
ratios (torchvision's default at anchor_size 32). Images are normalised with the backbone's own mean
and std and resized so their longer side is `image_size`.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from bob.backbones.base import Backbone
from bob.tasks.common.pyramid import BackboneWithPyramid


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
) -> nn.Module:
    """Mask R-CNN (masks=True) or Faster R-CNN over the backbone's pyramid; `num_classes` excludes background."""
    body = BackboneWithPyramid(backbone, fpn_channels, frozen=frozen, norm_eval=norm_eval, pad_to=pad_to)
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
