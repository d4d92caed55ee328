"""The detection suite's detector: the shared R-CNN (tasks/common/rcnn.py) or, with `head=query`, the
query-based head (query_head.py) on the same pyramid; and each head's part of the protocol record."""

from __future__ import annotations

from typing import Any

from torch import nn

from bob.backbones.base import Backbone
from bob.tasks.common.args import DetectorArgs
from bob.tasks.common.pyramid import BackboneWithPyramid
from bob.tasks.common.rcnn import describe_rcnn, rcnn_detector, square_pad
from bob.tasks.detection.query_head import QueryDetector


def detector(
    backbone: Backbone, args: DetectorArgs, num_classes: int, masks: bool, size: int
) -> tuple[nn.Module, int | None]:
    """The detector on `backbone` as the task args ask, and the square pad size it needs (if any)."""
    if args.head != "query":
        return rcnn_detector(backbone, args, num_classes, masks, size)
    pad_to = square_pad(backbone, size)
    body = BackboneWithPyramid(
        backbone, args.fpn_channels, frozen=args.mode == "frozen", norm_eval=args.norm_eval, pad_to=pad_to
    )
    return QueryDetector(body, num_classes, size, args.num_queries, args.query_stages), pad_to


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
