"""The detection suite's detector: the shared R-CNN (tasks/common/rcnn.py) or, with `head=query`, the
query-based head (query_head.py) on the same pyramid; and each head's part of the protocol record."""

from __future__ import annotations

from typing import Any

from torch import nn

from bob.backbones.base import Backbone
from bob.tasks.common.args import DetectorArgs
from bob.tasks.common.pyramid import BackboneWithPyramid
from bob.tasks.common.rcnn import describe_rcnn, rcnn_detector, square_pad
from bob.tasks.detection import BOB_FROZEN_STAGE_DATASETS, BOB_FROZEN_STAGES, DetectionArgs
from bob.tasks.detection.query_head import QueryDetector


def detector(
    backbone: Backbone, args: DetectorArgs, num_classes: int, masks: bool, size: int, frozen_stages: int = 0
) -> tuple[nn.Module, int | None]:
    """The detector on `backbone` as the task args ask, and the square pad size it needs (if any)."""
    if args.head != "query":
        return rcnn_detector(backbone, args, num_classes, masks, size, frozen_stages)
    pad_to = square_pad(backbone, size)
    body = BackboneWithPyramid(
        backbone,
        args.fpn_channels,
        frozen=args.mode == "frozen",
        norm_eval=args.norm_eval,
        pad_to=pad_to,
        frozen_stages=frozen_stages,
    )
    return QueryDetector(body, num_classes, size, args.num_queries, args.query_stages), pad_to


def is_resnet(backbone: Backbone) -> bool:
    """A ResNet-layout backbone (torchvision's and timm's: a `layer1` stage at stride 4), the family
    whose mmdetection base config freezes `frozen_stages=1`."""
    return any(info.module.split(".")[-1] == "layer1" and info.stride == 4 for info in backbone.feature_info)


def frozen_stages(args: DetectionArgs, dataset: str, backbone: Backbone) -> tuple[int, str]:
    """How many leading stages (and the stem) stay frozen while fine-tuning, and why."""
    if args.mode == "frozen":
        return 0, "mode=frozen: the whole backbone is frozen"
    if args.frozen_stages is not None:
        return args.frozen_stages, "task arg frozen_stages"
    if args.protocol == "bob" and dataset in BOB_FROZEN_STAGE_DATASETS:
        if is_resnet(backbone):
            return BOB_FROZEN_STAGES, (
                "protocol=bob: BoB's Sim10k→Cityscapes ResNet configs inherit mmdetection's frozen_stages=1"
            )
        return 0, "protocol=bob: BoB's Sim10k→Cityscapes configs for this family freeze no stage"
    return 0, "default: every stage trains"


def describe_head(model: nn.Module, args: DetectorArgs, masks: bool) -> dict[str, Any]:
    """The head's part of the protocol record."""
    if args.head != "query":
        return describe_rcnn(model, args, masks)
    return {
        "detector": "query-based (Sparse R-CNN / StageInteractor-style)",
        "heads": (
            f"{args.num_queries} learnable queries, {args.query_stages} stages of RoIAlign 7x7 + "
            "self-attention + dynamic interaction (own and previous stage's filters) + FFN"
        ),
        "assignment": "one-to-one Hungarian per stage, cost 2 focal + 5 L1 + 2 GIoU",
        "losses": "sigmoid focal (alpha 0.25, gamma 2) x2, L1 on normalised boxes x5, GIoU x2",
    }
