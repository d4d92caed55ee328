"""The vis suite: YouTube-VIS track AP against its definition and pycocotools, sprite videos, YTVIS JSON, runs."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from bob.errors import DatasetNotFoundError, UsageError
from bob.tasks.vis.data import SPRITE_CLASSES, VisAnnotationError, generate_vis_sprites, load_ytvis_split
from bob.tasks.vis.metrics import track_iou, vis_metrics


def _rle(mask: np.ndarray) -> dict | None:
    from pycocotools import mask as mask_util

    if not mask.any():
        return None
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def _box(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _gt(videos: list[list[tuple[int, list[np.ndarray]]]], num_classes: int = 2) -> dict:
    """YouTube-VIS ground truth from [(category id, [mask per frame])] per video."""
    anns, vids = [], []
    for v, tracks in enumerate(videos, start=1):
        vids.append({"id": v, "length": len(tracks[0][1])})
        for cat, masks in tracks:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "video_id": v,
                    "category_id": cat,
                    "segmentations": [_rle(m) for m in masks],
                }
            )
    cats = [{"id": k, "name": f"c{k}"} for k in range(1, num_classes + 1)]
    return {"videos": vids, "categories": cats, "annotations": anns}


def _as_results(gt: dict, score: float = 1.0) -> list[dict]:
    return [
        {
            "video_id": a["video_id"],
            "category_id": a["category_id"],
            "score": score,
            "segmentations": a["segmentations"],
        }
        for a in gt["annotations"]
    ]


# ------------------------------------------------------------------------------------------- metric


def test_track_iou_matches_the_definition_on_random_tracks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = int(rng.integers(1, 6))
        a = rng.random((t, 9, 7)) < rng.random()
        b = rng.random((t, 9, 7)) < rng.random()
        a[rng.random(t) < 0.3] = False  # absent frames
        b[rng.random(t) < 0.3] = False
        union = (a | b).sum()
        want = (a & b).sum() / union if union else 0.0
        assert track_iou([_rle(m) for m in a], [_rle(m) for m in b]) == pytest.approx(want)


def test_track_correct_in_half_the_frames_and_empty_frames() -> None:
    gt = [_box(20, 20, 2, 2, 10, 10)] * 4  # area 64 in every frame
    half = gt[:2] + [np.zeros((20, 20), bool)] * 2
    assert track_iou([_rle(m) for m in half], [_rle(m) for m in gt]) == pytest.approx(0.5)
    # Frames where both tracks are empty add nothing to either sum.
    empty = [None, None, None]
    assert track_iou([*map(_rle, half), *empty], [*map(_rle, gt), *empty]) == pytest.approx(0.5)
    # Uncompressed RLE (YouTube-VIS's annotation format) reads the same.
    from pycocotools import mask as mask_util

    counts = [42, *[8, 12] * 7, 8]  # column-major runs of the 8×8 box at rows/cols 2..9
    raw = {"size": [20, 20], "counts": [*counts, 400 - sum(counts)]}
    assert mask_util.decode(mask_util.frPyObjects(raw, 20, 20)).sum() == 64
    assert track_iou([raw], [_rle(gt[0])]) == pytest.approx(1.0)


def test_perfect_tracks_score_one_and_half_tracks_fail_above_ap50() -> None:
    h = w = 24
    a = [_box(h, w, 0, 0, 8, 8 + f) for f in range(4)]
    b = [_box(h, w, 12, 12, 20, 20)] * 4
    gt = _gt([[(1, a), (2, b)], [(1, b)]])
    metrics, summary = vis_metrics(gt, _as_results(gt))
    assert metrics["ap"] == pytest.approx(1.0) and metrics["ar10"] == pytest.approx(1.0)
    assert "Average Precision" in summary
    # Right in 2 of 4 equal-area frames: track IoU 0.5 → a hit at IoU .50 only.
    half = [a[0], a[1], np.zeros((h, w), bool), np.zeros((h, w), bool)]
    gt1 = _gt([[(1, [a[1]] * 4)]])
    res = [
        {
            "video_id": 1,
            "category_id": 1,
            "score": 0.9,
            "segmentations": [_rle(m) for m in [a[1], a[1], half[2], half[3]]],
        }
    ]
    metrics, _ = vis_metrics(gt1, res)
    assert metrics["ap50"] == pytest.approx(1.0) and metrics["ap75"] == 0.0
    assert metrics["ap"] == pytest.approx(0.1)  # 1 of the 10 IoU thresholds


def test_swapped_identity_scores_lower_than_consistent_tracks() -> None:
    h, w, t = 32, 32, 6
    left = [_box(h, w, 4, 2, 12, 10)] * t
    right = [_box(h, w, 20, 20, 28, 28)] * t
    gt = _gt([[(1, left), (1, right)]], num_classes=1)
    consistent, _ = vis_metrics(gt, _as_results(gt))
    swapped = [
        {"video_id": 1, "category_id": 1, "score": s, "segmentations": [_rle(m) for m in x[:3] + y[3:]]}
        for s, x, y in ((0.9, left, right), (0.8, right, left))
    ]
    metrics, _ = vis_metrics(gt, swapped)  # each predicted track is half of two tracks: IoU 0.5 / 1.5 = 1/3
    assert consistent["ap"] == pytest.approx(1.0) and metrics["ap"] == 0.0 and metrics["ar10"] == 0.0


def test_one_frame_tracks_match_pycocotools_segm_cocoeval() -> None:
    """With one frame per video, track AP must equal COCO mask AP computed by pycocotools itself."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(1)
    h = w = 32
    videos, images, coco_anns, results, coco_res = [], [], [], [], []
    for v in range(1, 7):
        tracks = []
        for _ in range(int(rng.integers(1, 4))):
            y, x = rng.integers(0, 20, 2)
            sy, sx = rng.integers(4, 12, 2)
            tracks.append((int(rng.integers(1, 3)), [_box(h, w, y, x, y + sy, x + sx)]))
        videos.append(tracks)
        images.append({"id": v, "height": h, "width": w})
        for cat, (m,) in tracks:
            coco_anns.append(
                {
                    "id": len(coco_anns) + 1,
                    "image_id": v,
                    "category_id": cat,
                    "segmentation": _rle(m),
                    "area": float(m.sum()),
                    "bbox": [0, 0, 1, 1],
                    "iscrowd": 0,
                }
            )
            for _ in range(2):  # jittered detections, some with the wrong class
                d = np.roll(m, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
                c = cat if rng.random() < 0.8 else 3 - cat
                s = float(rng.random())
                results.append({"video_id": v, "category_id": c, "score": s, "segmentations": [_rle(d)]})
                coco_res.append({"image_id": v, "category_id": c, "score": s, "segmentation": _rle(d)})
    gt = _gt(videos)
    metrics, _ = vis_metrics(gt, results)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "categories": gt["categories"], "annotations": coco_anns}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(coco_res))), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for name, i in {"ap": 0, "ap50": 1, "ap75": 2, "ar1": 6, "ar10": 7}.items():
        assert metrics[name] == pytest.approx(ev.stats[i]), name
    assert 0.0 < metrics["ap"] < 1.0


