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
detector_train.py); the task args are the detector's (`DetectorArgs`, tasks/common/args.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.task import Task
from bob.tasks.common.args import DetectorArgs


@dataclass
class DetectionArgs(DetectorArgs):
    """The detector's knobs (tasks/common/args.py), which open-vocab shares; detection adds none."""


class Detection(Task):
    suite = "detection"
    version = "1"
    main_metric = "box_ap"
    needs = ("features", "trainable")
    task_types = ("detection", "open-vocab")  # on open-vocab sets: the closed-vocabulary oracle
    description = (
        "Mask R-CNN (Faster R-CNN on box-only data) with an FPN on the backbone; COCOeval box/mask AP"
    )
    Args = DetectionArgs
    check_dataset: ClassVar[str] = "scenes-mini"
    check_args: ClassVar[dict[str, str]] = {
        "iters": "3",
        "batch_size": "2",
        "augment": "flip",
        "fpn_channels": "32",
    }
