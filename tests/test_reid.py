"""The re-ID suite end to end: frozen and fine-tuned runs, Market layout on disk, errors before any work,
and ImageNet MobileNetV2 beating random weights."""

from __future__ import annotations

import numpy as np
import pytest
from task_runs import TINY, run_task

from bob.errors import UnknownNameError, UsageError
from bob.spec import make_spec
from bob.tasks.reid.train import identity_batches
from tests.test_reid_data import make_market


def test_frozen_run_on_the_mini_set(options):
    result = run_task(options, "reid/shapes-reid-mini", image_size=32).result
    assert result.ok, result.error
    assert set(result.metrics) == {"map", "rank1", "rank5", "rank10"}
    assert result.metrics["rank10"] >= result.metrics["rank5"] >= result.metrics["rank1"]
    assert 0.0 < result.metrics["map"] <= 1.0
    protocol = result.protocol
    assert (protocol["num_query"], protocol["num_gallery"], protocol["gallery_distractors"]) == (36, 44, 8)
    assert protocol["queries_valid"] == 36 and protocol["queries_skipped"] == 0
    assert protocol["mode"] == "frozen" and protocol["distance"] == "cosine"
    assert result.cache["extractions"] == 1  # the test split (queries + gallery); train is not needed
    again = run_task(
        options, "reid/shapes-reid-mini", image_size=32, distance="euclidean", ranks="1,3"
    ).result
    assert again.ok and again.cache["extractions"] == 0 and set(again.metrics) == {"map", "rank1", "rank3"}


def test_market_layout_on_disk_skips_queries_without_a_match(options, tmp_path):
    make_market(tmp_path / "data")
    result = run_task(options, "reid/market1501", root=tmp_path / "data").result
    assert result.ok, result.error
    # query 0001 (cam 1) has 0001 on cam 2; query 0003 (cam 2) has 0003 on cam 6: both valid.
    assert result.protocol["queries_valid"] == 2 and result.protocol["junk_images_dropped"] == 2
    assert result.protocol["num_gallery"] == 4 and result.protocol["gallery_distractors"] == 1


def test_no_valid_query_fails_before_any_extraction(options, tmp_path):
    folder = make_market(tmp_path / "data")
    for name in ("0001_c2s1_000301_01.jpg", "0003_c6s2_000151_02.jpg"):
        (folder / "bounding_box_test" / name).unlink()  # only same-camera matches are left
    result = run_task(options, "reid/market1501", root=tmp_path / "data").result
    assert not result.ok and result.error["user_error"]
    assert "no query has a gallery image" in result.error["message"] and result.cache["extractions"] == 0


def test_finetune_trains_a_bnneck_embedding(options):
    result = run_task(
        options,
        "reid/shapes-reid-mini",
        mode="finetune",
        epochs=1,
        ids_per_batch=4,
        images_per_id=2,
        image_size=32,
    ).result
    assert result.ok, result.error
    p = result.protocol
    assert p["mode"] == "finetune" and p["train_on"] == "shapes-reid-mini" and not p["cross_domain"]
    assert (p["num_train_ids"], p["num_train_images"]) == (12, 72)
    assert 7 <= p["steps"] <= 9  # 12 identities × 3 chunks of K = 2, 4 identities per batch
    assert np.isfinite(p["final_epoch_loss"]) and 0.0 <= result.metrics["map"] <= 1.0
    assert result.cache["extractions"] == 0  # fine-tuned features never enter the feature cache


def test_cross_domain_trains_on_another_dataset(options, tmp_path):
    make_market(tmp_path / "data")
    result = run_task(
        options,
        "reid/market1501",
        root=tmp_path / "data",
        mode="finetune",
        train_on="shapes-reid-mini",
        epochs=1,
        ids_per_batch=4,
        images_per_id=2,
        image_size=32,
    ).result
    assert result.ok, result.error
    assert result.protocol["train_on"] == "shapes-reid-mini" and result.protocol["cross_domain"]
    assert result.protocol["num_train_ids"] == 12 and result.protocol["queries_valid"] == 2


def test_too_few_training_identities_fail_before_training(options, tmp_path):
    make_market(tmp_path / "data")  # its train split has 2 identities
    result = run_task(
        options, "reid/market1501", root=tmp_path / "data", mode="finetune", ids_per_batch=4
    ).result
    assert (
        not result.ok
        and result.error["user_error"]
        and "fewer than ids_per_batch=4" in result.error["message"]
    )


