"""The Ray and SLURM (submitit local) executors: same results as local, killed workers retried,
workers that keep dying become failed results, and one sweep on real features."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bob.results import read_result
from bob.sweep.executors.ray import RayExecutor
from tests.sweep_fixtures import fake_suite, fake_sweep, run_fake


@pytest.fixture(scope="module", autouse=True)
def _fake_suite():
    with fake_suite():
        yield


ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a local Ray takes 10+ s to start and its workers import torch
REPO = Path(__file__).resolve().parents[1]


def metrics(results: Path) -> dict[str, tuple]:
    out = {}
    for path in results.rglob("*.json"):
        r = read_result(path)
        out[r.id] = (r.status, r.metrics, r.spec, str(path.relative_to(results)))
    return out


def test_ray_and_local_executors_give_identical_results(ray_session, tmp_path):
    data = fake_sweep(6)
    local = run_fake(data, tmp_path / "local" / "raw")
    remote = run_fake(data, tmp_path / "ray" / "raw", RayExecutor())
    assert local.counts["ok"] == remote.counts["ok"] == 6
    assert metrics(tmp_path / "local" / "raw") == metrics(tmp_path / "ray" / "raw")


def test_a_killed_worker_is_retried_and_its_run_completes(ray_session, tmp_path):
    log = tmp_path / "log.txt"
    data = fake_sweep(3, log=str(log))
    data["grids"][0]["tasks"][0]["args"].update(behaviour="die-once", marker=str(tmp_path / "died"))
    summary = run_fake(data, tmp_path / "raw", RayExecutor(max_retries=2))
    assert summary.counts["ok"] == 3, summary.reports
    assert (tmp_path / "died").exists()
    assert len(log.read_text().splitlines()) == 4, "one run executed twice: the killed try and the retry"
    assert all(r.ok for r in map(read_result, (tmp_path / "raw").rglob("*.json")))


def test_a_worker_that_keeps_dying_becomes_a_failed_result(ray_session, tmp_path):
    data = fake_sweep(1)
    data["grids"][0]["tasks"] = [
        {"task": "sweep-fake/shapes-mini", "grid": {"behaviour": ["ok", "die-always"]}}
    ]
    summary = run_fake(data, tmp_path / "raw", RayExecutor(max_retries=1))
    assert summary.counts["ok"] == 1 and summary.counts["lost"] == 1 and summary.exit_code == 1
    lost = [r for r in map(read_result, (tmp_path / "raw").rglob("*.json")) if not r.ok]
    assert len(lost) == 1 and lost[0].error["type"] == "WorkerLost"
    # The next sweep re-runs nothing by default and re-runs the lost run with --retry-failed.
    assert run_fake(data, tmp_path / "raw").counts["failed_before"] == 1


def test_ray_sweep_on_real_features_matches_local(ray_session, tmp_path):
    data = {
        "name": "tiny",
        "grids": [
            {
                "backbones": ["timm/test_resnet"],
                "weights": ["random"],
                "tasks": [
                    {"tasks": ["knn/shapes-mini", "linear-probe/shapes-mini"], "args": {}},
                    {"task": "knn/digits", "grid": {"k": [5, 10, 20]}},
                ],
            }
        ],
        "defaults": {"task_args": {"linear-probe": {"epochs": 2, "min_steps": 20}}},
    }
    local = run_fake(data, tmp_path / "local" / "raw")
    # chunk=1: the digits group runs as its first run, then two one-run chunks that wait for it
    remote = run_fake(data, tmp_path / "ray" / "raw", RayExecutor(chunk=1))
    assert local.counts["ok"] == remote.counts["ok"] == 5
    # 2 groups (shapes-mini, digits) × 2 splits, each extracted once per sweep
    assert local.extractions == remote.extractions == 4
    a, b = metrics(tmp_path / "local" / "raw"), metrics(tmp_path / "ray" / "raw")
    assert {k: v[:2] for k, v in a.items()} == {k: v[:2] for k, v in b.items()}


def test_submitit_local_executor_runs_a_job_array(tmp_path):
    pytest.importorskip("submitit")
    from bob.sweep.executors.slurm import SlurmExecutor

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    data = fake_sweep(1)
    data["grids"][0]["tasks"] = [{"task": "sweep-fake/shapes-mini", "grid": {"behaviour": ["ok", "raise"]}}]
    executor = SlurmExecutor(
        folder=tmp_path / "slurm", cluster="local", gpus_per_node=0, cpus_per_task=1, time_min=5
    )
    summary = run_fake(data, tmp_path / "raw", executor)
    assert summary.counts["ok"] == 1 and summary.counts["failed"] == 1
    assert len(list((tmp_path / "raw").rglob("*.json"))) == 2
    assert list((tmp_path / "slurm").rglob("*_log.out")), "submitit kept its logs"
