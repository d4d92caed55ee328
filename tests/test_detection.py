"""The detection suite: scenes, COCO-JSON validation, COCOeval against pycocotools, models, runs."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from bob.backbones.meta import FeatureInfo
from bob.data.coco import AnnotationError, DetectionSplit, load_coco_split
from bob.data.scenes import generate_scenes, write_coco
from bob.errors import DatasetNotFoundError, UsageError
from bob.tasks.common.coco_eval import coco_metrics, to_coco_results


@pytest.fixture(scope="module")
def scenes() -> tuple[np.ndarray, dict]:
    return generate_scenes(12, size=64, seed=3)


def _split(scenes: tuple[np.ndarray, dict]) -> DetectionSplit:
    images, coco = scenes
    return DetectionSplit("t", "test", json.loads(json.dumps(coco)), arrays=images.copy())


def _pycocotools_stats(gt: dict, results: list[dict], iou_type: str) -> np.ndarray:
    """The reference: pycocotools' own COCO / loadRes / COCOeval, untouched."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(results))), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:6]


def _gt_as_results(coco: dict, masks: bool = True) -> list[dict]:
    out = []
    for a in coco["annotations"]:
        rec = {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        if masks:
            rec["segmentation"] = a["segmentation"]
        out.append(rec)
    return out


# ---------------------------------------------------------------------------------------------- scenes


def test_scenes_are_deterministic_and_consistent(scenes) -> None:
    from pycocotools import mask as mask_util

    images, coco = scenes
    again_images, again = generate_scenes(12, size=64, seed=3)
    assert np.array_equal(images, again_images) and coco == again
    assert not np.array_equal(images, generate_scenes(12, size=64, seed=4)[0])
    assert len(coco["images"]) == 12 and coco["annotations"]
    for ann in coco["annotations"]:
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        mask = mask_util.decode(rle)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
        assert mask.sum() == ann["area"] >= 12


def test_write_and_read_back_as_coco_json(scenes, tmp_path: Path) -> None:
    split = _split(scenes)
    path = write_coco(split, tmp_path)
    back = load_coco_split("t", "test", path, tmp_path / "images")
    assert back.coco["annotations"] == split.coco["annotations"]
    assert np.array_equal(np.asarray(back.image(3)), np.asarray(split.image(3)))  # PNG is lossless
    assert back.classes == ("circle", "triangle", "star", "cross", "ring")
    assert len(back.fingerprint) == 64


# ----------------------------------------------------------------------------------- broken COCO JSON


@pytest.fixture
def written(scenes, tmp_path: Path) -> tuple[Path, Path, dict]:
    path = write_coco(_split(scenes), tmp_path)
    return path, tmp_path / "images", json.loads(path.read_text())


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda c: c["annotations"][0].update(image_id=999), "annotation 1 points to image id 999"),
        (lambda c: c["annotations"][2].update(category_id=42), "annotation 3 has category id 42"),
        (lambda c: c["annotations"][0].update(bbox=[1, 2, -3, 4]), "annotation 1 has bbox"),
        (lambda c: c.update(images=[], annotations=[]), "no images; the split is empty"),
        (lambda c: c.update(annotations=[]), "no annotations"),
        (lambda c: c.pop("categories"), "missing or non-list 'categories'"),
        (lambda c: c["images"].append(dict(c["images"][0])), "appears twice"),
        (lambda c: c["annotations"][0].pop("segmentation"), "has no segmentation"),
    ],
)
def test_broken_references_are_clear_errors(written, corrupt, message: str) -> None:
    path, images, coco = written
    corrupt(coco)
    path.write_text(json.dumps(coco))
    with pytest.raises(AnnotationError, match=message) as err:
        load_coco_split("t", "train", path, images)
    assert str(path) in str(err.value)


