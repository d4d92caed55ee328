"""Data-parallel detection and open-vocab (`bob run --gpus-per-run N`, bob/distributed.py): the shared
prediction (tasks/common/detector_train.py `predict`) sharded over two gloo ranks gives exactly the
one-process COCO records, metrics and per-image evaluation, and a two-rank run of each suite ends
with one ok result under the single-process run id."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bob.data.coco import DetectionSplit
from bob.data.scenes import generate_scenes
from bob.samples import SampleSet
from bob.spec import make_spec
from bob.tasks.detection import Detection
from bob.tasks.open_vocab import OpenVocab
from tests.cli_harness import bob_run_on_cpu

PALETTE = ("red", "yellow", "green", "blue")
NOVEL = ("green circle", "red star")
# 7 test images at 2 a batch: 4 batches, the last one short; rank 0 predicts batches 0 and 2 plus
# the short one, rank 1 batch 1, so the shards differ in size and interleave in image order.
N_IMAGES, BATCH = 7, 2


def _split() -> DetectionSplit:
    images, coco = generate_scenes(N_IMAGES, size=64, seed=5, palette=PALETTE, novel=NOVEL)
    return DetectionSplit("scenes-ov", "test", json.loads(json.dumps(coco)), arrays=images)


def _models(split: DetectionSplit) -> dict[str, torch.nn.Module]:
    """The detection suite's Mask R-CNN on a tiny ResNet and open-vocab's text-classified one on a
    tiny ViT (padded square, like the suites build them), seeded: every process builds the same."""
    from bob.backbones import build_backbone
    from bob.tasks.common.rcnn import build_detector
    from bob.tasks.common.text import bow_embeddings
    from bob.tasks.open_vocab.model import with_text_classifier

    torch.manual_seed(0)
    k = len(split.classes)
    common = {"masks": True, "image_size": 64, "fpn_channels": 32, "rois_per_image": 32}
    detection = build_detector(build_backbone("timm/test_resnet", "random", input_size=64), k, **common)
    vit = build_backbone("timm/test_vit", "random", input_size=64)
    open_vocab = build_detector(vit, k, pad_to=64, **common)
    base = torch.tensor([c not in NOVEL for c in split.classes])
    with_text_classifier(open_vocab, bow_embeddings(list(split.classes)), base, 0.01, masks=True)
    return {"detection": detection, "open_vocab": open_vocab}


def _evaluate(models: dict[str, torch.nn.Module], split: DetectionSplit) -> dict[str, Any]:
    """Each suite's evaluation of its model: records, metrics and the per-image samples."""
    from bob.tasks.common.coco_eval import coco_metrics
    from bob.tasks.common.detector_train import predict
    from bob.tasks.open_vocab.run import open_vocab_metrics
    from bob.tasks.open_vocab.vocab import novel_ids

    out: dict[str, Any] = {}
    for name, model in models.items():
        records = predict(model, split, BATCH, "cpu", num_workers=0)
        samples: dict[str, SampleSet] = {}
        if name == "detection":
            metrics, _ = coco_metrics(split.coco, records, ("bbox", "segm"), samples)
        else:
            metrics, _ = open_vocab_metrics(
                split, records, novel_ids(split, (), "t"), ("bbox", "segm"), samples
            )
        out[name] = {
            "records": records,
            "metrics": metrics,
            "samples": {t: (s.metric, s.n_units, s.arrays) for t, s in samples.items()},
        }
    return out


def _predict_worker(rank: int, size: int, port: int, weights: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=size)
    torch.set_num_threads(1)
    split = _split()
    models = _models(split)
    for name, state in torch.load(weights).items():
        models[name].load_state_dict(state)
    result = _evaluate(models, split)
    (Path(out) / f"{rank}.pkl").write_bytes(pickle.dumps(result))
    torch.distributed.destroy_process_group()


