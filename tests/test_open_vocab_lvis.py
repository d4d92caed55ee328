"""open-vocab on LVIS: up to 300 detections per image end to end, and ViLD's federated mask APr as
the main metric (regression tests: the detector used to keep torchvision's 100 per image while
LVISEval scores 300, and the headline was COCOeval's non-federated box AP on the novel categories)."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

from bob.data import dataset_info
from bob.data.coco import DetectionSplit
from bob.data.lvis import load_lvis
from bob.data.scenes import generate_scenes
from bob.tasks.open_vocab import OpenVocab, OpenVocabArgs
from bob.tasks.open_vocab.metrics import LVIS_MAX_DETS, lvis_metrics
from bob.tasks.open_vocab.run import detections_per_image

GRID = 15  # a 15 x 15 grid of disjoint 8 px boxes: 225 objects in one image, more than 100
SIDE = 8


def _grid_boxes() -> list[list[float]]:
    return [[c * 10.0 + 1, r * 10.0 + 1, SIDE, SIDE] for r in range(GRID) for c in range(GRID)]


def _crowded_lvis(root) -> None:
    """One 160 px image holding 225 instances of a rare category (plus a common and a frequent one)."""
    from PIL import Image

    (root / "coco" / "val2017").mkdir(parents=True)
    (root / "lvis").mkdir()
    Image.new("RGB", (160, 160), (90, 40, 10)).save(root / "coco" / "val2017" / "000000000001.jpg")
    image = {"id": 1, "width": 160, "height": 160, "neg_category_ids": [2, 3], "not_exhaustive_category_ids": [],
             "coco_url": "http://images.cocodataset.org/val2017/000000000001.jpg"}  # fmt: skip
    cats = [{"id": 1, "name": "ant", "frequency": "r"}, {"id": 2, "name": "bee", "frequency": "c"},
            {"id": 3, "name": "cat", "frequency": "f"}]  # fmt: skip
    anns = []
    for i, (x, y, w, h) in enumerate(_grid_boxes(), start=1):
        poly = [x, y, x + w, y, x + w, y + h, x, y + h]
        anns.append({"id": i, "image_id": 1, "category_id": 1, "bbox": [x, y, w, h], "area": w * h,
                     "segmentation": [poly]})  # fmt: skip
    (root / "lvis" / "lvis_v1_val.json").write_text(
        json.dumps({"images": [image], "annotations": anns, "categories": cats})
    )


def test_lvis_scores_up_to_300_detections_per_image(tmp_path):
    _crowded_lvis(tmp_path)
    split = load_lvis(dataset_info("lvis-v1"), "test", root=tmp_path)
    perfect = [
        {"image_id": 1, "category_id": 1, "bbox": box, "score": 1.0 - i * 1e-3}
        for i, box in enumerate(_grid_boxes())
    ]
    assert LVIS_MAX_DETS == 300
    assert lvis_metrics(split.coco, perfect, ("bbox",))["lvis_box_APr"] == pytest.approx(1.0)
    # What a 100-per-image detector hands LVISEval: two thirds of the objects are never found.
    capped = lvis_metrics(split.coco, perfect[:100], ("bbox",))["lvis_box_APr"]
    assert capped < 0.5


def _postprocess(model, n_boxes: int) -> int:
    """How many detections torchvision's RoIHeads keeps from `n_boxes` disjoint, confident proposals."""
    heads = model.roi_heads
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in _grid_boxes()[:n_boxes]])
    logits = torch.full((n_boxes, 2), -5.0)
    logits[:, 1] = 5.0  # every proposal is confidently category 1
    kept, _, _ = heads.postprocess_detections(logits, torch.zeros(n_boxes, 8), [boxes], [(160, 160)])
    return len(kept[0])


def test_detector_keeps_300_per_image_on_lvis_and_its_default_elsewhere(tmp_path):
    _crowded_lvis(tmp_path)
    lvis = load_lvis(dataset_info("lvis-v1"), "test", root=tmp_path)
    images, coco = generate_scenes(2, size=64, seed=0)
    scenes = DetectionSplit("scenes", "test", coco, arrays=images)

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=2)
    assert detections_per_image(model, scenes) == 100  # torchvision's default, left alone
    assert _postprocess(model, GRID * GRID) == 100
    assert detections_per_image(model, lvis) == LVIS_MAX_DETS
    assert _postprocess(model, GRID * GRID) == GRID * GRID  # 225 < 300: nothing is cut


def test_lvis_main_metric_is_federated_mask_apr():
    assert OpenVocab("lvis-v1", OpenVocabArgs()).meta()["main_metric"] == "lvis_mask_APr"
    assert OpenVocab("scenes-ov-mini", OpenVocabArgs()).meta()["main_metric"] == "box_ap_novel"
    assert OpenVocab("coco2017", OpenVocabArgs()).meta()["main_metric"] == "box_ap_novel"
