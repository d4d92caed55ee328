"""The `limit` task arg (`bob run --limit N`): at most N samples per split, a seeded draw (stratified by
label where each sample has one class), in the run's identity only when set, with feature-cache
entries of its own."""

from __future__ import annotations

import numpy as np
import pytest

from bob.cache import FeatureCache
from bob.data import load_split
from bob.data.base import (
    ArraySplit,
    ImageSplit,
    SubsetSplit,
    limit_split,
    seeded_sample,
    stratified_sample,
)
from bob.data.coco import DetectionSplit
from bob.data.relevance import mark_queries
from bob.errors import UsageError
from bob.spec import make_spec, spec_template
from bob.tasks.iqa.data import IQASplit
from bob.tasks.multilabel.data import MultiLabelSplit
from bob.tasks.segmentation.data import SegmentationSplit
from tests.cli_harness import invoke
from tests.task_runs import TINY, run_task


def _labels(counts: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)])


def test_the_draw_is_seeded_sorted_and_of_the_asked_size():
    labels = _labels([30, 30, 30])
    a, b = stratified_sample(labels, 12, seed=0), stratified_sample(labels, 12, seed=0)
    assert np.array_equal(a, b) and len(a) == 12 and len(set(a.tolist())) == 12
    assert np.array_equal(a, np.sort(a))
    assert not np.array_equal(a, stratified_sample(labels, 12, seed=1))
    assert np.array_equal(stratified_sample(labels, 500, seed=0), np.arange(90))


def test_the_draw_is_stratified_by_label():
    counts = [60, 30, 10]
    labels = _labels(counts)
    for size in (10, 25, 50):
        taken = np.bincount(labels[stratified_sample(labels, size, seed=3)], minlength=3)
        share = size * np.asarray(counts) / sum(counts)
        assert taken.sum() == size
        assert np.all(np.abs(taken - share) <= 1.5), (size, taken, share)
    # every class keeps one sample as long as the limit allows it, however rare
    rare = _labels([97, 1, 1, 1])
    assert set(rare[stratified_sample(rare, 4, seed=0)].tolist()) == {0, 1, 2, 3}


def _split(n: int = 40, classes: int = 4) -> ArraySplit:
    images = np.arange(n * 8 * 8, dtype=np.uint8).reshape(n, 8, 8)
    return ArraySplit("toy", "train", [str(c) for c in range(classes)], images, np.arange(n) % classes)


def test_a_limited_split_is_a_view_with_a_fingerprint_of_its_own():
    full = _split()
    limited = limit_split(full, 12, seed=0)
    assert isinstance(limited, SubsetSplit) and len(limited) == 12 and limited.split == "train"
    assert limited.fingerprint != full.fingerprint
    assert limited.describe()["num_samples"] == 12
    row = int(limited.indices[5])
    assert np.array_equal(np.asarray(limited.image(5)), np.asarray(full.image(row)))
    assert limited.labels[5] == full.labels[row]
    assert (
        limit_split(full, 40, seed=0) is full
    )  # nothing to drop: the split, and its cache keys, as they are


def test_a_detection_split_keeps_the_annotations_of_the_images_it_keeps():
    train = load_split("scenes-mini", "train")
    limited = limit_split(train, 10, seed=0)
    assert isinstance(limited, DetectionSplit) and len(limited) == 10
    kept = {int(im["id"]) for im in limited.coco["images"]}
    assert {int(a["image_id"]) for a in limited.coco["annotations"]} <= kept
    expected = sum(1 for a in train.coco["annotations"] if int(a["image_id"]) in kept)
    assert len(limited.coco["annotations"]) == expected > 0
    assert limited.fingerprint != train.fingerprint


class _Boxed(ImageSplit):
    """A split that holds more per sample than its label and does not say how to take samples."""

    def __init__(self) -> None:
        super().__init__("boxed", "test", ["a", "b"], np.arange(10) % 2)


