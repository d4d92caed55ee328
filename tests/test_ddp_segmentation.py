"""Data-parallel segmentation (`bob run --gpus-per-run N`, bob/distributed.py): two gloo ranks that
each score their shard of a test split give one process's confusion matrix and per-image areas
exactly, every rank ends training with rank 0's BatchNorm statistics, and a run end to end on the
CPU writes one result under the single-process run id."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bob.spec import make_spec
from tests.cli_harness import bob_run_on_cpu

TINY = "timm/test_resnet"  # BatchNorm in the backbone and the head: per-rank statistics are exercised
TASK = "segmentation/scenes-seg-mini"
# The suite's `bob check` args: 2 iterations of batch 2 (1 crop per rank), narrow heads.
TASK_ARGS = {"iters": "2", "batch_size": "2", "augment": "flip", "fpn_channels": "32", "head_channels": "16"}
IMAGES = 7  # odd, so the two shards differ in length (4 and 3 images)
CLASSES = ("a", "b", "c", "d")


# ----------------------------------------------------------------------------- sharded evaluation


def _split():
    """A small labelled split with ignore pixels: random pixels, maps of quadrant classes."""
    from bob.tasks.segmentation.data import SegmentationSplit

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (IMAGES, 24, 32, 3), dtype=np.uint8)
    masks = rng.integers(0, len(CLASSES), (IMAGES, 24, 32), dtype=np.uint8)
    masks[rng.random(masks.shape) < 0.1] = 255
    return SegmentationSplit("toy", "test", CLASSES, images=images, masks=masks)


def _model() -> torch.nn.Module:
    """A fixed per-pixel classifier whose predictions vary across classes and images."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))


def _evaluate():
    from bob.tasks.segmentation.train import EvalConfig, evaluate

    cfg = EvalConfig(test_size=32, crop_size=32, mode="whole", batch_size=2)
    return evaluate(_model(), _split(), cfg, "cpu", num_workers=0)


def _worker(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=size)
    from bob.tasks.common.train_loop import sync_buffers

    acc = _evaluate()
    # BatchNorm statistics that differ per rank, as after a data-parallel step: rank 0's win.
    norm = torch.nn.BatchNorm2d(3)
    norm.running_mean.fill_(float(rank + 1))
    norm.num_batches_tracked.fill_(rank + 5)
    sync_buffers(norm)
    np.savez(
        Path(out) / f"{rank}.npz",
        matrix=acc.matrix,
        per_image=np.stack(acc.per_image),
        images=acc.images,
        running_mean=norm.running_mean.numpy(),
        batches=norm.num_batches_tracked.numpy(),
    )
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two processes that import torch and torchvision: about 10 s on a quiet machine
def test_two_ranks_score_the_split_as_one_process_does(tmp_path):
    from torch.distributed.elastic.utils.distributed import get_free_port

    size = 2
    torch.multiprocessing.spawn(_worker, args=(size, get_free_port(), str(tmp_path)), nprocs=size)
    one = _evaluate()
    assert one.images == IMAGES and one.matrix.sum() > 0
    for rank in range(size):
        got = np.load(tmp_path / f"{rank}.npz")
        np.testing.assert_array_equal(got["matrix"], one.matrix)
        np.testing.assert_array_equal(got["per_image"], np.stack(one.per_image))  # dataset order
        assert int(got["images"]) == IMAGES
        np.testing.assert_array_equal(got["running_mean"], np.ones(3, np.float32))
        assert int(got["batches"]) == 5


def test_gathering_names_a_count_that_does_not_match():
    from bob.tasks.segmentation.metrics import IoUAccumulator

    acc = IoUAccumulator(2)
    acc.update(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    assert acc.gathered([0], 1) is acc  # one process: the accumulator itself
    with pytest.raises(ValueError, match="1 images were added but 2 rows"):
        acc.gathered([0, 1], 2)


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow  # two launched ranks: about 25 s on a quiet machine
def test_two_ranks_run_end_to_end_and_rank_0_writes_one_result(tmp_path):
    args = [f"{k}={v}" for k, v in TASK_ARGS.items()]
    proc = bob_run_on_cpu(tmp_path, TINY, [TASK], args, "--gpus-per-run", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = (tmp_path / "results").rglob("*.json")
    result = json.loads(path.read_text())
    assert result["status"] == "ok", result.get("error")
    assert result["id"] == make_spec(TINY, TASK, "random", task_args=TASK_ARGS).id
    parallel = result["protocol"]["data_parallel"]
    assert (parallel["world_size"], parallel["per_device_batch"], parallel["effective_batch"]) == (2, 1, 2)
    assert parallel["iterations"] == result["protocol"]["iterations"] == 2
    assert {"miou", "aacc", "macc"} <= set(result["metrics"])
    assert all(math.isfinite(v) and 0 <= v <= 1 for v in result["metrics"].values())
    (samples,) = (tmp_path / "results").rglob("*.samples.npz")  # rank 0 alone wrote it
    with np.load(samples) as areas:
        assert areas["intersect"].shape == (48, 6)  # every test image once