# --------------------------------------------------------------------------------------------- data


def test_sprite_videos_are_deterministic_with_visible_instance_masks() -> None:
    from pycocotools import mask as mask_util

    clips, tracks = generate_vis_sprites(6, num_frames=4, seed=5)
    again, tracks2 = generate_vis_sprites(6, num_frames=4, seed=5)
    assert clips.tobytes() == again.tobytes() and json.dumps(str(tracks)) == json.dumps(str(tracks2))
    assert clips.shape == (6, 4, 64, 64, 3)
    for video, clip in zip(tracks, clips, strict=True):
        assert 2 <= len(video) <= 4
        masks = np.array(
            [[mask_util.decode(s) if s else np.zeros((64, 64), np.uint8) for s in segs] for _, segs in video]
        )
        assert masks.sum(0).max() <= 1  # visible pixels belong to one instance at most
        assert all(0 <= c < len(SPRITE_CLASSES) for c, _ in video)
        background = masks.sum(0) == 0
        for k in range(len(video)):  # a sprite's pixels differ from the background's
            for f in range(4):
                if masks[k, f].sum() > 20:
                    inside = clip[f][masks[k, f] > 0].mean(0)
                    assert np.abs(inside - clip[f][background[f]].mean(0)).max() > 10


def test_sprite_split_is_fingerprinted_and_has_ytvis_gt() -> None:
    from bob.data import load_split

    train = load_split("vis-sprites-mini", "train")
    assert len(train) == 12 and train.classes == SPRITE_CLASSES
    assert train.fingerprint == load_split("vis-sprites-mini", "train").fingerprint
    assert train.fingerprint != load_split("vis-sprites-mini", "test").fingerprint
    gt = train.gt()
    assert len(gt["annotations"]) == train.num_tracks() and all(
        len(a["segmentations"]) == 4 for a in gt["annotations"]
    )
    metrics, _ = vis_metrics(gt, _as_results(gt))
    assert metrics["ap"] == pytest.approx(1.0)
    labels, masks = train.masks(0)
    assert masks.shape[:2] == (len(labels), 4) and masks.dtype == bool