def test_splits_whose_samples_carry_more_than_a_label_refuse():
    with pytest.raises(UsageError, match="limit=3 cannot apply to boxed/test"):
        limit_split(_Boxed(), 3, seed=0)
    queries = mark_queries(_split(), 4)
    with pytest.raises(UsageError, match="queries and a database"):
        limit_split(queries, 10, seed=0)
    assert not type("Sub", (ArraySplit,), {}).plain  # a subclass is plain only if it says so


def test_limit_is_in_the_identity_only_when_set():
    full = spec_template("linear-probe/shapes-mini")
    assert "limit" not in full.task_args
    limited = spec_template("linear-probe/shapes-mini", {"limit": "50"})
    assert limited.task_args["limit"] == 50
    a = make_spec(TINY, "linear-probe/shapes-mini", "random")
    b = make_spec(TINY, "linear-probe/shapes-mini", "random", task_args={"limit": "50"})
    assert a.id != b.id


@pytest.mark.parametrize(("value", "message"), [("0", "positive"), ("x", "integer")])
def test_a_bad_limit_is_a_usage_error(value, message):
    with pytest.raises(UsageError, match=message):
        spec_template("knn/shapes-mini", {"limit": value})


def test_a_suite_whose_data_cannot_be_drawn_from_refuses_before_any_run(tmp_path, capsys, monkeypatch):
    with pytest.raises(
        UsageError, match="does not apply to reid/shapes-reid-mini: its dataset is a reid set"
    ):
        spec_template("reid/shapes-reid-mini", {"limit": "10"})
    monkeypatch.chdir(tmp_path)
    code, out = invoke(
        ["run", "-b", TINY, "-w", "random", "-t", "reid/shapes-reid-mini", "--limit", "10"], capsys
    )
    assert code == 2 and "does not apply to reid/shapes-reid-mini" in out
    assert not (tmp_path / "results").exists()  # nothing written


def _num_samples(cache_dir, keys: dict[str, str]) -> list[int]:
    """The number of samples each cache entry of a run was extracted from."""
    cache = FeatureCache(cache_dir)
    return sorted(cache.get(key).meta["spec"]["dataset"]["num_samples"] for key in keys.values())


def test_limited_runs_read_and_write_their_own_cache_entries(options, capsys, tmp_path, monkeypatch):
    limited = run_task(options, "ncm/shapes-mini", limit=30)
    assert limited.result.ok, limited.result.error
    assert limited.result.cache["extractions"] == 2 and limited.result.cache["hits"] == 0
    full = run_task(options, "ncm/shapes-mini")
    assert full.result.ok and full.result.cache["extractions"] == 2 and full.result.cache["hits"] == 0
    assert set(limited.result.cache["keys"].values()).isdisjoint(full.result.cache["keys"].values())
    assert _num_samples(options.cache_dir, limited.result.cache["keys"]) == [30, 30]
    assert _num_samples(options.cache_dir, full.result.cache["keys"]) == [100, 200]
    again = run_task(options, "ncm/shapes-mini", limit=30)
    assert again.skipped  # the same run id: done
    # `bob run --limit N` is `-a limit=N`: the same run, already done
    monkeypatch.chdir(tmp_path)
    argv = [
        "run",
        "-b",
        TINY,
        "-w",
        "random",
        "-t",
        "ncm/shapes-mini",
        "--results-dir",
        str(options.results_dir),
    ]
    code, out = invoke([*argv, "--cache-dir", str(options.cache_dir), "--limit", "30"], capsys)
    assert code == 0 and "already done" in out


def _pixels(split: ImageSplit, index: int) -> np.ndarray:
    return np.asarray(split.image(index))


def _targets(split: ImageSplit, index: int) -> list[np.ndarray]:
    """Everything a sample of a segmentation, IQA or multilabel split carries besides its pixels."""
    if isinstance(split, SegmentationSplit):
        return [split.mask(index)]
    if isinstance(split, IQASplit):
        reference = split.references.image(int(split.ref_index[index])) if split.has_references else None
        extra = [] if reference is None else [np.asarray(reference)]
        return [split.scores[index], split.content[index], split.labels[index], *extra]
    assert isinstance(split, MultiLabelSplit)
    return [split.targets[index], split.ignore[index], split.labels[index]]


