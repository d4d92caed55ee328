"""The finetune suite's in-protocol lr search: Ray Tune trials with ASHA, then the final fit with the winner."""

from __future__ import annotations

import pytest

from bob.errors import UsageError
from bob.runner import RunOptions, execute
from bob.spec import make_spec
from bob.task import parse_task_args
from bob.tasks.finetune import FinetuneArgs

SMALL_TIMM = "timm/mobilenetv3_small_050"


def test_an_unknown_search_is_a_usage_error_before_any_run():
    with pytest.raises(
        UsageError, match=r"Unknown search for finetune 'learning_rate'.*Valid values: none, lr"
    ):
        parse_task_args(FinetuneArgs, {"search": "learning_rate"}, "finetune/shapes-mini")
    with pytest.raises(UsageError, match="Did you mean: lr"):
        make_spec(SMALL_TIMM, "finetune/shapes-mini", "random", task_args={"search": "lrr"})
    with pytest.raises(UsageError, match="search_samples must be a positive integer"):
        parse_task_args(FinetuneArgs, {"search": "lr", "search_samples": "0"}, "finetune/shapes-mini")


def test_runs_without_a_search_keep_their_identity():
    plain = make_spec(SMALL_TIMM, "finetune/shapes-mini", "random", task_args={"epochs": "2"})
    assert "search" not in plain.task_args and "search_samples" not in plain.task_args
    searched = make_spec(SMALL_TIMM, "finetune/shapes-mini", "random", task_args={"search": "lr"})
    assert searched.task_args["search"] == "lr" and searched.task_args["search_samples"] == 4


@pytest.mark.parametrize(
    ("backbone", "task", "extra"),
    [
        (SMALL_TIMM, "finetune/shapes-mini", {"epochs": "1", "warmup_epochs": "0"}),
        ("timm/resnet18", "detection/scenes-mini", {"iters": "1", "image_size": "64"}),
    ],
)
def test_without_ray_a_search_fails_clearly_before_any_training(
    backbone, task, extra, monkeypatch, results_dir, cache_dir
):
    import sys

    import bob.tasks.common.finetune_run as finetune_run
    import bob.tasks.detection.train as detection_train

    def no_training(*args, **kwargs):
        raise AssertionError("training started although the search cannot run")

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.setattr(finetune_run, "finetune_classifier", no_training)
    monkeypatch.setattr(detection_train, "train_detector", no_training)
    spec = make_spec(backbone, task, "random", task_args={"search": "lr", **extra})
    result = execute(spec, RunOptions(results_dir, cache_dir, device="cpu", num_workers=0)).result
    assert not result.ok
    assert result.error["type"] == "UsageError" and result.error["user_error"]
    assert "needs Ray Tune: pip install 'bob-bench[cluster]'" in result.error["message"]


@pytest.mark.slow  # Ray startup plus two fine-tuning trials
def test_lr_search_lands_in_the_protocol_and_the_final_fit_uses_the_winner(
    ray_session, results_dir, cache_dir
):
    args = {
        "search": "lr",
        "search_samples": "2",
        "epochs": "2",
        "warmup_epochs": "0",
        "batch_size": "16",
        "image_size": "32",
    }
    spec = make_spec(SMALL_TIMM, "finetune/shapes-mini", "random", task_args=args)
    result = execute(spec, RunOptions(results_dir, cache_dir, device="cpu", num_workers=0)).result
    assert result.ok, result.error
    search = result.protocol["search"]
    assert search["metric"] == "val_top1" and search["scheduler"] == "asha" and search["mode"] == "max"
    assert len(search["trials"]) == 2
    for trial in search["trials"]:
        assert 1e-5 <= trial["config"]["lr"] <= 3e-3
        assert 1 <= trial["iterations"] == len(trial["scores"]) <= 2  # one val top-1 per epoch run
        assert all(0.0 <= s <= 1.0 for s in trial["scores"]) and trial["score"] == max(trial["scores"])
    assert search["best_config"] == {"lr": result.protocol["lr"]}
    assert search["best_score"] == max(t["score"] for t in search["trials"])
    # The final fit is the ordinary one, with the winning lr: its own history and a test score.
    assert [h["epoch"] for h in result.protocol["history"]] == [1, 2]
    assert set(result.metrics) >= {"top1", "val_top1"}


# -------------------------------------------------------------------------------------- detection


def test_detection_search_args_are_validated():
    from bob.tasks.detection import DetectionArgs

    with pytest.raises(UsageError, match=r"Unknown search for detection 'lrs'\. Did you mean: lr"):
        parse_task_args(DetectionArgs, {"search": "lrs"}, "detection/scenes-mini")
    with pytest.raises(UsageError, match="search_val_fraction must be in"):
        parse_task_args(DetectionArgs, {"search": "lr", "search_val_fraction": "1"}, "detection/scenes-mini")
    plain = make_spec("timm/resnet18", "detection/scenes-mini", "random", task_args={"iters": "2"})
    assert "search" not in plain.task_args


def test_the_detection_val_part_is_seeded_and_disjoint_from_the_train_part():
    from bob.data import load_split
    from bob.tasks.detection.train import holdout

    train = load_split("scenes-mini", "train")
    part, val = holdout(train, 0.25, seed=3)
    again, val_again = holdout(train, 0.25, seed=3)
    ids = lambda s: {im["id"] for im in s.coco["images"]}  # noqa: E731
    assert ids(val) == ids(val_again) and ids(part) == ids(again)
    assert not ids(part) & ids(val) and len(part) + len(val) == len(train)
    assert {a["image_id"] for a in val.coco["annotations"]} <= ids(val)
    assert val.image(0).size == train.image(0).size


@pytest.mark.slow  # Ray startup plus four detector trainings
def test_detection_lr_search_tries_bobs_grid_then_fits_the_winner(ray_session, results_dir, cache_dir):
    args = {
        "search": "lr",
        "iters": "2",
        "batch_size": "2",
        "augment": "flip",
        "fpn_channels": "32",
        "image_size": "64",
        "rois_per_image": "32",
    }
    spec = make_spec("timm/resnet18", "detection/scenes-mini", "random", task_args=args)
    result = execute(spec, RunOptions(results_dir, cache_dir, device="cpu", num_workers=0)).result
    assert result.ok, result.error
    search = result.protocol["search"]
    assert search["metric"] == "val_box_ap" and search["scheduler"] == "fifo"
    assert sorted(t["config"]["lr"] for t in search["trials"]) == [8e-5, 1e-4, 2e-4, 3e-4]
    assert all(t["iterations"] == 1 and 0.0 <= t["score"] <= 1.0 for t in search["trials"])
    assert search["best_config"] == {"lr": result.protocol["lr"]}
    assert (
        search["num_search_train"] + search["num_search_val"]
        == result.protocol["data"]["train"]["num_samples"]
    )
    assert result.protocol["iterations"] == 2 and "box_ap" in result.metrics