def _write_ytvis(root: Path, segs: list | None = None, **changes) -> Path:
    from PIL import Image

    (root / "JPEGImages" / "v1").mkdir(parents=True)
    for f in range(3):
        Image.fromarray(np.full((16, 20, 3), 40 * f, np.uint8)).save(
            root / "JPEGImages" / "v1" / f"{f:05d}.jpg"
        )
    poly = [[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]]
    raw = {"size": [16, 20], "counts": [16 * 20]}  # an uncompressed RLE of an empty mask
    data = {
        "videos": [
            {
                "id": 7,
                "height": 16,
                "width": 20,
                "length": 3,
                "file_names": [f"v1/{f:05d}.jpg" for f in range(3)],
            }
        ],
        "categories": [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {
                "id": 1,
                "video_id": 7,
                "category_id": 9,
                "iscrowd": 0,
                "segmentations": segs if segs is not None else [poly, None, raw],
            }
        ],
    }
    data.update(changes)
    (root / "instances.json").write_text(json.dumps(data))
    return root


def test_ytvis_json_with_polygons_rle_and_absent_frames_loads(tmp_path: Path) -> None:
    root = _write_ytvis(tmp_path)
    split = load_ytvis_split("ytvis", "test", root / "instances.json", root / "JPEGImages")
    assert split.classes == ("cat", "dog") and split.frames(0).shape == (3, 16, 20, 3)
    labels, masks = split.masks(0)
    assert labels.tolist() == [1] and masks[0, 0].sum() > 60 and not masks[0, 1:].any()
    gt = split.gt()
    assert gt["annotations"][0]["category_id"] == 2 and gt["videos"][0]["length"] == 3
    assert (
        split.fingerprint
        == load_ytvis_split("ytvis", "test", root / "instances.json", root / "JPEGImages").fingerprint
    )


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"segs": [None]}, VisAnnotationError, "one segmentation"),
        ({"categories": [{"id": 5, "name": "cat"}]}, VisAnnotationError, "unknown category 9"),
        ({"annotations": []}, VisAnnotationError, "no annotations"),
        ({"videos": None}, VisAnnotationError, "'videos'"),
    ],
)
def test_ytvis_bad_annotations_are_named(tmp_path: Path, change: dict, error: type, message: str) -> None:
    root = _write_ytvis(tmp_path, **change)
    with pytest.raises(error, match=message):
        load_ytvis_split("ytvis", "test", root / "instances.json", root / "JPEGImages")


