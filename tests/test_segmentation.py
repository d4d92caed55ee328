"""The segmentation suite: mIoU against torchmetrics, label-map data and layouts, heads, runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bob.errors import DatasetNotFoundError, UsageError
from bob.tasks.segmentation.data import MaskError, SegmentationSplit, validate_masks
from bob.tasks.segmentation.metrics import IoUAccumulator, confusion_matrix, scores_from_confusion

# ---------------------------------------------------------------------------------------------- metric


def _torchmetrics_reference(pairs: list[tuple[np.ndarray, np.ndarray]], k: int) -> dict[str, np.ndarray]:
    """torchmetrics, updated image by image (its state is a dataset-level confusion matrix)."""
    import torch
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    iou = MulticlassJaccardIndex(k, average=None, ignore_index=255)
    miou = MulticlassJaccardIndex(k, average="macro", ignore_index=255)
    aacc = MulticlassAccuracy(k, average="micro", ignore_index=255)
    recall = MulticlassAccuracy(k, average=None, ignore_index=255)
    for pred, target in pairs:
        p, t = torch.from_numpy(pred).long().flatten(), torch.from_numpy(target).long().flatten()
        for m in (iou, miou, aacc, recall):
            m.update(p, t)
    return {
        name: m.compute().numpy()
        for name, m in {"iou": iou, "miou": miou, "aacc": aacc, "recall": recall}.items()
    }


@pytest.mark.parametrize("seed", range(6))
def test_miou_matches_torchmetrics_on_random_cases(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 9))
    present = rng.choice(k, size=max(1, k - 2), replace=False)  # some classes never labelled
    pairs = []
    acc = IoUAccumulator(k)
    for _ in range(int(rng.integers(2, 6))):
        h, w = (int(v) for v in rng.integers(5, 40, 2))  # images of different sizes
        target = rng.choice(present, size=(h, w)).astype(np.uint8)
        target[rng.random((h, w)) < 0.15] = 255
        pred = np.where(rng.random((h, w)) < 0.6, target, rng.integers(0, k, (h, w)))
        pred = np.where(pred == 255, 0, pred).astype(np.int64)
        if seed % 2:  # one class is never predicted nor labelled: IoU NaN, left out of the mean
            pred[pred == k - 1] = 0
            target[target == k - 1] = 255
        acc.update(pred, target)
        pairs.append((pred, target))
    ref = _torchmetrics_reference(pairs, k)
    scores = scores_from_confusion(acc.matrix)
    defined = ~np.isnan(scores["iou"])
    np.testing.assert_allclose(scores["iou"][defined], ref["iou"][defined], rtol=1e-6)
    assert np.all(ref["iou"][~defined] == 0)  # torchmetrics' zero_division for empty unions
    assert scores["miou"] == pytest.approx(float(ref["miou"]), rel=1e-6)
    assert scores["aacc"] == pytest.approx(float(ref["aacc"]), rel=1e-6)
    labelled = acc.matrix.sum(axis=1) > 0
    assert scores["macc"] == pytest.approx(float(ref["recall"][labelled].mean()), rel=1e-6)


def test_hand_built_case_accumulates_over_the_dataset() -> None:
    # image 1: 4 pixels of class 0 (3 right), image 2: 2 pixels of class 1 (1 right) + 1 ignored.
    t1, p1 = np.array([[0, 0], [0, 0]]), np.array([[0, 0], [0, 1]])
    t2, p2 = np.array([[1, 1, 255]]), np.array([[1, 0, 2]])
    acc = IoUAccumulator(3)
    acc.update(p1, t1)
    acc.update(p2, t2)
    assert acc.matrix.tolist() == [[3, 1, 0], [1, 1, 0], [0, 0, 0]]
    metrics, table = acc.result(("a", "b", "c"))
    # class 0: I=3, label 4, pred 4 → U=5; class 1: I=1, label 2, pred 2 → U=3; class 2: empty → NaN.
    assert metrics["iou/a"] == pytest.approx(3 / 5) and metrics["iou/b"] == pytest.approx(1 / 3)
    assert "iou/c" not in metrics and table["c"]["iou"] is None and table["c"]["label_pixels"] == 0
    assert metrics["miou"] == pytest.approx((3 / 5 + 1 / 3) / 2)
    assert metrics["aacc"] == pytest.approx(4 / 6)
    assert metrics["macc"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    per_image = np.mean([3 / 4, (0 + 1 / 2) / 2])  # mean of per-image mIoUs: not what is reported
    assert metrics["miou"] != pytest.approx(per_image)


def test_metric_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match=r"label values must be 0\.\.2 or 255"):
        confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 7), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match="every pixel is ignore"):
        scores_from_confusion(confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 255), 3))


# ------------------------------------------------------------------------------------------------ data


def test_scene_maps_are_deterministic_and_match_the_instance_masks() -> None:
    from pycocotools import mask as mask_util

    from bob.data import DATASETS, dataset_info, load_split
    from bob.data.scenes import generate_scenes
    from bob.tasks.segmentation.data import load_scene_maps, semantic_maps

    _, coco = generate_scenes(6, size=64, seed=5)
    maps = semantic_maps(coco, 6, 64)
    assert maps.dtype == np.uint8 and set(np.unique(maps)) <= set(range(6)) and (maps == 0).any()
    for ann in coco["annotations"]:
        seg = ann["segmentation"]
        visible = mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        assert np.all(maps[ann["image_id"] - 1][visible] == ann["category_id"])
    assert np.array_equal(maps, semantic_maps(generate_scenes(6, size=64, seed=5)[1], 6, 64))

    train = load_split("scenes-seg-mini", "train")
    assert isinstance(train, SegmentationSplit) and len(train) == 96
    assert train.classes == ("background", "circle", "triangle", "star", "cross", "ring")
    assert train.mask(0).shape == (128, 128) and train.image(0).size == (128, 128)
    assert train.fingerprint == load_split("scenes-seg-mini", "train").fingerprint
    assert train.fingerprint != load_split("scenes-seg-mini", "test").fingerprint
    info = dataset_info("scenes-seg-shifted")
    small = {"n_train": 4, "n_test": 4, "size": 64}
    texture = load_scene_maps(info, "test", **small)
    cartoon = load_scene_maps(info, "test", train_domain="texture", test_domain="cartoon", **small)
    assert texture.fingerprint != cartoon.fingerprint
    assert DATASETS.get("scenes-seg-shifted").meta["options"]["test_domain"] == "cartoon"
    counts = validate_masks(train)
    assert set(counts) == set(train.classes) and all(v > 0 for v in counts.values())


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _make_layout(root: Path, name: str, n: int = 2, size: int = 32, value: int = 3) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    mask = np.full((size, size), value, np.uint8)
    mask[:4] = 0
    for split, folder in (("train", "training"), ("test", "validation")):
        for i in range(n):
            stem = f"{split}_{i:03d}"
            if name == "ade20k":
                base = root / "ADEChallengeData2016"
                _png(base / "images" / folder / f"{stem}.jpg", rgb)
                _png(base / "annotations" / folder / f"{stem}.png", mask)
            elif name == "cityscapes-seg":
                base, sub = root / "cityscapes", {"train": "train", "test": "val"}[split]
                _png(base / "leftImg8bit" / sub / "aachen" / f"{stem}_leftImg8bit.png", rgb)
                _png(base / "gtFine" / sub / "aachen" / f"{stem}_gtFine_labelTrainIds.png", mask)
            else:
                base = root / "VOCdevkit" / "VOC2012"
                _png(base / "JPEGImages" / f"{stem}.jpg", rgb)
                palette = Image.fromarray(mask, mode="P")
                palette.putpalette([0, 0, 0, 128, 0, 0] * 128)
                (base / "SegmentationClass").mkdir(parents=True, exist_ok=True)
                palette.save(base / "SegmentationClass" / f"{stem}.png")
                lists = base / "ImageSets" / "Segmentation"
                lists.mkdir(parents=True, exist_ok=True)
                listed = "\n".join(f"{split}_{j:03d}" for j in range(n))
                (lists / ("train.txt" if split == "train" else "val.txt")).write_text(listed + "\n")


@pytest.mark.parametrize(("name", "classes"), [("ade20k", 150), ("cityscapes-seg", 19), ("voc2012-seg", 21)])
def test_real_layouts_load_and_validate(tmp_path: Path, name: str, classes: int) -> None:
    from bob.data import load_split

    _make_layout(tmp_path, name)
    split = load_split(name, "test", root=tmp_path)
    assert isinstance(split, SegmentationSplit) and len(split) == 2 and len(split.classes) == classes
    mask = split.mask(0)
    if name == "ade20k":  # reduce_zero_label: 0 → ignore, 3 → 2
        assert set(np.unique(mask)) == {2, 255}
    else:
        assert set(np.unique(mask)) == {0, 3}
    counts = validate_masks(split)
    assert sum(counts.values()) == int((mask != 255).sum()) * 2
    assert split.fingerprint == load_split(name, "test", root=tmp_path).fingerprint


def test_layout_errors_are_clear(tmp_path: Path) -> None:
    from bob.data import load_split

    with pytest.raises(DatasetNotFoundError, match="ADEChallengeData2016/images/validation not found"):
        load_split("ade20k", "test", root=tmp_path)
    _make_layout(tmp_path, "ade20k")
    (tmp_path / "ADEChallengeData2016/annotations/validation/test_001.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"1 image\(s\) have no label map: test_001.jpg"):
        load_split("ade20k", "test", root=tmp_path)
    with pytest.raises(UsageError, match="cannot be downloaded"):
        load_split("ade20k", "train", root=tmp_path, download=True)

    _make_layout(tmp_path, "voc2012-seg")
    lists = tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    (lists / "val.txt").write_text("test_000\nnot_there\n")
    with pytest.raises(DatasetNotFoundError, match=r"not_there\.jpg"):
        load_split("voc2012-seg", "test", root=tmp_path)
    (lists / "val.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"val\.txt not found"):
        load_split("voc2012-seg", "test", root=tmp_path)
    (lists / "val.txt").write_text("\n")
    with pytest.raises(UsageError, match="is empty"):
        load_split("voc2012-seg", "test", root=tmp_path)


@pytest.mark.parametrize(
    ("value", "shape", "mode", "message"),
    [
        (40, None, None, r"label values \[40\] are out of range; cityscapes-seg has 19 classes"),
        (3, (16, 32), None, "label map is 32×16 but its image is 32×32"),
        (3, None, "RGB", "single-channel"),
    ],
)
def test_bad_masks_stop_before_training(tmp_path: Path, value, shape, mode, message) -> None:
    from bob.data import load_split

    _make_layout(tmp_path, "cityscapes-seg", value=value)
    bad = tmp_path / "cityscapes/gtFine/val/aachen/test_001_gtFine_labelTrainIds.png"
    if shape is not None:
        _png(bad, np.zeros(shape, np.uint8))
    if mode == "RGB":
        _png(bad, np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(MaskError, match=message):
        validate_masks(load_split("cityscapes-seg", "test", root=tmp_path))


def test_all_ignore_split_is_refused() -> None:
    split = SegmentationSplit(
        "x",
        "train",
        ("a", "b"),
        images=np.zeros((2, 8, 8, 3), np.uint8),
        masks=np.full((2, 8, 8), 255, np.uint8),
    )
    with pytest.raises(UsageError, match="every pixel is ignore"):
        validate_masks(split)


# ----------------------------------------------------------------------------------------------- heads


@pytest.mark.parametrize(
    ("name", "pad", "neck"),
    [
        ("timm/resnet18", None, "fpn"),
        ("timm/convnext_atto", None, "fpn"),
        ("timm/vit_tiny_patch16_224", 64, "simple"),
    ],
)
def test_heads_give_logits_at_the_input_size(name: str, pad: int | None, neck: str) -> None:
    import torch

    from bob.backbones import build_backbone
    from bob.tasks.common.pyramid import accepts_any_size
    from bob.tasks.segmentation.model import Segmenter

    torch.manual_seed(0)
    backbone = build_backbone(name, "random", input_size=64)
    assert (None if accepts_any_size(backbone, 64) else 64) == pad
    x = torch.rand(2, 3, 64 if pad else 60, 64 if pad else 52)
    y = torch.randint(0, 4, (2, *x.shape[-2:]))
    for head, frozen in (("fpn", False), ("fcn", True), ("linear", True)):
        model = Segmenter(backbone, 4, head=head, fpn_channels=16, head_channels=8, frozen=frozen, pad_to=pad)
        model.train()
        logits = model(x)
        assert logits.shape == (2, 4, *x.shape[-2:])
        torch.nn.functional.cross_entropy(logits, y).backward()
        grads = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in backbone.parameters()]
        assert any(grads) != frozen, head
        assert backbone.training != frozen
        if head == "fpn":
            assert model.describe()["pyramid"]["neck"] == neck and model.strides == (4, 8, 16, 32)
        backbone.zero_grad(set_to_none=True)
    if pad:  # a smaller image is padded to the build size and the logits cropped back
        assert model.eval()(torch.rand(1, 3, 48, 40)).shape == (1, 4, 48, 40)


def test_slide_inference_equals_whole_for_a_pointwise_model() -> None:
    import torch

    from bob.tasks.segmentation.train import eval_scale, slide_logits

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 5, 1)
    image = torch.rand(1, 3, 50, 77)
    with torch.no_grad():
        np.testing.assert_allclose(
            slide_logits(model, image, 32, 22).numpy(), model(image).numpy(), atol=1e-6
        )
    assert eval_scale(375, 500, 512) == (512, 683)  # shorter side to 512
    assert eval_scale(100, 1000, 128) == (51, 512)  # unless the longer would pass 4 × 128
    assert eval_scale(128, 128, 128) == (128, 128)


def test_cat_max_ratio_crop_redraws_crops_one_class_dominates() -> None:
    import torch
    from torchvision import tv_tensors

    from bob.tasks.segmentation.train import CatMaxRatioCrop

    torch.manual_seed(0)
    mask = torch.zeros(1, 8, 32, dtype=torch.uint8)
    mask[..., 28:] = 1  # only crops starting at x = 23 or 24 have class 0 below 75 %
    image = torch.arange(32, dtype=torch.uint8).expand(3, 8, 32)
    for _ in range(20):
        img, crop = CatMaxRatioCrop(8, 0.75, attempts=1000)(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert int(img[0, 0, 0]) in (23, 24) and (crop == 1).sum() in (24, 32)
    small_img, small_mask = CatMaxRatioCrop(16, 1.0)(
        tv_tensors.Image(image[:, :, :8]), tv_tensors.Mask(mask[..., :8])
    )
    assert small_img.shape == (3, 16, 16) and small_mask.shape == (1, 16, 16)
    assert (small_mask[..., 8:, :] == 255).all() and (small_mask[..., :, 8:] == 255).all()
    assert (small_mask[..., :8, :8] == 0).all() and (small_img[..., 8:, :] == 0).all()


def test_photometric_distortion_changes_colours_not_labels() -> None:
    import torch
    from torchvision import tv_tensors

    from bob.tasks.segmentation.train import PhotoMetricDistortion

    torch.manual_seed(0)
    rgb = tv_tensors.Image(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8))
    gray = tv_tensors.Image(torch.full((3, 16, 16), 100, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 5, (16, 16), dtype=torch.uint8))
    changed = 0
    for _ in range(8):
        out, same = PhotoMetricDistortion()(rgb, mask)
        assert out.dtype == torch.uint8 and out.shape == rgb.shape and same is mask
        changed += int(not torch.equal(out, rgb))
        g, _ = PhotoMetricDistortion()(gray, mask)
        assert (g == g[0, 0, 0]).all()  # saturation and hue leave a gray image gray
    assert changed >= 4


def test_task_args_are_validated() -> None:
    from bob.task import parse_task_args
    from bob.tasks.segmentation import SegmentationArgs

    for raw, message in [
        ({"head": "upernet"}, "head must be one of fpn, fcn, linear"),
        ({"mode": "linear"}, "mode must be one of finetune, frozen"),
        ({"augment": "lsj"}, "augment must be one of jitter, flip"),
        ({"image_size": "100"}, "image_size must be a positive multiple of 32"),
        ({"test_size": "0"}, "test_size must be a positive multiple of 32"),
        ({"batch_size": "0"}, "batch_size must be a positive integer"),
        ({"lr": "-1"}, "lr and poly_power must be > 0"),
        ({"cat_max_ratio": "0"}, r"cat_max_ratio must be in \(0, 1\]"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_task_args(SegmentationArgs, raw, "segmentation/scenes-seg")
    args = parse_task_args(SegmentationArgs, {"head": "fcn", "iters": "7"}, "segmentation/ade20k")
    assert args.resolved("real") == {"iters": 7, "batch_size": 16, "fpn_channels": 256, "head_channels": 512}
    assert args.resolved("generated")["head_channels"] == 128
    from bob.tasks.segmentation import Segmentation

    parse_task_args(SegmentationArgs, {**Segmentation.check_args, "image_size": "64"}, "segmentation/x")


def test_listing_segmentation_tasks_stays_torch_free() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from bob.suites import task_names\n"
        "import bob.tasks.segmentation, bob.tasks.segmentation.data, bob.tasks.segmentation.real\n"
        "import bob.tasks.segmentation.metrics\n"
        "names = task_names('segmentation/*')\n"
        "assert {'segmentation/scenes-seg', 'segmentation/ade20k', 'segmentation/voc2012-seg'} <= set(names)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------ runs


def _run(backbone: str, weights: str, args: dict[str, str], tmp_path: Path, dataset: str = "scenes-seg-mini"):
    from bob.runner import RunOptions, execute
    from bob.spec import make_spec

    spec = make_spec(backbone, f"segmentation/{dataset}", weights, 0, {}, args)
    return execute(
        spec, RunOptions(tmp_path / "results", tmp_path / "cache", device="cpu", num_workers=0)
    ).result


@pytest.mark.slow
def test_smoke_run_writes_miou_and_loads_in_the_leaderboard(tmp_path: Path) -> None:
    from bob.leaderboard.load import load_results

    args = {"iters": "2", "batch_size": "2", "image_size": "64", "fpn_channels": "16", "head_channels": "8"}
    result = _run("timm/resnet18", "random", args, tmp_path)
    assert result.ok, result.error
    assert {"miou", "aacc", "macc", "iou/background"} <= set(result.metrics)
    assert 0 <= result.metrics["miou"] <= 1
    p = result.protocol
    assert p["head"] == "fpn" and p["iterations"] == 2 and p["pyramid"]["neck"] == "fpn"
    assert p["lr"] == 1e-4 and p["weight_decay"] == 1e-4 and p["schedule"].startswith("poly, power 0.9")
    assert p["inference"]["mode"] == "whole" and p["ignore_index"] == 255 and len(p["per_class"]) == 6
    files = list((tmp_path / "results").rglob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["metrics"]["miou"] == result.metrics["miou"]
    loaded = load_results(tmp_path / "results")
    assert not loaded.skipped and loaded.runs.loc[0, "task"] == "segmentation/scenes-seg-mini"
    assert loaded.runs.loc[0, "metric:miou"] == result.metrics["miou"]


@pytest.mark.slow
def test_plain_vit_runs_with_sliding_window_inference(tmp_path: Path) -> None:
    args = {"iters": "1", "batch_size": "2", "image_size": "64", "head": "linear", "mode": "frozen"}
    result = _run("timm/vit_tiny_patch16_224", "random", args, tmp_path)
    assert result.ok, result.error
    assert result.protocol["inference"] == {
        **result.protocol["inference"],
        "mode": "slide",
        "slide": {"crop": 64, "stride": 43},
    }


@pytest.mark.slow
@pytest.mark.long
def test_pretrained_mobilenet_beats_random_on_scenes(tmp_path: Path, weights_dir: Path) -> None:
    """Frozen backbone, Semantic FPN trained on top: ImageNet features separate the shapes, random ones do not."""
    args = {"mode": "frozen", "iters": "100", "augment": "flip", "lr": "1e-3"}
    miou = {}
    for weights in ("pretrained", "random"):
        result = _run("torchvision/mobilenet_v2", weights, args, tmp_path)
        assert result.ok, result.error
        miou[weights] = result.metrics["miou"]
    assert miou["pretrained"] > miou["random"] + 0.1, miou


@pytest.mark.slow
def test_real_layout_run_with_rescaled_inference(tmp_path: Path) -> None:
    """ADE20K's layout on disk with images of several sizes: reduce_zero_label, jitter, whole-image
    inference at test_size with logits resized back to each label map."""
    from bob.data.scenes import generate_scenes
    from bob.tasks.segmentation.data import semantic_maps

    base = tmp_path / "data" / "ADEChallengeData2016"
    sizes = ((96, 96), (64, 96), (96, 80), (48, 96))
    for split, folder in (("train", "training"), ("test", "validation")):
        images, coco = generate_scenes(4, size=96, seed=len(split))
        maps = semantic_maps(coco, 4, 96)
        for i, (h, w) in enumerate(sizes):
            _png(base / "images" / folder / f"{i}.jpg", images[i, :h, :w])
            _png(base / "annotations" / folder / f"{i}.png", maps[i, :h, :w] + 1)  # 0 = "other" in the files
    args = {
        "root": str(tmp_path / "data"),
        "iters": "2",
        "batch_size": "2",
        "image_size": "64",
        "test_size": "32",
        "fpn_channels": "16",
        "head_channels": "8",
    }
    result = _run("timm/resnet18", "random", args, tmp_path, dataset="ade20k")
    assert result.ok, result.error
    p = result.protocol
    assert p["reduce_zero_label"] and p["inference"]["test_size"] == 32 and p["crop_size"] == 64
    pixels = sum(h * w for h, w in sizes)  # scored at each label map's own size, nothing ignored
    table = p["per_class"]
    assert sum(row["label_pixels"] for row in table.values()) == pixels
    assert sum(row["pred_pixels"] for row in table.values()) == pixels
    assert set(p["class_pixels"]["test"]) == set(table) and len(table) == 150