def test_missing_files_and_bad_json(written) -> None:
    path, images, _ = written
    (images / "000004.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"1 image file\(s\).*000004.png"):
        load_coco_split("t", "train", path, images)
    with pytest.raises(DatasetNotFoundError, match=r"annotation file .*nope\.json not found"):
        load_coco_split("t", "train", path.parent / "nope.json", images)
    path.write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        load_coco_split("t", "train", path, images)


def test_category_filter_and_real_layouts(written, tmp_path: Path) -> None:
    from bob import data

    path, images, coco = written
    coco["categories"][0]["name"] = "car"
    path.write_text(json.dumps(coco))
    cars = load_coco_split("t", "train", path, images, categories=("car",), has_masks=False)
    assert cars.classes == ("car",) and {a["category_id"] for a in cars.coco["annotations"]} == {1}
    with pytest.raises(AnnotationError, match="no category named truck"):
        load_coco_split("t", "train", path, images, categories=("truck",))
    with pytest.raises(DatasetNotFoundError, match=r"instances_train2017\.json not found.*Expected layout"):
        data.load_split("coco2017", "train", root=tmp_path / "empty")
    with pytest.raises(DatasetNotFoundError, match=r"sim10k/annotations/instances_car\.json"):
        data.load_split("sim10k-cityscapes", "train", root=tmp_path / "empty")


# ----------------------------------------------------------------------------------------- COCOeval


def test_perfect_detections_score_one_like_pycocotools(scenes) -> None:
    _, coco = scenes
    results = _gt_as_results(coco)
    metrics, _ = coco_metrics(coco, results, ("bbox", "segm"))
    assert metrics["box_ap"] == pytest.approx(1.0) and metrics["mask_ap"] == pytest.approx(1.0)
    assert metrics["box_ap50"] == pytest.approx(1.0) and "box_ap_l" not in metrics  # no large GT at 64 px
    ref = _pycocotools_stats(coco, results, "bbox")
    assert metrics["box_ap"] == pytest.approx(ref[0])


def _tiny_gt(n_gt: int) -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
        "categories": [{"id": 7, "name": "thing"}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": [10 + 40 * i, 10, 30, 30],
                "area": 900,
                "iscrowd": 0,
            }
            for i in range(n_gt)
        ],
    }


def test_known_partial_cases() -> None:
    # Two objects, one found exactly: precision 1 up to recall 0.5, i.e. 51 of COCO's 101 recall points.
    gt = _tiny_gt(2)
    found = to_coco_results(1, np.array([[10, 10, 40, 40]]), np.array([0.9]), np.array([1]), [7])
    assert coco_metrics(gt, found)[0]["box_ap"] == pytest.approx(51 / 101)
    # One object, a false positive ranked above the hit: precision 0.5 at every recall point.
    gt = _tiny_gt(1)
    dets = to_coco_results(
        1, np.array([[60, 60, 90, 90], [10, 10, 40, 40]]), np.array([0.9, 0.8]), np.array([1, 1]), [7]
    )
    assert coco_metrics(gt, dets)[0]["box_ap"] == pytest.approx(0.5)
    # A box shifted by 6 px has IoU 24·30/(2·900 − 720) = 2/3: a hit at .50–.65, a miss from .70 on.
    shifted = to_coco_results(1, np.array([[16, 10, 46, 40]]), np.array([0.9]), np.array([1]), [7])
    metrics = coco_metrics(gt, shifted)[0]
    assert metrics["box_ap50"] == pytest.approx(1.0) and metrics["box_ap75"] == pytest.approx(0.0)
    assert metrics["box_ap"] == pytest.approx(4 / 10)
    # No detections at all is AP 0, not an error.
    assert coco_metrics(gt, [])[0]["box_ap"] == 0.0


