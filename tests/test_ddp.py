"""Data-parallel fine-tuning (`bob run --gpus-per-run N`, bob/distributed.py): the split of every
optimizer step over the ranks, the exact gather of evaluation outputs, bad input, and end to end on
the CPU with gloo: N ranks give one rank's result, and a rank that dies fails the run, named."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bob import distributed
from bob.spec import make_spec
from bob.tasks.common.finetune import WindowSampler
from tests.cli_harness import bob_run_on_cpu, invoke

TINY_VIT = "timm/test_vit"  # LayerNorm only: no per-rank BatchNorm statistics
# 180 training images at 8 a batch: 22 batches, 11 windows of 2 (no partial window to drop).
TASK = "finetune/shapes-mini"
TASK_ARGS = {"epochs": "1", "warmup_epochs": "0", "batch_size": "8", "accum_steps": "2"}


# ------------------------------------------------------------------------------- the split of steps


def _steps_of_one_process(n: int, batch: int, accum: int, seed: int, epoch: int) -> list[set[int]]:
    """The samples of each optimizer step when one rank takes the whole of every step."""
    one = WindowSampler(range(n), batch, accum, True, seed, num_replicas=1, rank=0)
    one.set_epoch(epoch)
    order = list(one)
    size = batch * accum
    return [set(order[i : i + size]) for i in range(0, len(order), size)]


@pytest.mark.parametrize(("world", "accum", "split_accum"), [(2, 2, True), (2, 4, True), (2, 1, False)])
def test_each_step_sees_the_samples_one_process_would(world, accum, split_accum):
    n, batch, seed, epoch = 100, 8, 3, 2
    ranks = []
    for rank in range(world):
        sampler = WindowSampler(range(n), batch, accum, split_accum, seed, num_replicas=world, rank=rank)
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler)
        per_rank = (batch if split_accum else batch // world) * (accum // world if split_accum else accum)
        ranks.append([order[i : i + per_rank] for i in range(0, len(order), per_rank)])
    expected = _steps_of_one_process(n, batch, accum, seed, epoch)
    # 12 batches of 8 per epoch: the ranks share every full window of `accum` batches.
    shared = [set().union(*(r[step] for r in ranks)) for step in range(len(ranks[0]))]
    assert shared == expected[: len(shared)]
    assert len(shared) == (n // batch) // accum
    assert all(not (set(ranks[0][s]) & set(ranks[1][s])) for s in range(len(shared)))


def test_the_order_changes_with_the_epoch_and_is_the_same_on_every_call():
    sampler = WindowSampler(range(40), 4, 2, True, 0, num_replicas=2, rank=0)
    sampler.set_epoch(1)
    first = list(sampler)
    assert first == list(sampler)
    sampler.set_epoch(2)
    assert first != list(sampler)


def test_evaluation_shards_cover_every_row_once():
    for total, size in ((10, 3), (2, 4), (7, 1)):
        rows = [r for rank in range(size) for r in distributed.shard_positions(total, rank, size)]
        assert sorted(rows) == list(range(total))


def _gather_worker(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=size)
    total = 7
    rows = distributed.shard_positions(total, rank, size)
    local = np.array([[float(r), float(r) * 10] for r in rows]).reshape(-1, 2)
    gathered = distributed.gather_rows(local, rows, total)
    mean = distributed.all_mean(float(rank))
    np.save(Path(out) / f"{rank}.npy", np.concatenate([gathered.ravel(), [mean]]))
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two processes that import torch: about 10 s on a quiet machine, 35 s loaded
def test_gather_puts_every_rank_s_rows_back_in_dataset_order(tmp_path):
    from torch.distributed.elastic.utils.distributed import get_free_port

    size = 2
    torch.multiprocessing.spawn(_gather_worker, args=(size, get_free_port(), str(tmp_path)), nprocs=size)
    expected = np.concatenate([np.array([[r, r * 10] for r in range(7)], dtype=float).ravel(), [0.5]])
    for rank in range(size):
        np.testing.assert_array_equal(np.load(tmp_path / f"{rank}.npy"), expected)


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-t", TASK, "--gpus-per-run", "0"], "--gpus-per-run"),
        (
            ["-t", "iqa/skimage-distortions", "--gpus-per-run", "2"],
            "iqa/skimage-distortions does not train on a data-parallel loop, and does not read the "
            "frozen-feature cache",
        ),
        (["-t", "rvos/*", "--gpus-per-run", "2"], "rvos/rvos-sprites does not train"),
        (
            ["-t", f"{TASK},zero-shot/shapes-sketch", "--gpus-per-run", "2"],
            "zero-shot/shapes-sketch does not",
        ),
        (["-t", "ood/shapes-mini-domains", "-a", "mode=checkpoint", "--gpus-per-run", "2"], "scores a saved"),
        (["-t", "segmentation/not-a-set", "--gpus-per-run", "2"], "not-a-set"),
        (["-t", TASK, "--gpus-per-run", "2", "--device", "cuda:1"], "--device cuda"),
        (["-t", "video-cls/moving-sprites-mini", "--gpus-per-run", "2"], "with mode=linear fits heads"),
        (["-t", TASK, "-a", "finetune:search=lr", "--gpus-per-run", "2"], "once per rank"),
    ],
)
def test_bad_data_parallel_input_is_one_message_and_exit_2(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the --device cuda:1 case
    code, out = invoke(["run", "-b", TINY_VIT, "-w", "random", *args, "--results-dir", "r"], capsys)
    assert code == 2, out
    assert needle in " ".join(out.split()), out
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------ end to end


def _bob(tmp: Path, *argv: str, env: dict[str, str] | None = None, launcher: list[str] | None = None):
    args = [f"{k}={v}" for k, v in TASK_ARGS.items()]
    return bob_run_on_cpu(tmp, TINY_VIT, [TASK], args, *argv, env=env, launcher=launcher)


def _result(tmp: Path) -> dict:
    (path,) = (tmp / "results").rglob("*.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_two_ranks_give_the_one_rank_result_with_the_same_effective_batch(tmp_path):
    """Two gloo ranks at one batch of 8 each vs one rank accumulating two batches of 8: the same
    samples, augmentations and mixup draws in every step. What can differ is float summation
    order (DDP averages the two gradients after the backward, one rank sums halves); with two
    ranks that average is exact, so the losses agree to 1e-6 (relative) and the metrics to one
    test sample; more ranks would need the tolerance. LayerNorm only, so no per-rank BatchNorm
    statistics."""
    two, one = tmp_path / "two", tmp_path / "one"
    proc = _bob(two, "--gpus-per-run", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m"]
    proc = _bob(one, env={distributed.ENV_MARKER: "1"}, launcher=launcher)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = _result(two), _result(one)
    assert a["id"] == b["id"] == make_spec(TINY_VIT, TASK, "random", task_args=TASK_ARGS).id
    pa, pb = a["protocol"]["data_parallel"], b["protocol"]["data_parallel"]
    assert (pa["world_size"], pa["per_device_batch"], pa["per_device_accum_steps"]) == (2, 8, 1)
    assert (pb["world_size"], pb["per_device_batch"], pb["per_device_accum_steps"]) == (1, 8, 2)
    assert pa["effective_batch"] == pb["effective_batch"] == a["protocol"]["effective_batch"] == 16
    assert a["protocol"]["steps_per_epoch"] == b["protocol"]["steps_per_epoch"] == 180 // 16
    for ha, hb in zip(a["protocol"]["history"], b["protocol"]["history"], strict=True):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-6)
    one_sample = 1 / a["protocol"]["num_test"]
    for name, value in b["metrics"].items():
        assert abs(a["metrics"][name] - value) <= one_sample + 1e-12, name
    for suffix in ("*.samples.npz", "*.checkpoint.pt"):  # rank 0 alone wrote them
        assert len(list((two / "results").rglob(suffix))) == 1, suffix


@pytest.mark.slow
def test_a_rank_that_dies_fails_the_run_and_is_named(tmp_path):
    proc = _bob(tmp_path, "--gpus-per-run", "2", env={distributed.FAULT_ENV: "1"})
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, out
    assert f"rank 1 of 2 exited with code {distributed.FAULT_EXIT_CODE} first" in out
    results = list((tmp_path / "results").rglob("*.json"))
    assert all(json.loads(p.read_text())["status"] != "ok" for p in results)


@pytest.mark.slow  # two "nodes", one rank each, on this machine: about 20 s on a quiet machine
def test_two_nodes_meet_at_the_rendezvous_and_rank_0_writes(tmp_path):
    """`--nodes 2 --gpus-per-run 1 --rdzv-endpoint HOST:PORT`, the same command on each node (here
    two processes of this machine sharing the results dir, as nodes share a filesystem): the two
    launchers meet at the endpoint, the run trains on both, and one result is written."""
    from concurrent.futures import ThreadPoolExecutor

    from torch.distributed.elastic.utils.distributed import get_free_port

    endpoint = f"127.0.0.1:{get_free_port()}"
    flags = ("--nodes", "2", "--gpus-per-run", "1", "--rdzv-endpoint", endpoint)
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda _: _bob(tmp_path, *flags), range(2)))
    for proc in procs:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    result = _result(tmp_path)
    assert result["status"] == "ok"
    assert result["id"] == make_spec(TINY_VIT, TASK, "random", task_args=TASK_ARGS).id
    assert result["protocol"]["data_parallel"]["world_size"] == 2


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ([], "--nodes 2 needs --rdzv-endpoint HOST:PORT"),
        (
            ["--rdzv-endpoint", "node01"],
            "--rdzv-endpoint must read HOST:PORT (e.g. node01:29400), got 'node01'",
        ),
        (["--rdzv-endpoint", "node01:http"], "got 'node01:http'"),
        (["--rdzv-endpoint", ":29400"], "got ':29400'"),
        (["--rdzv-endpoint", "node01:70000"], "got 'node01:70000'"),
    ],
)
def test_nodes_without_a_usable_rendezvous_is_exit_2(flags, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLURM_STEP_NUM_TASKS", raising=False)
    args = ["run", "-b", TINY_VIT, "-w", "random", "-t", TASK, "--nodes", "2", *flags, "--results-dir", "r"]
    code, out = invoke(args, capsys)
    assert code == 2 and needle in " ".join(out.split()), out
    assert not (tmp_path / "r").exists()
