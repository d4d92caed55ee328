"""The retrieval suite end to end: feature-cache reuse, retrieval datasets on disk, errors before extraction,
and ImageNet MobileNetV2 beating random weights."""

from __future__ import annotations

import pickle

import pytest
from task_runs import TINY, run_task

from bob.errors import UsageError
from bob.spec import make_spec
from tests.test_retrieval_data import make_copydays, make_roxford


def test_retrieval_after_a_linear_probe_extracts_nothing_new(options):
    probe = run_task(options, "linear-probe/shapes-mini", epochs=1, min_steps=5)
    assert probe.result.ok and probe.result.cache["extractions"] == 2
    result = run_task(options, "retrieval/shapes-mini").result
    assert result.ok, result.error
    assert result.cache["extractions"] == 0 and result.cache["hits"] == 2
    assert result.cache["keys"] == probe.result.cache["keys"]
    protocol = result.protocol
    assert protocol["relevance"].startswith("same class") and protocol["pool"] == ["train", "test"]
    # shapes-mini: 300 images, 30 per class -> 6 queries per class
    assert (protocol["num_queries"], protocol["num_database"], protocol["convention"]) == (
        60,
        240,
        "standard",
    )
    assert protocol["queries_without_relevant"] == 0
    assert set(result.metrics) == {"map", "mrr"} | {
        f"{m}_at_{k}" for m in ("precision", "recall") for k in (1, 5, 10)
    }
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    assert result.metrics["map"] > 0.1  # chance is 0.1 for ten balanced classes


def test_pool_and_cap_are_task_args(options):
    result = run_task(options, "retrieval/shapes-mini", pool="test", max_per_class=5, ks="1,3").result
    assert result.ok, result.error
    assert result.protocol["pool"] == ["test"] and result.protocol["num_queries"] == 10
    assert result.protocol["num_database"] == 40 and "precision_at_3" in result.metrics


def test_revisited_oxford_on_disk_uses_the_medium_protocol(options, tmp_path):
    make_roxford(tmp_path / "data")
    result = run_task(options, "retrieval/roxford5k", root=tmp_path / "data").result
    assert result.ok, result.error
    assert result.protocol["convention"] == "revisitop" and "Medium" in result.protocol["relevance"]
    assert (result.protocol["num_queries"], result.protocol["num_database"]) == (2, 8)
    standard = run_task(options, "retrieval/roxford5k", root=tmp_path / "data", convention="standard").result
    assert (
        standard.ok and standard.cache["extractions"] == 0 and standard.protocol["convention"] == "standard"
    )


def test_generated_instance_set(options):
    result = run_task(options, "retrieval/skimage-views").result
    assert result.ok, result.error
    assert (result.protocol["num_queries"], result.protocol["num_database"]) == (48, 192)
    assert result.protocol["transform"]["input_size"] == 96
    assert result.metrics["recall_at_10"] >= result.metrics["recall_at_5"] >= result.metrics["recall_at_1"]


def test_copydays_on_disk(options, tmp_path):
    make_copydays(tmp_path / "data")
    result = run_task(options, "retrieval/copydays", root=tmp_path / "data").result
    assert result.ok, result.error
    assert (result.protocol["num_queries"], result.protocol["num_database"]) == (3, 8)
    assert result.protocol["relevance"].startswith("same label")


def test_class_level_args_on_a_retrieval_set_are_refused(options):
    result = run_task(options, "retrieval/skimage-views", pool="test").result
    assert not result.ok and "only apply to class-as-relevance" in result.error["message"]
    assert result.cache["extractions"] == 0


def test_broken_ground_truth_fails_before_any_extraction(options, tmp_path):
    cfg = make_roxford(tmp_path / "data")
    cfg["gnd"][1]["easy"] = [99]
    with open(tmp_path / "data" / "roxford5k" / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump(cfg, f)
    result = run_task(options, "retrieval/roxford5k", root=tmp_path / "data").result
    assert not result.ok and result.error["user_error"]
    assert "query 1" in result.error["message"] and result.cache["extractions"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [({"pool": "val"}, "pool=val"), ({"query_fraction": "0.01"}, "yields no query")],
)
def test_bad_class_level_setups_fail_before_any_extraction(options, args, message):
    result = run_task(options, "retrieval/shapes-mini", **args).result
    assert not result.ok and result.error["user_error"] and message in result.error["message"]
    assert result.cache["extractions"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"convention": "trec"}, "convention must be"),
        ({"ks": "0,5"}, "ks must be positive"),
        ({"query_fraction": "1.5"}, "query_fraction"),
        ({"max_per_class": "1"}, "max_per_class"),
    ],
)
def test_bad_args_are_usage_errors(args, message):
    with pytest.raises(UsageError, match=message):
        make_spec(TINY, "retrieval/digits", "random", task_args=args)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "args"), [("retrieval/skimage-views", {}), ("retrieval/animal-mnist", {"pool": "test"})]
)
def test_imagenet_mobilenet_beats_random_weights(options, weights_dir, task, args):
    pretrained = run_task(options, task, "pretrained", "torchvision/mobilenet_v2", **args).result
    random = run_task(options, task, "random", "torchvision/mobilenet_v2", **args).result
    assert pretrained.ok and random.ok, (pretrained.error, random.error)
    assert pretrained.metrics["map"] - random.metrics["map"] >= 0.1, (pretrained.metrics, random.metrics)
    assert pretrained.metrics["mrr"] > random.metrics["mrr"]
