"""The video-cls suite: temporal pooling, view sampling, moving sprites, PyAV decoding, layouts, runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bob.data import load_split
from bob.data.video import (
    ArrayVideoSplit,
    VideoDecodeError,
    Views,
    clip_frame_indices,
    crop_offsets,
    uniform_clip_starts,
)
from bob.errors import DatasetNotFoundError, UsageError
from bob.tasks.video_cls.data import MOTION_CLASSES, _clip, generate_moving_sprites
from bob.tasks.video_cls.temporal_pool import pool_frames

# ------------------------------------------------------------------------------------ temporal pooling


def _reversal_pairs(n: int, t: int = 8, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frame features drifting along one fixed direction (label 0) and their time reversals (label 1):
    like "moving right" and "moving left", the two classes hold exactly the same frames."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(99).normal(size=(1, 1, d))
    base = 2.0 * rng.normal(size=(n, 1, d))
    ramp = np.linspace(-0.5, 0.5, t)[None, :, None]
    forward = base + direction * ramp + 0.05 * rng.normal(size=(n, t, d))
    return np.concatenate([forward, forward[:, ::-1]]), np.repeat([0, 1], n)


def test_mean_pooling_cannot_tell_a_clip_from_its_reversal_but_mean_diff_can() -> None:
    x, _ = _reversal_pairs(4)
    fwd, rev = x[:4], x[4:]
    np.testing.assert_allclose(pool_frames(fwd, "mean"), pool_frames(rev, "mean"), atol=1e-6)
    a, b = pool_frames(fwd, "mean+diff"), pool_frames(rev, "mean+diff")
    d = x.shape[-1]
    np.testing.assert_allclose(a[:, :d], b[:, :d], atol=1e-6)
    np.testing.assert_allclose(a[:, d:], -b[:, d:], atol=1e-6)  # the difference half flips sign
    np.testing.assert_allclose(a[:, d:], (fwd[:, -1] - fwd[:, 0]) / (fwd.shape[1] - 1), atol=1e-6)
    assert np.abs(a[:, d:]).min() > 0


def test_only_order_aware_pooling_learns_direction() -> None:
    """A logistic regression on pooled features: chance with mean, perfect with mean+diff."""
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = _reversal_pairs(60, seed=1)
    x_test, y_test = _reversal_pairs(40, seed=2)
    scores = {}
    for pool in ("mean", "mean+diff"):
        clf = LogisticRegression(max_iter=2000).fit(pool_frames(x_train, pool), y_train)
        scores[pool] = clf.score(pool_frames(x_test, pool), y_test)
    assert scores["mean"] == pytest.approx(0.5, abs=0.1) and scores["mean+diff"] == 1.0, scores


def test_torch_pooling_and_temporal_conv_head_see_order() -> None:
    import torch

    from bob.tasks.video_cls.model import pool_frames_torch, temporal_head

    x, _ = _reversal_pairs(3)
    xt = torch.from_numpy(x).float()
    for pool in ("mean", "mean+diff"):
        np.testing.assert_allclose(pool_frames_torch(xt, pool).numpy(), pool_frames(x, pool), atol=1e-5)
    torch.manual_seed(0)
    head = temporal_head("temporal-conv", 16, 5).eval()
    with torch.no_grad():
        fwd, rev = head(xt[:3]), head(xt[3:])
    assert fwd.shape == (3, 5) and not torch.allclose(fwd, rev, atol=1e-4)
    with torch.no_grad():  # the mean head is order-blind by construction
        mean_head = temporal_head("mean", 16, 5).eval()
        torch.testing.assert_close(mean_head(xt[:3]), mean_head(xt[3:]), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ view sampling


def test_uniform_clips_by_hand() -> None:
    # 24 frames, 8 × stride 2 spans 15 frames: starts 0..9; ten clips take every start once.
    np.testing.assert_array_equal(uniform_clip_starts(24, 8, 2, 10), np.arange(10))
    np.testing.assert_array_equal(uniform_clip_starts(30, 8, 2, 4), [0, 5, 10, 15])
    np.testing.assert_array_equal(uniform_clip_starts(30, 8, 2, 1), [7])  # the middle clip
    np.testing.assert_array_equal(clip_frame_indices(5, 30, 4, 3), [5, 8, 11, 14])
    # A video shorter than the clip loops: 5 frames, 4 × stride 2.
    np.testing.assert_array_equal(uniform_clip_starts(5, 4, 2, 3), [0, 0, 0])
    np.testing.assert_array_equal(clip_frame_indices(0, 5, 4, 2), [0, 2, 4, 1])


def test_three_crops_by_hand() -> None:
    assert crop_offsets(64, 80, 64, 3) == [(0, 0), (0, 8), (0, 16)]  # left, centre, right
    assert crop_offsets(90, 64, 64, 3) == [(0, 0), (13, 0), (26, 0)]  # top, centre, bottom
    assert crop_offsets(64, 80, 64, 1) == [(0, 8)]
    assert crop_offsets(70, 70, 64, 1) == [(3, 3)]
    with pytest.raises(ValueError, match="smaller than"):
        crop_offsets(60, 80, 64, 3)


def test_views_parse() -> None:
    assert Views.parse("10x3") == Views(10, 3) and str(Views.parse(" 4 × 1 ")) == "4x1"
    for bad in ("10", "10x2", "0x3", "ax3"):
        with pytest.raises(UsageError, match="views"):
            Views.parse(bad)


class _MeanColour:
    """A stand-in backbone: the mean RGB of each frame, so every view's features can be checked by hand."""

    meta = SimpleNamespace(name="mean-colour")

    def eval(self):
        return self

    def forward_pooled(self, x):
        return x.mean(dim=(2, 3))