def test_ytvis_missing_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"instances\.json"):
        load_ytvis_split("ytvis", "test", tmp_path / "instances.json", tmp_path / "JPEGImages")
    root = _write_ytvis(tmp_path)
    (root / "JPEGImages" / "v1" / "00001.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"00001\.jpg"):
        load_ytvis_split("ytvis", "test", root / "instances.json", root / "JPEGImages")
    from bob.data import load_split

    with pytest.raises(DatasetNotFoundError, match=r"youtube-vis-2019/train/instances\.json"):
        load_split("youtube-vis-2019", "train", root=tmp_path)


# ------------------------------------------------------------------------------------ model and args


def test_hungarian_matching_follows_whole_tracks() -> None:
    import torch

    from bob.tasks.vis.model import clip_loss, match_tracks

    targets = torch.zeros(2, 3, 16)
    targets[0, :, :8] = 1
    targets[1, :, 8:] = 1
    masks = torch.full((4, 3, 16), -8.0)
    masks[2] = targets[0] * 16 - 8  # query 2 draws track 0 in every frame
    masks[0, :2] = targets[1, :2] * 16 - 8  # query 0 draws track 1 in frames 0-1 only
    masks[3] = targets[1] * 16 - 8  # query 3 draws track 1 in every frame: the better whole-track match
    logits = torch.zeros(4, 3)
    rows, cols = match_tracks(logits, masks, torch.tensor([0, 1]), targets, (1.0, 1.0, 1.0))
    assert dict(zip(cols.tolist(), rows.tolist(), strict=True)) == {0: 2, 1: 3}
    loss = clip_loss(logits.requires_grad_(), masks, torch.tensor([0, 1]), targets, (1.0, 1.0, 1.0), 0.1)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None


def test_task_args_are_validated() -> None:
    from bob.task import parse_task_args
    from bob.tasks.vis import VisArgs

    for raw, message in (
        ({"epochs": "0"}, "epochs"),
        ({"dim": "30"}, "multiple of 4"),
        ({"image_size": "100"}, "multiple of 32"),
        ({"mask_threshold": "1.5"}, "mask_threshold"),
        ({"no_object_weight": "0"}, "no_object_weight"),
        ({"num_querys": "5"}, "num_queries"),
    ):
        with pytest.raises(UsageError, match=message):
            parse_task_args(VisArgs, raw, "vis/vis-sprites")


def test_listing_vis_tasks_stays_torch_free() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from bob.suites import task_names\n"
        "import bob.tasks.vis\n"
        "assert {'vis/vis-sprites', 'vis/vis-sprites-mini', 'vis/ovis'} <= set(task_names('vis/*'))\n"
        "assert not [n for n in task_names() if n.startswith('linear-probe/vis-sprites')]\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------- runs


def _run(weights: str, args: dict[str, str], tmp_path: Path, dataset: str = "vis-sprites-mini"):
    from bob.runner import RunOptions, execute
    from bob.spec import make_spec

    spec = make_spec("torchvision/mobilenet_v2", f"vis/{dataset}", weights, 0, {}, args)
    return execute(
        spec, RunOptions(tmp_path / "results", tmp_path / "cache", device="cpu", num_workers=0)
    ).result


@pytest.mark.slow
def test_smoke_run_records_protocol_and_loads_in_the_leaderboard(tmp_path: Path) -> None:
    from bob.leaderboard.load import load_results
    from bob.results import read_result

    result = _run("random", {"epochs": "2", "dim": "16", "image_size": "64"}, tmp_path)
    assert result.ok, result.error
    assert {"ap", "ap50", "ap75", "ar1", "ar10"} <= set(result.metrics)
    p = result.protocol
    assert p["backbone_mode"] == "frozen" and p["image_size"] == 64 and p["num_queries"] == 10
    assert p["steps"] == 2 * 3 and p["mask_stride"] == 4 and "Hungarian" in p["matching"]
    assert p["data"]["test"]["num_tracks"] > 0
    (path,) = (tmp_path / "results").rglob("*.json")
    assert read_result(path).metrics == result.metrics
    loaded = load_results(tmp_path / "results")
    assert (
        len(loaded.runs) >= 1 and not loaded.skipped and set(loaded.runs["task"]) == {"vis/vis-sprites-mini"}
    )


@pytest.mark.long
def test_pretrained_mobilenet_beats_random_on_vis_sprites(tmp_path: Path, weights_dir: Path) -> None:
    pretrained = _run("pretrained", {}, tmp_path, "vis-sprites")
    random = _run("random", {}, tmp_path, "vis-sprites")
    assert pretrained.ok and random.ok, (pretrained.error, random.error)
    assert pretrained.metrics["ap"] > random.metrics["ap"] + 0.03, (pretrained.metrics, random.metrics)
    assert pretrained.metrics["ap50"] > random.metrics["ap50"] + 0.05, (pretrained.metrics, random.metrics)