def _assert_same(got: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, want in expected.items():
        assert got[name]["records"] == want["records"], name
        assert got[name]["metrics"] == want["metrics"], name
        assert got[name]["samples"].keys() == want["samples"].keys(), name
        for iou_type, (metric, n_units, arrays) in want["samples"].items():
            g_metric, g_units, g_arrays = got[name]["samples"][iou_type]
            assert (g_metric, g_units) == (metric, n_units) == (g_metric, N_IMAGES), (name, iou_type)
            assert g_arrays.keys() == arrays.keys()
            for key, value in arrays.items():
                np.testing.assert_array_equal(g_arrays[key], value, err_msg=f"{name} {iou_type} {key}")


@pytest.mark.slow  # two processes that import torch and build two detectors: 19 s on 2 busy cores
def test_two_ranks_predict_exactly_the_one_process_records_and_metrics(tmp_path):
    from torch.distributed.elastic.utils.distributed import get_free_port

    split = _split()
    models = _models(split)
    weights = tmp_path / "weights.pt"
    torch.save({name: m.state_dict() for name, m in models.items()}, weights)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' count: a reduction split over threads rounds differently
    try:
        expected = _evaluate(models, split)
    finally:
        torch.set_num_threads(threads)
    for name, result in expected.items():  # a test of something: detections on several images
        assert len({r["image_id"] for r in result["records"]}) > 1, name
        assert all("segmentation" in r for r in result["records"]), name
    assert {"box_ap_novel", "mask_ap_base"} <= set(expected["open_vocab"]["metrics"])
    size = 2
    args = (size, get_free_port(), str(weights), str(tmp_path))
    torch.multiprocessing.spawn(_predict_worker, args=args, nprocs=size)
    for rank in range(size):
        _assert_same(pickle.loads((tmp_path / f"{rank}.pkl").read_bytes()), expected)


# ------------------------------------------------------------------------------------------ end to end

# The suites' `bob check` args (Detection.check_args, OpenVocab.check_args): 3 steps of 2 images,
# 16 test images. A tiny ViT: its final norm is outside the pyramid's graph, so DDP has an unused
# trainable parameter to find in every step.
TINY_VIT = "timm/test_vit"
TASKS = ("detection/scenes-mini", "open-vocab/scenes-ov-mini")
TASK_ARGS = Detection.check_args
assert OpenVocab.check_args == TASK_ARGS  # one set of args serves both suites


@pytest.mark.slow  # one launch of two ranks running both suites: 24 s on 2 busy cores
def test_two_ranks_run_both_suites_with_the_single_process_ids(tmp_path):
    args = [f"{k}={v}" for k, v in TASK_ARGS.items()]
    proc = bob_run_on_cpu(tmp_path, TINY_VIT, TASKS, args, "--gpus-per-run", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for task in TASKS:
        folder = tmp_path / "results" / task
        (path,) = folder.rglob("*.json")  # rank 0 alone wrote
        assert len(list(folder.rglob("*.samples.npz"))) == 1
        result = json.loads(path.read_text())
        assert result["status"] == "ok", result.get("error")
        assert result["id"] == make_spec(TINY_VIT, task, "random", task_args=TASK_ARGS).id
        dp = result["protocol"]["data_parallel"]
        assert (dp["world_size"], dp["per_device_batch"], dp["effective_batch"]) == (2, 1, 2)
        assert dp["find_unused_parameters"] is True
        assert result["protocol"]["iterations"] == 3
        assert result["protocol"]["samples"]["stored"] is True
        assert "check" not in result["protocol"]["samples"]  # the file reproduces the metric
        assert result["metrics"] and all(math.isfinite(v) for v in result["metrics"].values())


def test_detection_s_lr_search_is_refused_before_any_launch(tmp_path, capsys, monkeypatch):
    from tests.cli_harness import invoke

    monkeypatch.chdir(tmp_path)
    argv = ["run", "-b", TINY_VIT, "-w", "random", "-t", TASKS[0], "-a", "search=lr"]
    code, out = invoke([*argv, "--gpus-per-run", "2", "--results-dir", "r"], capsys)
    assert code == 2, out
    assert f"{TASKS[0]} with search=lr runs a Ray Tune search" in " ".join(out.split()), out
    assert not (tmp_path / "r").exists()