def test_gathered_views_match_views_cut_by_hand() -> None:
    from bob.progress import Progress
    from bob.tasks.video_cls.features import ClipSpec, eval_crops, eval_view_features, gather_views

    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, size=(2, 11, 20, 26, 3), dtype=np.uint8)
    split = ArrayVideoSplit("t", "test", ["a", "b"], clips, np.array([0, 1]))
    spec, views = ClipSpec(4, 3, 20, (0.5,) * 3, (0.25,) * 3), Views(3, 3)
    rows, counts = eval_view_features(_MeanColour(), split, spec, views, 7, "cpu", Progress())
    gathered = list(gather_views(rows, counts, spec, views))
    for video, got in zip(clips, gathered, strict=True):
        assert got.shape == (9, 4, 3)
        crops = eval_crops(video, spec, 3).mean(dim=(3, 4)).numpy()  # [crops, frames, 3]
        for c in range(3):
            for k, start in enumerate(uniform_clip_starts(11, 4, 3, 3)):
                idx = clip_frame_indices(start, 11, 4, 3)
                np.testing.assert_allclose(got[c * 3 + k], crops[c, idx], atol=1e-5)


# ---------------------------------------------------------------------------------------- moving sprites


def test_sprites_are_deterministic_and_direction_pairs_are_reversals() -> None:
    a, la = generate_moving_sprites(8, num_frames=6, seed=5)
    b, _ = generate_moving_sprites(8, num_frames=6, seed=5)
    assert a.shape == (8, 6, 64, 80, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.sort(la), np.arange(8))  # balanced
    for cls in range(0, len(MOTION_CLASSES), 2):
        forward = _clip(np.random.default_rng(1), cls, 7, 64, 80, "texture")
        backward = _clip(np.random.default_rng(1), cls + 1, 7, 64, 80, "texture")
        np.testing.assert_array_equal(forward, backward[::-1])
        assert np.abs(forward[0].astype(int) - forward[-1].astype(int)).sum() > 0  # it does move