def test_to_coco_results_maps_labels_and_boxes() -> None:
    masks = np.zeros((1, 20, 30), np.float32)
    masks[0, 2:5, 3:9] = 0.7
    recs = to_coco_results(
        5, np.array([[1.0, 2.0, 11.0, 7.0]]), np.array([0.3]), np.array([2]), [3, 9], masks
    )
    assert (
        recs[0]["category_id"] == 9 and recs[0]["bbox"] == [1.0, 2.0, 10.0, 5.0] and recs[0]["image_id"] == 5
    )
    from pycocotools import mask as mask_util

    rle = dict(recs[0]["segmentation"], counts=recs[0]["segmentation"]["counts"].encode())
    assert mask_util.area(rle) == 18 and list(mask_util.toBbox(rle)) == [3, 2, 6, 3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_randomised_detections_match_pycocotools(scenes, seed: int) -> None:
    """Jittered, re-scored, partly dropped and partly duplicated GT, through bob's conversion."""
    from pycocotools import mask as mask_util

    _, coco = scenes
    rng = np.random.default_rng(seed)
    results = []
    for ann in coco["annotations"]:
        for _ in range(int(rng.integers(0, 3))):
            x, y, w, h = ann["bbox"]
            box = np.array([[x, y, x + w, y + h]], float) + rng.normal(0, 3, (1, 4))
            rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
            mask = np.roll(mask_util.decode(rle), int(rng.integers(-3, 4)), axis=1)[None].astype(np.float32)
            label = ann["category_id"] if rng.random() < 0.8 else int(rng.integers(1, 6))
            results += to_coco_results(
                ann["image_id"], box, rng.random(1), np.array([label]), [1, 2, 3, 4, 5], mask
            )
    ours, _ = coco_metrics(coco, results, ("bbox", "segm"))
    for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
        ref = _pycocotools_stats(coco, results, iou_type)
        for name, value in zip(("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l"), ref, strict=True):
            if value >= 0:
                assert ours[f"{prefix}_{name}"] == pytest.approx(value, abs=1e-12)
            else:
                assert f"{prefix}_{name}" not in ours
    assert 0.05 < ours["box_ap"] < 0.95


# --------------------------------------------------------------------------------------------- models


def test_pyramid_plans() -> None:
    from bob.tasks.common.pyramid import plan_pyramid

    resnet = [FeatureInfo(c, s) for c, s in ((64, 2), (64, 4), (128, 8), (256, 16), (512, 32))]
    plan = plan_pyramid(resnet)
    assert (plan.kind, plan.levels, plan.strides) == ("fpn", (1, 2, 3, 4), (4, 8, 16, 32))
    vit = [FeatureInfo(192, 16)] * 12
    plan = plan_pyramid(vit)
    assert (plan.kind, plan.levels, plan.strides) == ("simple", (11,), (4, 8, 16, 32))
    assert plan_pyramid([FeatureInfo(8, 8), FeatureInfo(8, 8), FeatureInfo(16, 16)]).levels == (1, 2)


def _train_step(name: str, size: int, frozen: bool) -> dict:
    import torch

    from bob.backbones import build_backbone
    from bob.tasks.common.detector_data import DetectionDataset
    from bob.tasks.common.pyramid import accepts_any_size
    from bob.tasks.common.rcnn import build_detector

    torch.manual_seed(0)
    backbone = build_backbone(name, "random", input_size=size)
    pad_to = None if accepts_any_size(backbone, size) else size
    model = build_detector(
        backbone,
        5,
        masks=True,
        image_size=size,
        fpn_channels=32,
        rois_per_image=32,
        frozen=frozen,
        pad_to=pad_to,
    )
    split = _split(generate_scenes(2, size=64, seed=1))
    batch = [DetectionDataset(split, [0, 1], masks=True)[i] for i in range(2)]
    images, targets = [b[0] for b in batch], [b[1] for b in batch]
    model.train()
    with torch.no_grad():
        pyramid = model.backbone(torch.zeros(2, 3, size, size))
    losses = model(images, targets)
    sum(losses.values()).backward()
    grads = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in backbone.parameters()]
    model.eval()
    with torch.no_grad():
        out = model(images[:1])[0]
    return {
        "pyramid": {k: tuple(v.shape) for k, v in pyramid.items()},
        "losses": losses,
        "grads": grads,
        "backbone_training": backbone.training,
        "out": out,
        "pad_to": pad_to,
    }


@pytest.mark.parametrize(
    ("name", "size", "frozen", "pad"),
    [
        ("timm/resnet18", 64, False, None),
        ("timm/convnext_atto", 64, True, None),
        ("timm/vit_tiny_patch16_224", 64, False, 64),
    ],
)
def test_detector_builds_and_trains_a_step(name: str, size: int, frozen: bool, pad: int | None) -> None:
    import torch

    got = _train_step(name, size, frozen)
    expected = {"0": 16, "1": 8, "2": 4, "3": 2, "pool": 1}  # strides 4, 8, 16, 32, 64 at 64 px
    assert got["pyramid"] == {k: (2, 32, n, n) for k, n in expected.items()}
    assert got["pad_to"] == pad
    assert set(got["losses"]) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    assert all(torch.isfinite(v) for v in got["losses"].values())
    if frozen:
        assert not any(got["grads"]) and not got["backbone_training"]
    else:
        assert any(got["grads"])
    assert set(got["out"]) == {"boxes", "labels", "scores", "masks"}


def test_task_args_are_validated() -> None:
    from bob.task import parse_task_args
    from bob.tasks.detection import DetectionArgs

    with pytest.raises(UsageError, match="mode must be one of finetune, frozen"):
        parse_task_args(DetectionArgs, {"mode": "linear"}, "detection/scenes")
    with pytest.raises(UsageError, match="multiple of 32"):
        parse_task_args(DetectionArgs, {"image_size": "100"}, "detection/scenes")
    with pytest.raises(UsageError, match="lsj_scale"):
        parse_task_args(DetectionArgs, {"lsj_scale": "2,1"}, "detection/scenes")
    args = parse_task_args(DetectionArgs, {"lr": "2e-4", "lsj_scale": "0.5,1.5"}, "detection/scenes")
    assert args.lr == 2e-4 and args.lsj_scale == (0.5, 1.5)


