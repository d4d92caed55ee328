"""Data-parallel runs inside `bob sweep --ranks-per-run N` (bob/sweep/worker.py): which runs get N
ranks, the local executor's launch (rank 0 writes, the run id is the one-process id), a rank that
dies (a failed result naming it, then `--retry-failed` runs it once), and how a rank joins a process
group from SLURM's environment (bob/distributed.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bob import distributed
from bob.errors import UsageError
from bob.results import read_result
from bob.runner import RunOptions
from bob.spec import make_spec
from bob.sweep.worker import groups_ranks, ranks_for, spec_to_dict
from tests.sweep_fixtures import DDP_FT_ARGS, ddp_sweep_file

ROOT = Path(__file__).resolve().parents[1]
FT_ARGS = DDP_FT_ARGS


@pytest.mark.parametrize(
    ("task", "args", "ranks"),
    [
        ("finetune/shapes-mini", FT_ARGS, 2),
        ("finetune/shapes-mini", {**FT_ARGS, "search": "lr"}, 1),  # a Ray Tune search: once
        ("knn/shapes-mini", {}, 1),  # no training
        ("few-label/shapes", {"mode": "linear"}, 1),
        ("ood/shapes-mini-domains", {}, 1),  # mode=linear by default
        ("ood/shapes-mini-domains", {"mode": "finetune"}, 2),
    ],
)
def test_only_runs_that_train_data_parallel_get_ranks(task, args, ranks):
    spec = make_spec("timm/test_vit", task, "random", task_args=args)
    assert ranks_for(spec, RunOptions(ranks_per_run=2)) == ranks
    assert ranks_for(spec, RunOptions()) == 1
    assert groups_ranks([spec_to_dict(spec)], RunOptions(ranks_per_run=2)) == ranks
    assert groups_ranks([spec_to_dict(spec)] * 2, RunOptions(ranks_per_run=2)) == 1  # a shared extraction


def test_a_slurm_task_takes_its_rank_from_slurm_s_environment(monkeypatch):
    joined = {}
    monkeypatch.setattr(distributed, "init_process_group", lambda device: joined.setdefault("device", device))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", distributed.ENV_MARKER):
        monkeypatch.setenv(key, "")  # recorded, so what join() sets is undone after the test
        monkeypatch.delenv(key)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu07,gpu08")
    monkeypatch.setenv("PATH", "")  # no scontrol: a plain node list names its first host itself
    assert distributed.join_slurm_tasks("cuda") == distributed.World(3, 4, 1)
    assert joined == {"device": "cuda"}
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("gpu07", str(20000 + 4242 % 20000))
    assert distributed.in_worker()


def test_a_node_range_without_scontrol_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(distributed, "init_process_group", lambda device: pytest.fail("must not join"))
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # recorded, then unset: what the test changes is undone
        monkeypatch.delenv(key)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(
        UsageError, match=r"SLURM_JOB_NODELIST=gpu\[07-08\] without `scontrol show hostnames`"
    ):
        distributed.join_slurm_tasks("cpu")


def test_outside_a_slurm_step_joining_is_one_clear_error(monkeypatch):
    for key in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(UsageError, match="not inside a SLURM job step"):
        distributed.join_slurm_tasks("cpu")


def test_bob_run_in_an_srun_step_of_the_wrong_size_is_exit_2(tmp_path, capsys, monkeypatch):
    from tests.cli_harness import invoke

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    args = ["run", "-b", "timm/test_vit", "-w", "random", "-t", "finetune/shapes-mini", "--gpus-per-run", "2"]
    code, out = invoke([*args, "--results-dir", "r"], capsys)
    assert code == 2 and "srun -N 1 --ntasks-per-node 2" in " ".join(out.split()), out
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------ end to end


def _sweep(tmp: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bob.cli", "sweep", str(ddp_sweep_file(tmp / "sweep.yaml", "ddp-sweep"))]
    cmd += ["--results-dir", str(tmp / "raw"), "--cache-dir", str(tmp / "cache"), "--device", "cpu"]
    cmd += ["--ranks-per-run", "2", "--quiet", *flags]
    full_env = {**os.environ, distributed.TIMEOUT_ENV: "30", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=full_env)


def _results(tmp: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for path in (tmp / "raw").rglob("*.json"):
        result = read_result(path)
        out.setdefault(result.task["name"], []).append(result)
    return out


@pytest.mark.slow  # three sweeps, two of them launching two ranks: about 60 s on a quiet machine
def test_a_rank_that_dies_fails_its_run_and_the_retry_runs_it_data_parallel(tmp_path):
    proc = _sweep(tmp_path, env={distributed.FAULT_ENV: "1"})
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, out
    results = _results(tmp_path)
    (ft,), (knn,) = results["finetune/shapes-mini"], results["knn/shapes-mini"]
    assert knn.ok  # the one-process run is untouched by the data-parallel one's failure
    assert ft.status == "failed" and ft.error["type"] == "RankFailed"
    assert f"rank 1 of 2 exited with code {distributed.FAULT_EXIT_CODE}" in ft.error["message"]
    assert ft.id == make_spec("timm/test_vit", "finetune/shapes-mini", "random", task_args=FT_ARGS).id

    proc = _sweep(tmp_path, "--retry-failed")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = _results(tmp_path)
    (ft,) = results["finetune/shapes-mini"]
    assert ft.ok and ft.protocol["data_parallel"]["world_size"] == 2
    assert ft.protocol["data_parallel"]["effective_batch"] == 16
    assert len(list((tmp_path / "raw").rglob("*.checkpoint.pt"))) == 1  # rank 0 alone wrote it
    assert not list((tmp_path / "raw").rglob("*.lock"))  # the dead rank's stale lock was broken

    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "raw").rglob("*.json")}
    proc = _sweep(tmp_path)  # resumed: nothing left to run, nothing rewritten
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "raw").rglob("*.json")} == written


def test_a_local_sweep_with_more_ranks_than_devices_is_exit_2(tmp_path, capsys, monkeypatch):
    import torch

    from tests.cli_harness import invoke

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    file = ddp_sweep_file(tmp_path / "sweep.yaml", "ddp-sweep")
    argv = [
        "sweep",
        str(file),
        "--device",
        "cuda",
        "--ranks-per-run",
        "2",
        "--results-dir",
        str(tmp_path / "r"),
    ]
    code, out = invoke(argv, capsys)
    assert code == 2 and "--ranks-per-run 2 needs 2 CUDA devices; this machine has 1" in " ".join(out.split())
    assert not list((tmp_path / "r").rglob("*.json"))


def test_the_api_refuses_a_rank_count_below_one(tmp_path):
    from bob import api

    file = ddp_sweep_file(tmp_path / "sweep.yaml", "ddp-sweep")
    with pytest.raises(UsageError, match="--ranks-per-run must be a positive integer, got 0"):
        api.sweep(file, results_dir=tmp_path / "r", ranks_per_run=0)
    assert not (tmp_path / "r").exists()