def test_sprites_split_is_fingerprinted_video_data() -> None:
    split = load_split("moving-sprites-mini", "train")
    assert len(split) == 48 and split.frames(0).shape == (24, 64, 80, 3)
    assert split.image(0).size == (80, 64)
    assert split.fingerprint == load_split("moving-sprites-mini", "train").fingerprint
    assert split.fingerprint != load_split("moving-sprites-mini", "test").fingerprint


# ---------------------------------------------------------------------------------- PyAV decoding, layouts


def _write_mp4(
    path: Path, colour: tuple[int, int, int], frames: int = 6, size: tuple[int, int] = (48, 64)
) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            image = np.zeros((*size, 3), np.uint8)
            image[:] = colour
            image[:, t * 4 : t * 4 + 8] = 255  # a white bar moving right
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _kinetics_tree(root: Path) -> None:
    for split_dir in ("train", "val"):
        for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            for i in range(2):
                _write_mp4(root / "kinetics400" / split_dir / name / f"{name}{i}.mp4", colour)


def test_pyav_decodes_mp4_written_by_pyav(tmp_path: Path) -> None:
    from bob.data.video import decode_video

    path = tmp_path / "v.mp4"
    _write_mp4(path, (200, 30, 30))
    frames = decode_video(path)
    assert frames.shape == (6, 48, 64, 3) and frames.dtype == np.uint8
    assert abs(float(frames[2, :, 40:, 0].mean()) - 200) < 20 and float(frames[2, :, 40:, 2].mean()) < 60
    bar = frames[:, :, :, 1].mean(axis=1)  # green is 255 only on the white bar
    assert (bar.argmax(axis=1)[1:] > bar.argmax(axis=1)[:-1]).all()  # it moves right, frame by frame


def test_kinetics_layout_loads_and_test_reads_val(tmp_path: Path) -> None:
    _kinetics_tree(tmp_path)
    train = load_split("kinetics400", "train", root=tmp_path)
    test = load_split("kinetics400", "test", root=tmp_path)
    assert train.classes == ("blue", "red") and list(train.labels) == [0, 0, 1, 1]
    assert all(p.parent.parent.name == "val" for p in test.paths)
    assert test.frames(3).shape == (6, 48, 64, 3)
    train.check_readable()


def test_layout_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"kinetics400.*<class>/<video>"):
        load_split("kinetics400", "train", root=tmp_path)
    (tmp_path / "kinetics400" / "train" / "empty").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"class folder .*empty has no video"):
        load_split("kinetics400", "train", root=tmp_path)
    with pytest.raises(UsageError, match="cannot download"):
        load_split("kinetics400", "train", root=tmp_path, download=True)


def test_unreadable_video_is_named_before_training(tmp_path: Path) -> None:
    _kinetics_tree(tmp_path)
    broken = tmp_path / "kinetics400" / "train" / "red" / "red1.mp4"
    broken.write_bytes(b"not a video at all")
    split = load_split("kinetics400", "train", root=tmp_path)
    with pytest.raises(VideoDecodeError, match=r"red1\.mp4"):
        split.check_readable()
    with pytest.raises(VideoDecodeError, match=r"red1\.mp4"):
        split.frames(3)


