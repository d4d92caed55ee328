"""`detection/<dataset>`: Mask R-CNN (Faster R-CNN on box-only data) with an FPN on the backbone.

Protocol (BoB §COCO detection, on torchvision's detector; deviations in docs/suites/detection.md):
  1. both splits are loaded and validated (broken references stop the run before any training);
  2. the backbone is built at `image_size` and wrapped in a pyramid (FPN, or ViTDet's simple pyramid
     for plain ViTs); `mode=frozen` keeps it fixed, `mode=finetune` trains it;
  3. AdamW (lr from BoB's grid {8e-5, 1e-4, 2e-4, 3e-4}, default 1e-4; wd 0.05), warmup and ×0.1
     steps at 27/36 and 33/36 of `epochs` (36 = mmdetection's 3×), LSJ augmentation by default;
  4. test-split predictions (100 per image) scored by pycocotools COCOeval: box AP (main metric)
     and, on datasets with masks, mask AP, each with AP50 / AP75 / AP_S / AP_M / AP_L.
`head=query` replaces the RPN and RoI heads by a query-based head (query_head.py) on the same pyramid,
loop and evaluation. With `search=lr`, Ray Tune first scores every grid lr on a seeded held-out part
of train (box AP; train.py) and step 3 uses the winner; the search lands in `protocol["search"]`.
The R-CNN, its training and prediction are shared with open-vocab (tasks/common/rcnn.py,
detector_train.py); the task args are the detector's (`DetectorArgs`, tasks/common/args.py) plus
`protocol` and `frozen_stages`.
`frozen_stages=k` freezes the stem and the first k stages while fine-tuning (mmdetection's
`frozen_stages`; tasks/common/pyramid.py). `protocol=bob` sets what BoB's detection configs set where
bob's defaults differ: on Sim10k→Cityscapes, ResNets keep the `frozen_stages=1` they inherit from
mmdetection's ResNet base (bob-ood-detection `configs/bob_sim2real/resnet/*`; BoB's ConvNeXt, SwinV2
and ViTDet configs freeze no stage); Stable Diffusion reads ImageNet-normalised input
(`bob.backbones.protocols`), at 512 px on real data and with the prompt "object detection"
(bob-detection `configs/bob/stable_diff/*`, `mmdet/models/backbones/sd.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.errors import UsageError
from bob.task import Task, run_arg
from bob.tasks.common.args import DetectorArgs, check_protocol, protocol_arg

# Datasets whose BoB configs (bob-ood-detection, configs/bob_sim2real) inherit mmdetection's ResNet
# `frozen_stages=1`; COCO's (bob-detection, configs/bob) fine-tune every stage.
BOB_FROZEN_STAGE_DATASETS = frozenset({"sim10k-cityscapes"})
BOB_FROZEN_STAGES = 1
BOB_SD_IMAGE_SIZE = 512  # bob-detection configs/bob/stable_diff: fixed 512x512 resize
BOB_SD_PROMPT = "object detection"  # bob-detection mmdet/models/backbones/sd.py


@dataclass
class DetectionArgs(DetectorArgs):
    """The detector's knobs (tasks/common/args.py), which open-vocab shares, plus the protocol preset and
    `frozen_stages`."""

    frozen_stages: int | None = run_arg(
        None,
        "freeze the stem and this many first stages when fine-tuning (mmdetection's frozen_stages); "
        "default 0, or BoB's value under protocol=bob",
        omit_default=True,
    )
    protocol: str = protocol_arg()

    def validate(self) -> None:
        super().validate()
        check_protocol(self.protocol)
        if self.frozen_stages is not None:
            if self.frozen_stages < 0:
                raise UsageError(f"frozen_stages must be 0 or more, got {self.frozen_stages}.")
            if self.mode == "frozen":
                raise UsageError("frozen_stages applies to mode=finetune; mode=frozen freezes every stage.")


class Detection(Task):
    suite = "detection"
    version = "1"
    main_metric = "box_ap"
    needs = ("features", "trainable")
    # mode=frozen trains too (the pyramid and the heads): only the Ray Tune search stays off DDP.
    data_parallel = True
    not_data_parallel: ClassVar[dict[tuple[str, str], str]] = {
        ("search", "lr"): "runs a Ray Tune search, which would run once per rank",
    }
    task_types = ("detection", "open-vocab")  # on open-vocab sets: the closed-vocabulary oracle
    description = (
        "Mask R-CNN (Faster R-CNN on box-only data) with an FPN on the backbone; COCOeval box/mask AP"
    )
    Args = DetectionArgs
    check_dataset: ClassVar[str] = "scenes-mini"
    # `bob check`: 3 steps, then 16 test scenes scored with 64 sampled RoIs per training image (a
    # prediction runs the box and mask heads on every proposal: the test images set the mock's time).
    check_args: ClassVar[dict[str, str]] = {
        "iters": "3",
        "batch_size": "2",
        "augment": "flip",
        "fpn_channels": "32",
        "rois_per_image": "64",
        "limit": "16",
    }