def _rows(limited: ImageSplit, full: ImageSplit) -> list[int]:
    """The row of `full` each sample of `limited` shows, found by its pixels (each image is unique)."""
    by_pixels = {_pixels(full, j).tobytes(): j for j in range(len(full))}
    assert len(by_pixels) == len(full)
    return [by_pixels[_pixels(limited, i).tobytes()] for i in range(len(limited))]


@pytest.mark.parametrize(
    ("dataset", "split_cls"),
    [
        ("scenes-seg-mini", SegmentationSplit),
        ("skimage-distortions-mini", IQASplit),
        ("scenes-multilabel-mini", MultiLabelSplit),
    ],
)
def test_splits_without_one_label_per_sample_are_drawn_plainly_with_their_targets(dataset, split_cls):
    full = load_split(dataset, "train")
    assert isinstance(full, split_cls) and not full.single_label
    limited = limit_split(full, 20, seed=0)
    assert isinstance(limited, split_cls) and len(limited) == min(20, len(full)) == 20
    assert limited.split == "train" and limited.classes == full.classes  # the dataset's classes, all
    rows = _rows(limited, full)
    assert rows == seeded_sample(len(full), 20, seed=0).tolist()  # a plain seeded draw, no stratum
    for i, j in enumerate(rows):
        for kept, own in zip(_targets(limited, i), _targets(full, j), strict=True):
            assert np.array_equal(kept, own), (dataset, i, j)
    assert rows == _rows(limit_split(full, 20, seed=0), full)  # the same seed, the same samples
    assert rows != _rows(limit_split(full, 20, seed=1), full)
    other = limit_split(full, 20, seed=1).fingerprint
    assert len({limited.fingerprint, full.fingerprint, other}) == 3  # cache entries of their own
    assert limited.fingerprint == limit_split(full, 20, seed=0).fingerprint
    assert limit_split(full, len(full), seed=0) is full  # nothing to drop: the split as it is


def test_a_limited_full_reference_iqa_split_keeps_every_pair_with_its_own_reference():
    full = load_split("skimage-distortions-mini", "test")
    assert full.has_references and len(full) > 6
    limited = limit_split(full, 6, seed=2)
    assert len(limited) == 6 and limited.split_note == full.split_note
    assert limited.references is full.references  # links still point into the same references
    for i, j in enumerate(_rows(limited, full)):  # each distorted image with its own reference
        assert np.array_equal(_pixels(limited.references, int(limited.ref_index[i])),
                              _pixels(full.references, int(full.ref_index[j])))  # fmt: skip
    train = limit_split(load_split("skimage-distortions-mini", "train"), 6, seed=2)
    assert set(train.content.tolist()).isdisjoint(limited.content.tolist())  # no scene on both sides


@pytest.mark.slow  # ~25 s: a segmenter trains for two steps and scores 20 test images on CPU
def test_segmentation_takes_the_limit_end_to_end(tmp_path, capsys, monkeypatch):
    """A limited segmentation run exits 0 and scores exactly `limit` test images."""
    monkeypatch.chdir(tmp_path)
    small = ["iters=2", "batch_size=2", "fpn_channels=32", "head_channels=16", "image_size=64"]
    argv = ["run", "-b", TINY, "-w", "random", "-t", "segmentation/scenes-seg-mini", "--limit", "20"]
    argv += [arg for a in small for arg in ("-a", a)]
    code, out = invoke([*argv, "--results-dir", "r", "--cache-dir", "c"], capsys)
    assert code == 0, out
    (samples,) = (tmp_path / "r").rglob("*.samples.npz")
    with np.load(samples) as arrays:
        assert len(arrays["intersect"]) == 20