def test_listing_detection_tasks_stays_torch_free() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from bob.suites import task_names\n"
        "import bob.tasks.detection, bob.data.coco, bob.data.scenes\n"
        "assert 'detection/scenes-shifted' in task_names('detection/*')\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------- runs


def _run(backbone: str, weights: str, args: dict[str, str], tmp_path: Path, dataset: str = "scenes-mini"):
    from bob.runner import RunOptions, execute
    from bob.spec import make_spec

    spec = make_spec(backbone, f"detection/{dataset}", weights, 0, {}, args)
    return execute(
        spec, RunOptions(tmp_path / "results", tmp_path / "cache", device="cpu", num_workers=0)
    ).result


@pytest.mark.slow
def test_smoke_run_writes_box_and_mask_ap(tmp_path: Path) -> None:
    args = {
        "iters": "2",
        "batch_size": "2",
        "augment": "lsj",
        "fpn_channels": "32",
        "image_size": "64",
        "rois_per_image": "32",
    }
    result = _run("timm/resnet18", "random", args, tmp_path)
    assert result.ok, result.error
    assert {"box_ap", "box_ap50", "mask_ap", "mask_ap75"} <= set(result.metrics)
    p = result.protocol
    assert p["detector"] == "Mask R-CNN" and p["iterations"] == 2 and p["pyramid"]["neck"] == "fpn"
    assert p["lr_grid"] == [8e-5, 1e-4, 2e-4, 3e-4] and p["anchor_sizes"] == [32, 64, 128, 256, 512]


@pytest.mark.slow
def test_box_only_real_layout_trains_faster_rcnn(tmp_path: Path) -> None:
    """Scenes written in the Sim10k → Cityscapes layout: the real loader, the car filter, Faster R-CNN."""
    root = tmp_path / "data"
    for split, (folder, ann, images) in {
        "train": ("sim10k", "instances_car.json", "images"),
        "test": ("cityscapes", "instancesonly_filtered_gtFine_val.json", "leftImg8bit/val"),
    }.items():
        images_np, coco = generate_scenes(24 if split == "train" else 8, size=64, seed=len(split))
        coco["categories"][2]["name"] = "car"  # stars are the cars
        for a in coco["annotations"]:
            a.pop("segmentation")
        path = write_coco(DetectionSplit("x", split, coco, arrays=images_np), root / folder, ann)
        (root / folder / "images").rename(root / folder / "tmp")
        (root / folder / images).parent.mkdir(parents=True, exist_ok=True)
        (root / folder / "tmp").rename(root / folder / images)
        assert path.is_file()
    args = {
        "iters": "2",
        "batch_size": "2",
        "augment": "flip",
        "fpn_channels": "32",
        "image_size": "64",
        "rois_per_image": "32",
        "root": str(root),
        "save_model": "true",
    }
    result = _run("timm/resnet18", "random", args, tmp_path, dataset="sim10k-cityscapes")
    assert result.ok, result.error
    assert result.protocol["detector"] == "Faster R-CNN" and "mask_ap" not in result.metrics
    assert result.protocol["data"]["train"]["num_classes"] == 1
    import torch

    saved = torch.load(result.artifacts["detector"], weights_only=False)
    assert saved["classes"] == ["car"] and any(
        k.startswith("roi_heads.box_predictor") for k in saved["state_dict"]
    )


@pytest.mark.slow
@pytest.mark.long
def test_pretrained_mobilenet_beats_random_on_scenes(tmp_path: Path, weights_dir: Path) -> None:
    args = {
        "iters": "60",
        "batch_size": "4",
        "augment": "flip",
        "fpn_channels": "64",
        "rois_per_image": "128",
        "lr": "3e-4",
    }
    ap = {}
    for weights in ("pretrained", "random"):
        result = _run("torchvision/mobilenet_v2", weights, args, tmp_path)
        assert result.ok, result.error
        ap[weights] = result.metrics["box_ap"]
    assert ap["pretrained"] > ap["random"] + 0.02, ap


def test_bob_check_skips_detection_for_a_pooled_only_backbone(tmp_path: Path) -> None:
    from bob.check import check_backbone

    (tmp_path / "flat.py").write_text(
        "from torch import nn\n"
        "def mlp():\n"
        "    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 16))\n"
        "    return net, {'input_size': 32, 'mean': (0.5,) * 3, 'std': (0.5,) * 3}\n"
    )
    results = {
        r.name: r
        for r in check_backbone(
            f"{tmp_path}/flat.py:mlp", weights="random", image_size=32, suites="detection,linear-probe"
        )
    }
    assert results["mock run: detection"].status == "skip"
    assert "no feature levels" in results["mock run: detection"].detail
    assert results["mock run: linear-probe"].status == "pass"
