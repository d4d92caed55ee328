"""The rvos suite: DAVIS J&F from its definition, referring-sprite videos, real layouts, head and runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bob.errors import DatasetNotFoundError, UsageError
from bob.tasks.rvos.metrics import (
    boundary_f,
    boundary_radius,
    j_and_f,
    region_jaccard,
    seg2bmap,
    track_scores,
)

# ---------------------------------------------------------------------------------------------- metric


def _square(top: int, left: int, side: int = 10, size: int = 64) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[top : top + side, left : left + side] = True
    return m


def _bmap_by_definition(seg: np.ndarray) -> np.ndarray:
    """A boundary pixel differs from an existing right, lower or lower-right neighbour (pixel loops)."""
    h, w = seg.shape
    out = np.zeros_like(seg, bool)
    for i in range(h):
        for j in range(w):
            nbrs = [(i, j + 1), (i + 1, j), (i + 1, j + 1)]
            if i == h - 1 and j == w - 1:
                nbrs = []
            elif i == h - 1:
                nbrs = [(i, j + 1)]
            elif j == w - 1:
                nbrs = [(i + 1, j)]
            out[i, j] = any(seg[a, b] != seg[i, j] for a, b in nbrs)
    return out


def _f_by_distances(gt: np.ndarray, pred: np.ndarray, radius: int) -> float:
    """F with matching as Euclidean distance <= radius between boundary pixels (scipy cdist)."""
    from scipy.spatial.distance import cdist

    fg, gb = np.argwhere(_bmap_by_definition(pred)), np.argwhere(_bmap_by_definition(gt))
    if len(fg) == 0 and len(gb) == 0:
        return 1.0
    if len(fg) == 0 or len(gb) == 0:
        return 0.0
    d = cdist(fg, gb)
    p, r = float((d.min(1) <= radius).mean()), float((d.min(0) <= radius).mean())
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_hand_built_masks_score_as_defined() -> None:
    a = _square(10, 10)
    empty = np.zeros_like(a)
    assert region_jaccard(a, a) == 1 and boundary_f(a, a) == 1
    assert region_jaccard(a, _square(40, 40)) == 0 and boundary_f(a, _square(40, 40)) == 0
    assert region_jaccard(empty, empty) == 1 and boundary_f(empty, empty) == 1
    assert region_jaccard(a, empty) == 0 and boundary_f(a, empty) == 0
    assert region_jaccard(empty, a) == 0 and boundary_f(empty, a) == 0
    # Shifted 2 px right: J = 8·10 / 12·10. Each 40-pixel boundary (seg2bmap: the square's right
    # column and bottom row, the outside column left of it and row above it) has 22 pixels within the
    # 1-pixel tolerance (ceil(0.008 · 90.5)) of the other's, so P = R = F = 22 / 40.
    shifted = _square(10, 12)
    assert region_jaccard(a, shifted) == pytest.approx(2 / 3)
    assert seg2bmap(a).sum() == 40 and boundary_radius(a.shape) == 1
    assert boundary_f(a, shifted) == pytest.approx(22 / 40)
    assert boundary_f(a, _square(10, 11)) == 1.0  # a 1 px shift is within tolerance
    assert boundary_radius((480, 854)) == 8  # ceil(0.008 · 979.7), DAVIS 480p
    assert boundary_radius((64, 64), 3) == 3  # bound_th >= 1 is in pixels


@pytest.mark.parametrize("seed", range(5))
def test_boundary_and_f_match_brute_force_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(12, 40, 2))
    gt = rng.random((h, w)) < 0.3
    pred = np.where(rng.random((h, w)) < 0.8, gt, rng.random((h, w)) < 0.3)
    gt[: int(rng.integers(0, 4))] = True  # touch the last row / column rules too
    pred[:, -int(rng.integers(1, 4)) :] = rng.random() < 0.5
    np.testing.assert_array_equal(seg2bmap(gt), _bmap_by_definition(gt))
    bound_th = float(rng.choice([0.008, 0.05, 2.0]))
    radius = boundary_radius((h, w), bound_th)
    assert boundary_f(gt, pred, bound_th) == pytest.approx(_f_by_distances(gt, pred, radius))
    inter, union = (gt & pred).sum(), (gt | pred).sum()
    assert region_jaccard(gt, pred) == pytest.approx(inter / union)


def test_j_and_f_averages_frames_then_objects() -> None:
    a, empty = _square(10, 10), np.zeros((64, 64), bool)
    track_gt = np.stack([a, a, empty])
    track_pred = np.stack([a, _square(10, 12), a])
    j, f = track_scores(track_gt, track_pred)
    assert j == pytest.approx((1 + 2 / 3 + 0) / 3) and f == pytest.approx((1 + 0.55 + 0) / 3)
    np.testing.assert_allclose(region_jaccard(track_gt, track_pred), [1, 2 / 3, 0])
    scores = j_and_f([(j, f), (1.0, 1.0)])
    assert scores["j_mean"] == pytest.approx((j + 1) / 2) and scores["f_mean"] == pytest.approx((f + 1) / 2)
    assert scores["j_and_f"] == pytest.approx((scores["j_mean"] + scores["f_mean"]) / 2)
    with pytest.raises(ValueError, match="shapes differ"):
        region_jaccard(a, a[:10])
    with pytest.raises(ValueError, match="at least one"):
        j_and_f([])


# ------------------------------------------------------------------------------------------------ data


def test_referring_sprites_are_deterministic_and_well_formed() -> None:
    from bob.data.scenes import PALETTE, SCENE_CLASSES
    from bob.tasks.rvos.data import generate_referring_sprites

    frames, masks, exps = generate_referring_sprites(6, seed=3)
    again = generate_referring_sprites(6, seed=3)
    assert np.array_equal(frames, again[0]) and np.array_equal(masks, again[1]) and exps == again[2]
    assert frames.shape == (6, 5, 64, 64, 3) and masks.shape == (6, 5, 64, 64)
    assert not np.array_equal(frames, generate_referring_sprites(6, seed=4)[0])
    for v in range(6):
        mine = [e for e in exps if e.video == v]
        assert 2 <= len(mine) <= 3 and len({e.text for e in mine}) == len(mine)
        for e in mine:
            _, colour, shape = e.text.split()
            assert colour in PALETTE and shape in SCENE_CLASSES
            assert (masks[v] == e.obj_id).sum() >= 12
        moved = [not np.array_equal(masks[v, 0] == e.obj_id, masks[v, -1] == e.obj_id) for e in mine]
        assert any(moved)
    with pytest.raises(UsageError, match="num_frames >= 2"):
        generate_referring_sprites(2, num_frames=1)


def test_catalog_splits_are_fingerprinted_and_validated() -> None:
    from bob.data import load_split
    from bob.tasks.rvos.data import validate_split

    train, test = load_split("rvos-sprites-mini", "train"), load_split("rvos-sprites-mini", "test")
    assert len(train) == 8 and len(test) == 4 and train.fingerprint != test.fingerprint
    assert train.fingerprint == load_split("rvos-sprites-mini", "train").fingerprint
    counts = validate_split(train, "rvos/rvos-sprites-mini")
    assert counts["videos"] == 8 and counts["frames"] == 40 and counts["expressions"] >= 16
    assert train.image(0).size == (64, 64)


def _write_layout(base: Path, split: str, frames, masks, exps, names) -> None:
    videos = {}
    for v, name in enumerate(names):
        ids = [f"{i * 5:05d}" for i in range(len(frames[v]))]
        for i, fid in enumerate(ids):
            (base / split / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
            (base / split / "Annotations" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(frames[v][i]).save(base / split / "JPEGImages" / name / f"{fid}.jpg", quality=95)
            png = Image.fromarray(masks[v][i], mode="P")
            png.putpalette([0, 0, 0, 236, 95, 103, 249, 145, 87, 250, 200, 99] + [0] * 756)
            png.save(base / split / "Annotations" / name / f"{fid}.png")
        videos[name] = {
            "frames": ids,
            "expressions": {
                str(k): {"exp": e.text, "obj_id": str(e.obj_id)}
                for k, e in enumerate(e for e in exps if e.video == v)
            },
        }
    meta = base / "meta_expressions" / split / "meta_expressions.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"videos": videos}))


def _layout(root: Path, n: int = 3) -> None:
    from bob.tasks.rvos.data import generate_referring_sprites

    for split, real in (("train", "train"), ("test", "valid")):
        frames, masks, exps = generate_referring_sprites(n, seed=len(split))
        _write_layout(root / "ref-davis", real, frames, masks, exps, [f"{split}{v}" for v in range(n)])


def test_real_layout_reads_palette_masks_and_expressions(tmp_path: Path) -> None:
    from bob.data import dataset_info
    from bob.tasks.rvos.data import generate_referring_sprites, load_referring_layout, validate_split

    _layout(tmp_path)
    info = dataset_info("ref-davis17")
    opts = {"subdir": "ref-davis", "splits": {"train": "train", "test": "valid"}}
    split = load_referring_layout(info, "test", root=tmp_path, **opts)
    frames, masks, exps = generate_referring_sprites(3, seed=4)
    assert split.names == ["test0", "test1", "test2"] and len(split.expressions) == len(exps)
    assert [(e.video, e.obj_id, e.text) for e in split.expressions] == [
        (e.video, e.obj_id, e.text) for e in exps
    ]
    np.testing.assert_array_equal(split.masks(1), masks[1])
    assert np.abs(split.frames(1).astype(int) - frames[1]).mean() < 4  # JPEG
    assert validate_split(split, "x")["frames"] == 15 and len(split.fingerprint) == 64
    # Missing frame file, missing meta file, unknown split, broken reference: each named before training.
    (tmp_path / "ref-davis" / "valid" / "Annotations" / "test2" / "00005.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"Annotations/test2/00005.png.*expected ROOT/ref-davis"):
        load_referring_layout(info, "test", root=tmp_path, **opts)
    with pytest.raises(DatasetNotFoundError, match=r"meta_expressions\.json"):
        load_referring_layout(info, "train", root=tmp_path / "nowhere", **opts)
    with pytest.raises(UsageError, match="no split 'val'"):
        load_referring_layout(info, "val", root=tmp_path, **opts)
    meta = tmp_path / "ref-davis" / "meta_expressions" / "train" / "meta_expressions.json"
    data = json.loads(meta.read_text())
    data["videos"]["train0"]["expressions"]["0"]["obj_id"] = "9"
    meta.write_text(json.dumps(data))
    broken = load_referring_layout(info, "train", root=tmp_path, **opts)
    with pytest.raises(UsageError, match="refers to object 9 of video 'train0'"):
        validate_split(broken, "rvos/ref-davis17")
    Image.new("RGB", (32, 32)).save(tmp_path / "ref-davis" / "train" / "JPEGImages" / "train1" / "00000.jpg")
    resized = load_referring_layout(info, "train", root=tmp_path, **opts)
    with pytest.raises(UsageError, match=r"video 'train1' has frames of sizes \[\(32, 32\), \(64, 64\)\]"):
        validate_split(resized, "rvos/ref-davis17")
    data["videos"]["train0"]["expressions"]["0"] = {"exp": "x"}
    meta.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="expression 0 of 'train0' is malformed"):
        load_referring_layout(info, "train", root=tmp_path, **opts)


# ------------------------------------------------------------------------------------- head and args


def test_loss_matches_the_best_query_and_inference_picks_the_top_score() -> None:
    import torch

    from bob.tasks.rvos.model import best_query_masks, referring_loss

    target = torch.zeros(1, 2, 8, 8)
    target[..., 2:6, 2:6] = 1
    masks = torch.full((1, 2, 3, 8, 8), -10.0)
    masks[:, :, 1, 2:6, 2:6] = 10.0  # query 1 segments the target in both frames
    scores = torch.tensor([[[0.0, -1.0, 2.0], [0.0, -1.0, 2.0]]])
    loss, parts = referring_loss(scores, masks, target)
    assert parts["mask"] < 0.01 and parts["dice"] < 0.01 and loss > 0  # matched to query 1, not 2
    picked = best_query_masks(scores, masks)
    assert picked.shape == (1, 2, 8, 8) and torch.equal(picked, masks[:, :, 2])


def test_head_shapes_frozen_cache_and_gradients() -> None:
    """Cached frozen levels equal recomputed ones; fine-tuning reaches the backbone, frozen does not."""
    import torch

    from bob.backbones import build_backbone
    from bob.data import load_split
    from bob.tasks.rvos.model import ReferringHead, referring_loss
    from bob.tasks.rvos.train import VideoFrames

    split = load_split("rvos-sprites-mini", "train")
    backbone = build_backbone("timm/resnet18", "random", input_size=64)
    text = torch.randn(2, 12)
    for frozen in (True, False):
        torch.manual_seed(0)
        model = ReferringHead(backbone, 12, dim=16, num_queries=3, layers=1, frozen=frozen).train()
        cached = VideoFrames(split, model, 64, (0.5,) * 3, (0.25,) * 3, "cpu")
        window = slice(1, 4)
        levels = [torch.cat(v) for v in zip(cached.levels(0, window), cached.levels(1, window), strict=True)]
        scores, masks = model(levels, text)
        assert scores.shape == (2, 3, 3) and masks.shape == (2, 3, 3, 16, 16)
        target = torch.stack([cached.targets(0, 1, window), cached.targets(1, 1, window)])
        assert target.shape == (2, 3, 64, 64) and target.sum() > 0
        referring_loss(scores, masks, target)[0].backward()
        grads = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in backbone.parameters()]
        assert any(grads) != frozen and model.queries.weight.grad is not None
        backbone.zero_grad(set_to_none=True)
    model = ReferringHead(backbone, 12, dim=16, frozen=True).eval()
    uncached = VideoFrames(split, model, 64, (0.5,) * 3, (0.25,) * 3, "cpu", cache_bytes=0)
    cached = VideoFrames(split, model, 64, (0.5,) * 3, (0.25,) * 3, "cpu")
    for a, b in zip(cached.levels(2, slice(2, 5)), uncached.levels(2, slice(2, 5)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert 2 in cached._levels and not uncached._levels


def test_task_args_are_validated() -> None:
    from bob.task import parse_task_args
    from bob.tasks.rvos import Rvos, RvosArgs

    for raw, message in [
        ({"mode": "linear"}, "mode must be one of frozen, finetune"),
        ({"text_encoder": "roberta"}, "text_encoder must be one of auto, backbone, bow, open_clip"),
        ({"prompt": "a photo"}, "prompt must contain"),
        ({"iters": "0"}, "iters must be a positive integer"),
        ({"num_frames": "0"}, "num_frames must be a positive integer"),
        ({"dim": "30", "heads": "4"}, r"heads \(4\) must divide dim \(30\)"),
        ({"mask_threshold": "1"}, r"mask_threshold must be in \(0, 1\)"),
        ({"bound_th": "0"}, "bound_th must be positive"),
        ({"lr": "-1"}, "lr must be > 0"),
        ({"image_size": "50"}, "image_size must be a positive multiple of 32"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_task_args(RvosArgs, raw, "rvos/rvos-sprites")
    args = parse_task_args(RvosArgs, {"iters": "7"}, "rvos/ref-davis17")
    assert args.resolved("real") == {"iters": 7, "lr": 1e-4, "dim": 256, "layers": 4}
    assert args.resolved("generated") == {"iters": 7, "lr": 1e-3, "dim": 64, "layers": 1}
    parse_task_args(RvosArgs, Rvos.check_args, "rvos/rvos-sprites-mini")


def test_listing_rvos_tasks_stays_torch_free() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from bob.suites import task_names\n"
        "import bob.tasks.rvos, bob.tasks.rvos.data, bob.tasks.rvos.metrics\n"
        "names = task_names('rvos/*')\n"
        "assert {'rvos/rvos-sprites', 'rvos/rvos-sprites-mini', 'rvos/ref-youtube-vos', 'rvos/ref-davis17'} <= set(names)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------ runs


def _run(
    backbone: str, weights: str, args: dict[str, str], tmp_path: Path, dataset: str = "rvos-sprites-mini"
):
    from bob.runner import RunOptions, execute
    from bob.spec import make_spec

    spec = make_spec(backbone, f"rvos/{dataset}", weights, 0, {}, args)
    return execute(
        spec, RunOptions(tmp_path / "results", tmp_path / "cache", device="cpu", num_workers=0)
    ).result


@pytest.mark.slow
def test_smoke_run_writes_j_and_f_and_loads_in_the_leaderboard(tmp_path: Path) -> None:
    from bob.leaderboard.load import load_results

    result = _run("timm/resnet18", "random", {"iters": "3", "batch_size": "2", "dim": "16"}, tmp_path)
    assert result.ok, result.error
    assert {"j_and_f", "j_mean", "f_mean"} <= set(result.metrics)
    assert 0 <= result.metrics["j_and_f"] <= 1
    p = result.protocol
    assert p["text_encoder"].startswith("bob bag-of-words") and p["mode"] == "frozen"
    assert p["iters"] == 3 and p["lr"] == 1e-3 and p["head"]["dim"] == 16 and p["pyramid"]["neck"] == "fpn"
    assert p["metric"]["bound_th"] == 0.008 and len(p["per_expression"]) == p["counts"]["test"]["expressions"]
    loaded = load_results(tmp_path / "results")
    assert not loaded.skipped and loaded.runs.loc[0, "task"] == "rvos/rvos-sprites-mini"
    assert loaded.runs.loc[0, "metric:j_and_f"] == result.metrics["j_and_f"]


@pytest.mark.slow
def test_plain_vit_finetuned_on_a_real_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain ViT (simple pyramid), fine-tuned, on Ref-DAVIS17's layout read from disk."""
    _layout(tmp_path / "data", n=2)
    monkeypatch.setenv("BOB_DATA_ROOT", str(tmp_path / "data"))
    args = {"iters": "2", "batch_size": "2", "dim": "16", "image_size": "64", "mode": "finetune"}
    result = _run("timm/vit_tiny_patch16_224", "random", args, tmp_path, dataset="ref-davis17")
    assert result.ok, result.error
    p = result.protocol
    assert p["pyramid"]["neck"] == "simple" and p["backbone_lr"] == pytest.approx(1e-4 * 0.5)
    assert p["head"]["decoder_layers"] == 4 and p["counts"]["test"]["videos"] == 2


@pytest.mark.long
def test_pretrained_mobilenet_beats_random_on_referring_sprites(tmp_path: Path, weights_dir: Path) -> None:
    """The embedded default (frozen backbone, 300 iterations): ImageNet features find the named sprite."""
    scores = {}
    for weights in ("pretrained", "random"):
        result = _run("torchvision/mobilenet_v2", weights, {}, tmp_path, dataset="rvos-sprites")
        assert result.ok, result.error
        scores[weights] = result.metrics["j_and_f"]
    assert scores["pretrained"] > scores["random"] + 0.05, scores
