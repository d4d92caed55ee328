"""The few-label suite: label subsets (published files, seeded and written once), args, cache reuse, runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bob.data import load_split
from bob.errors import CacheCorruptError, DatasetNotFoundError, UsageError
from bob.runner import execute
from bob.spec import make_spec
from bob.task import parse_task_args
from bob.tasks.few_label import FewLabelArgs
from bob.tasks.few_label.subsets import balanced_indices, select_subset, subset_fingerprint

# ------------------------------------------------------------------------------- seeded subsets


def test_balanced_subsets_take_the_same_number_from_every_class():
    labels = np.repeat(np.arange(5), [100, 80, 60, 40, 20])  # 300 images, imbalanced
    idx = balanced_indices(labels, 0.1, seed=0)  # 0.1 · 300 / 5 = 6 per class
    assert np.bincount(labels[idx]).tolist() == [6] * 5
    assert np.array_equal(idx, np.sort(idx)) and len(set(idx.tolist())) == len(idx)
    assert np.array_equal(idx, balanced_indices(labels, 0.1, seed=0))
    assert not np.array_equal(idx, balanced_indices(labels, 0.1, seed=1))
    assert np.bincount(labels[balanced_indices(labels, 0.001, 0)]).tolist() == [1] * 5, "at least one"
    small = np.repeat(np.arange(2), [50, 3])
    assert np.bincount(small[balanced_indices(small, 0.5, 0)]).tolist() == [13, 3], "capped at class size"


def test_seeded_subsets_are_written_once_and_read_back(tmp_path):
    train = load_split("shapes-mini", "train")
    first = select_subset(train, 0.1, seed=3, data_root=tmp_path, subsets_dir=tmp_path / "subsets")
    path = Path(first.path)
    assert path.is_file() and first.method == "seeded class-balanced" and len(first.indices) == 20
    record = json.loads(path.read_text())
    assert record["indices"] == first.indices.tolist() and record["train_fingerprint"] == train.fingerprint
    # A later run reads the file instead of drawing again: edit it and the edit is what comes back.
    edited = sorted({*first.indices.tolist()[1:], *np.flatnonzero(train.labels == 0)[:5].tolist()})
    path.write_text(json.dumps({**record, "indices": edited}))
    again = select_subset(train, 0.1, seed=3, data_root=tmp_path, subsets_dir=tmp_path / "subsets")
    assert again.indices.tolist() == edited
    assert again.fingerprint == subset_fingerprint(train, np.array(edited)) != first.fingerprint
    other = select_subset(train, 0.1, seed=4, data_root=tmp_path, subsets_dir=tmp_path / "subsets")
    assert other.path != first.path and other.fingerprint != first.fingerprint


def test_a_subset_file_of_another_split_is_refused(tmp_path):
    train = load_split("shapes-mini", "train")
    subset = select_subset(train, 0.2, seed=0, data_root=tmp_path, subsets_dir=tmp_path)
    record = json.loads(Path(subset.path).read_text())
    Path(subset.path).write_text(json.dumps({**record, "train_fingerprint": "0" * 64}))
    with pytest.raises(CacheCorruptError, match="does not belong"):
        select_subset(train, 0.2, seed=0, data_root=tmp_path, subsets_dir=tmp_path)
    Path(subset.path).write_text("{not json")
    with pytest.raises(CacheCorruptError, match="delete it to redraw"):
        select_subset(train, 0.2, seed=0, data_root=tmp_path, subsets_dir=tmp_path)


def test_fraction_one_is_the_whole_split(tmp_path):
    train = load_split("shapes-mini", "train")
    subset = select_subset(train, 1.0, seed=0, data_root=tmp_path, subsets_dir=tmp_path)
    assert subset.method == "whole split" and len(subset.indices) == len(train)


# -------------------------------------------------------------------------- ImageNet's published files


@pytest.fixture
def fake_imagenet(tmp_path):
    """A 3-class ImageNet-layout train tree with 4 JPEGs per class."""
    for wnid in ("n01440764", "n01443537", "n01484850"):
        folder = tmp_path / "imagenet" / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"{wnid}_{i}.JPEG")
    return tmp_path


def test_imagenet_subsets_come_from_simclr_files_not_from_sampling(fake_imagenet):
    listed = ["n01443537_2.JPEG", "n01440764_0.JPEG", "n01484850_3.JPEG", "n01440764_1.JPEG"]
    (fake_imagenet / "imagenet" / "10percent.txt").write_text("\n".join(listed) + "\n")
    train = load_split("imagenet", "train", root=fake_imagenet)
    subset = select_subset(train, 0.1, seed=0, data_root=fake_imagenet, subsets_dir=fake_imagenet / "s")
    assert subset.method == "published file 10percent.txt"
    assert sorted(train.paths[i].name for i in subset.indices) == sorted(listed)
    assert not (fake_imagenet / "s").exists(), "nothing is drawn or written for published subsets"
    other = select_subset(train, 0.05, seed=0, data_root=fake_imagenet, subsets_dir=fake_imagenet / "s")
    assert other.method == "seeded class-balanced", "fractions without a published file are drawn"


def test_a_missing_imagenet_subset_file_is_named(fake_imagenet):
    train = load_split("imagenet", "train", root=fake_imagenet)
    with pytest.raises(DatasetNotFoundError, match=r"'1percent\.txt'.*simclr"):
        select_subset(train, 0.01, seed=0, data_root=fake_imagenet, subsets_dir=fake_imagenet)


def test_a_subset_file_naming_absent_images_is_refused(fake_imagenet):
    (fake_imagenet / "1percent.txt").write_text("n01440764_0.JPEG\nn09999999_1.JPEG\n")
    train = load_split("imagenet", "train", root=fake_imagenet)
    with pytest.raises(DatasetNotFoundError, match=r"1 of the 2 images.*n09999999_1\.JPEG"):
        select_subset(train, 0.01, seed=0, data_root=fake_imagenet, subsets_dir=fake_imagenet)


# ------------------------------------------------------------------------------------------ args


@pytest.mark.parametrize(
    "raw",
    [
        {"fraction": "0"},
        {"fraction": "-0.1"},
        {"fraction": "1.5"},
        {"mode": "semi"},
        {"mode": "linear", "val_fraction": "0"},
        {"val_fraction": "1"},
        {"probe_weight_decay": "-1"},
    ],
)
def test_out_of_range_args_are_usage_errors(raw):
    with pytest.raises(UsageError):
        parse_task_args(FewLabelArgs, raw, "few-label/shapes-mini")


def test_any_fraction_in_the_open_unit_interval_is_accepted():
    for value in ("0.01", "0.1", "0.37", "1"):
        assert parse_task_args(FewLabelArgs, {"fraction": value}, "few-label/x").fraction == float(value)
    assert parse_task_args(
        FewLabelArgs, {"mode": "linear", "val_fraction": "0", "probe_weight_decay": "1e-4"}, "x"
    )


# ------------------------------------------------------------------------------------------- runs


def test_linear_mode_reuses_the_linear_probes_features(options):
    """A linear probe, then linear few-label on the same backbone and dataset: no new extraction."""
    common = {"image_size": "32", "epochs": "2", "min_steps": "20", "weight_decay": "1e-3"}
    probe = make_spec("torchvision/mobilenet_v2", "linear-probe/shapes-mini", "random", task_args=common)
    first = execute(probe, options).result
    assert first.ok and first.cache["extractions"] == 2
    args = {
        "image_size": "32",
        "mode": "linear",
        "fraction": "0.5",
        "probe_epochs": "2",
        "probe_min_steps": "20",
    }
    few = make_spec("torchvision/mobilenet_v2", "few-label/shapes-mini", "random", task_args=args)
    result = execute(few, options).result
    assert result.ok, result.error
    assert result.cache["extractions"] == 0 and result.cache["hits"] == 2
    assert result.cache["keys"] == first.cache["keys"], "the same cache entries, indexed by the subset"
    p = result.protocol
    assert p["mode"] == "linear" and p["subset"]["num_labelled"] == 100
    assert p["num_train"] + p["num_val"] == 100 and p["num_test"] == 100
    assert p["subset_fingerprint"] == p["subset"]["fingerprint"] and len(p["subset_fingerprint"]) == 64
    assert 0.0 <= result.metrics["top1"] <= 1.0


def test_finetune_mode_trains_on_the_labelled_subset_only(options):
    args = {"image_size": "32", "fraction": "0.5", "epochs": "1", "warmup_epochs": "0", "batch_size": "32"}
    spec = make_spec("timm/mobilenetv3_small_050", "few-label/shapes-mini", "random", task_args=args)
    result = execute(spec, options).result
    assert result.ok, result.error
    p = result.protocol
    assert p["mode"] == "finetune" and p["num_train"] == 80 and p["num_val"] == 20
    assert p["val_source"].startswith("stratified 20% of the labelled subset")
    assert p["layer_decay_grouping"] == "timm group_matcher" and p["drop_path"] == 0.1
    assert Path(result.artifacts["checkpoint"]).is_file()


def test_a_subset_too_small_to_validate_on_fails_before_training(options):
    args = {"image_size": "32", "fraction": "0.01"}  # 1 image per class
    spec = make_spec("timm/mobilenetv3_small_050", "few-label/shapes-mini", "random", task_args=args)
    result = execute(spec, options).result
    assert not result.ok and result.error["type"] == "UsageError"
    assert "val_fraction=0" in result.error["message"]
    assert result.timings["total_s"] < 10