def test_identity_batches_follow_the_random_identity_sampler():
    labels = np.repeat(np.arange(6), [5, 4, 4, 8, 1, 3])
    batches = identity_batches(labels, 3, 2, np.random.default_rng(0))
    assert batches and all(len(b) == 6 for b in batches)
    for batch in batches:
        ids, counts = np.unique(labels[batch], return_counts=True)
        assert len(ids) == 3 and set(counts) == {2}
    used = np.concatenate(batches)
    many = used[labels[used] != 4]  # identity 4 has one image, resampled to K = 2
    assert len(np.unique(many)) == len(many)  # otherwise no image twice in an epoch


def test_batch_hard_triplet_matches_a_loop():
    import torch

    from bob.tasks.reid.train import batch_hard_triplet

    gen = torch.Generator().manual_seed(0)
    feat, labels = torch.randn(12, 5, generator=gen), torch.arange(4).repeat_interleave(3)
    expected = []
    for a in range(12):
        d = [float(torch.dist(feat[a], feat[j])) for j in range(12)]
        pos = max(d[j] for j in range(12) if labels[j] == labels[a])
        neg = min(d[j] for j in range(12) if labels[j] != labels[a])
        expected.append(max(0.0, pos - neg + 0.3))
    assert float(batch_hard_triplet(feat, labels, 0.3)) == pytest.approx(np.mean(expected), abs=1e-5)


def test_finetune_args_in_frozen_mode_are_refused(options):
    result = run_task(options, "reid/shapes-reid-mini", epochs=3).result
    assert not result.ok and "epochs only apply to mode=finetune" in result.error["message"]
    assert result.cache["extractions"] == 0


def test_train_on_needs_finetune(options):
    result = run_task(options, "reid/shapes-reid-mini", train_on="shapes-reid").result
    assert not result.ok and "train_on only apply to mode=finetune" in result.error["message"]
    assert result.cache["extractions"] == 0


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ({"mode": "linear"}, UsageError, "mode must be"),
        ({"distance": "manhattan"}, UsageError, "distance must be"),
        ({"ranks": "0,5"}, UsageError, "ranks must be positive"),
        ({"epochs": "0"}, UsageError, "epochs must be"),
        ({"ids_per_batch": "1"}, UsageError, "ids_per_batch"),
        ({"label_smoothing": "1"}, UsageError, "label_smoothing"),
        ({"train_on": "digits"}, UsageError, "not a re-ID dataset"),
        ({"train_on": "market"}, UnknownNameError, "market1501"),
    ],
)
def test_bad_args_are_usage_errors(args, error, message):
    with pytest.raises(error, match=message):
        make_spec(TINY, "reid/shapes-reid-mini", "random", task_args=args)


def test_reid_needs_a_reid_dataset():
    with pytest.raises(UnknownNameError):
        make_spec(TINY, "reid/digits", "random")


@pytest.mark.slow
def test_imagenet_mobilenet_beats_random_weights(options, weights_dir):
    pretrained = run_task(options, "reid/shapes-reid-mini", "pretrained", "torchvision/mobilenet_v2").result
    random = run_task(options, "reid/shapes-reid-mini", "random", "torchvision/mobilenet_v2").result
    assert pretrained.ok and random.ok, (pretrained.error, random.error)
    assert pretrained.metrics["map"] - random.metrics["map"] >= 0.08, (pretrained.metrics, random.metrics)
    assert pretrained.metrics["rank5"] > random.metrics["rank5"]


@pytest.mark.slow
@pytest.mark.long
def test_imagenet_mobilenet_beats_random_weights_on_the_default_set(options, weights_dir):
    pretrained = run_task(options, "reid/shapes-reid", "pretrained", "torchvision/mobilenet_v2").result
    random = run_task(options, "reid/shapes-reid", "random", "torchvision/mobilenet_v2").result
    assert pretrained.ok and random.ok, (pretrained.error, random.error)
    assert pretrained.metrics["map"] - random.metrics["map"] >= 0.05, (pretrained.metrics, random.metrics)
    assert pretrained.metrics["rank1"] > random.metrics["rank1"]


@pytest.mark.slow
@pytest.mark.long
def test_finetuned_embedding_beats_frozen_features(options, weights_dir):
    frozen = run_task(options, "reid/shapes-reid", "pretrained", "torchvision/mobilenet_v2").result
    tuned = run_task(
        options, "reid/shapes-reid", "pretrained", "torchvision/mobilenet_v2", mode="finetune"
    ).result
    assert frozen.ok and tuned.ok, (frozen.error, tuned.error)
    assert tuned.metrics["map"] - frozen.metrics["map"] >= 0.3, (tuned.metrics, frozen.metrics)
    assert tuned.metrics["rank1"] > frozen.metrics["rank1"]