def test_ucf101_official_split_lists(tmp_path: Path) -> None:
    base = tmp_path / "ucf101"
    for cls, colour in (("ApplyEyeMakeup", (200, 0, 0)), ("Archery", (0, 0, 200))):
        for g in (1, 2):
            _write_mp4(base / "videos" / cls / f"v_{cls}_g0{g}_c01.avi", colour)
    (base / "splits").mkdir()
    (base / "splits" / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (base / "splits" / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\nArchery/v_Archery_g01_c01.avi 2\n"
    )
    (base / "splits" / "testlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi\nArchery/v_Archery_g02_c01.avi\n"
    )
    train = load_split("ucf101", "train", root=tmp_path)
    assert train.classes == ("ApplyEyeMakeup", "Archery") and list(train.labels) == [0, 1]
    assert [p.name for p in load_split("ucf101", "test", root=tmp_path).paths][1] == "v_Archery_g02_c01.avi"
    (base / "splits" / "testlist01.txt").write_text("Archery/v_Archery_g09_c01.avi\n")
    with pytest.raises(UsageError, match=r"testlist01.txt lists Archery/v_Archery_g09_c01.avi"):
        load_split("ucf101", "test", root=tmp_path)
    (base / "splits" / "testlist01.txt").write_text("Bowling/v_Bowling_g01_c01.avi\n")
    with pytest.raises(UsageError, match=r"'Bowling' is not in classInd\.txt"):
        load_split("ucf101", "test", root=tmp_path)
    (base / "splits" / "testlist01.txt").write_text("\n")
    with pytest.raises(UsageError, match=r"split 'test' .* has no videos"):
        load_split("ucf101", "test", root=tmp_path)


def test_hmdb51_official_split_lists(tmp_path: Path) -> None:
    base = tmp_path / "hmdb51"
    (base / "splits").mkdir(parents=True)
    for cls in ("brush_hair", "cartwheel"):
        for i in range(3):
            _write_mp4(base / "videos" / cls / f"{cls}_{i}.avi", (100, 100, 100))
        (base / "splits" / f"{cls}_test_split1.txt").write_text(
            f"{cls}_0.avi 1\n{cls}_1.avi 2\n{cls}_2.avi 0\n"
        )
    train = load_split("hmdb51", "train", root=tmp_path)
    test = load_split("hmdb51", "test", root=tmp_path)
    assert train.classes == ("brush_hair", "cartwheel") and list(test.labels) == [0, 1]
    assert [p.name for p in train.paths] == ["brush_hair_0.avi", "cartwheel_0.avi"]
    (base / "splits" / "cartwheel_test_split1.txt").write_text("cartwheel_0.avi 7\n")
    with pytest.raises(UsageError, match="malformed line"):
        load_split("hmdb51", "train", root=tmp_path)


# ------------------------------------------------------------------------------------------- task args


def test_task_args_are_validated() -> None:
    from bob.task import parse_task_args
    from bob.tasks.video_cls import VideoClsArgs

    name = "video-cls/moving-sprites"
    for raw, message in (
        ({"pool": "max"}, "pool must be one of"),
        ({"mode": "frozen"}, "mode must be one of"),
        ({"views": "10x2"}, "views"),
        ({"clip_len": "0"}, "clip_len must be a positive"),
        ({"clip_len": "1"}, "at least 2 frames"),
        ({"train_clips": "0"}, "train_clips"),
        ({"ft_lr": "-1"}, "ft_lr"),
    ):
        with pytest.raises(UsageError, match=message):
            parse_task_args(VideoClsArgs, raw, name)
    args = parse_task_args(VideoClsArgs, {"views": "4x1", "pool": "temporal-conv"}, name)
    assert args.views == "4x1" and args.pool == "temporal-conv"


def test_listing_video_tasks_stays_torch_free() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from bob.suites import task_names\n"
        "import bob.tasks.video_cls, bob.tasks.video_cls.temporal_pool, bob.tasks.video_cls.data\n"
        "assert 'video-cls/moving-sprites' in task_names('video-cls/*')\n"
        "assert not [n for n in task_names() if n.startswith('linear-probe/moving')]\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------ runs


def _run(
    weights: str,
    args: dict[str, str],
    tmp_path: Path,
    dataset: str = "moving-sprites-mini",
    backbone: str = "timm/resnet18",
):
    from bob.runner import RunOptions, execute
    from bob.spec import make_spec

    spec = make_spec(backbone, f"video-cls/{dataset}", weights, 0, {}, args)
    return execute(spec, RunOptions(tmp_path / "results", tmp_path / "cache", device="cpu", num_workers=0))


SMOKE = {
    "views": "2x3",
    "train_clips": "1",
    "image_size": "32",
    "epochs": "2",
    "min_steps": "10",
    "weight_decay": "0.01",
}


def test_smoke_run_caches_features_and_records_views(tmp_path: Path) -> None:
    outcome = _run("random", SMOKE, tmp_path)
    result = outcome.result
    assert result.ok, result.error
    assert {"top1", "top1_single_view", "top5", "mean_per_class_recall"} <= set(result.metrics)
    p = result.protocol
    assert p["views"] == "2x3" and p["pool"] == "mean+diff" and p["mode"] == "linear"
    assert p["clip"]["clip_len"] == 8 and p["clip"]["stride"] == 2 and p["clip"]["size"] == 32
    assert p["num_test"] == 24 * 6 and p["num_train"] + p["num_val"] == 48
    assert set(result.cache["keys"]) == {"train", "test"} and result.cache["extractions"] == 2
    again = _run("random", {**SMOKE, "lr": "0.02"}, tmp_path)  # another head, same features
    assert again.result.ok and again.result.cache["hits"] == 2 and again.result.cache["extractions"] == 0
    from bob.leaderboard import load_results

    runs = load_results(tmp_path / "results").runs  # the leaderboard reads the results as they are
    assert len(runs) == 2 and set(runs["task"]) == {"video-cls/moving-sprites-mini"}


@pytest.mark.slow
def test_temporal_conv_and_finetune_modes_run(tmp_path: Path) -> None:
    conv = _run("random", {**SMOKE, "pool": "temporal-conv", "head_epochs": "3"}, tmp_path).result
    assert conv.ok, conv.error
    assert conv.protocol["head_epochs"] == 3 and "temporal-conv" in conv.protocol["head"]
    ft = _run("random", {**SMOKE, "mode": "finetune", "ft_epochs": "1", "ft_batch": "16"}, tmp_path).result
    assert ft.ok, ft.error
    assert (
        ft.protocol["epochs"] == 1
        and ft.protocol["train_batch_clips"] == 16
        and len(ft.protocol["history"]) == 1
    )
    assert 0.0 <= ft.metrics["top1"] <= 1.0


def test_broken_video_fails_the_run_before_extraction(tmp_path: Path) -> None:
    _kinetics_tree(tmp_path / "data")
    (tmp_path / "data" / "kinetics400" / "val" / "blue" / "blue0.mp4").write_bytes(b"\0" * 64)
    result = _run("random", {**SMOKE, "root": str(tmp_path / "data")}, tmp_path, dataset="kinetics400").result
    assert not result.ok and "blue0.mp4" in result.error["message"]
    assert result.cache["extractions"] == 0  # failed while checking, before any features or training
    import shutil

    shutil.rmtree(tmp_path / "data" / "kinetics400" / "val" / "blue")
    result = _run("random", {**SMOKE, "root": str(tmp_path / "data")}, tmp_path, dataset="kinetics400").result
    assert not result.ok and "different classes (in one split only: blue)" in result.error["message"]


@pytest.mark.slow
@pytest.mark.long
def test_pretrained_beats_random_and_order_beats_mean_on_moving_sprites(
    tmp_path: Path, weights_dir: Path
) -> None:
    """The embedded default, as `bob run` runs it (about 3 min per run on 2 busy cores)."""
    top1 = {}
    for weights, pool in (("pretrained", "mean+diff"), ("random", "mean+diff"), ("pretrained", "mean")):
        result = _run(
            weights, {"pool": pool}, tmp_path, dataset="moving-sprites", backbone="torchvision/mobilenet_v2"
        ).result
        assert result.ok, result.error
        top1[weights, pool] = result.metrics["top1"]
    assert top1["pretrained", "mean+diff"] > top1["random", "mean+diff"] + 0.03, top1
    assert top1["pretrained", "mean+diff"] > top1["pretrained", "mean"] + 0.15, top1
