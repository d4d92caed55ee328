"""`bob sweep -x slurm` against a real SLURM cluster (slurmctld + slurmd), through submitit job arrays.

Skipped unless SLURM's commands are installed and a node is up: `sudo bash scripts/slurm_local.sh`
starts a one-node cluster on this machine. Nothing here fakes the cluster: jobs go through sbatch,
squeue and scancel. The tests are `long` (CI leaves them out): each array task starts a Python that
imports torch, about 15 s on two cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bob.results import read_result
from tests.sweep_fixtures import DDP_FT_ARGS, ddp_sweep_file

pytest.importorskip("submitit")
pytestmark = pytest.mark.long

REPO = Path(__file__).resolve().parents[1]
START = "start one on this machine with `sudo bash scripts/slurm_local.sh`"


def _cluster_up() -> str:
    """Why no SLURM cluster can take jobs here, or "" when one can."""
    missing = [c for c in ("sbatch", "sinfo", "squeue", "scancel", "scontrol") if shutil.which(c) is None]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} not found): {START}"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer in 20 s (no slurmctld?): {START}"
    states = set(done.stdout.split())
    if done.returncode != 0 or not states & {"idle", "mixed", "allocated"}:
        return f"no SLURM node takes jobs (sinfo: {done.stdout.strip() or done.stderr.strip()}): {START}"
    return ""


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster() -> None:
    why = _cluster_up()
    if why:
        pytest.skip(why)


def env() -> dict[str, str]:
    """What sbatch passes on to the array tasks (--export=ALL): bob and tests from this checkout."""
    return os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }


SLURM_FLAGS = ["--time", "10", "--gpus", "0", "--cpus", "1"]


def result_files(results: Path) -> dict[str, list]:
    """Every result JSON under `results`, by run id (more than one file for an id is a duplicate)."""
    out: dict[str, list] = {}
    for path in results.rglob("*.json"):
        r = read_result(path)
        out.setdefault(r.id, []).append(r)
    return out


def test_a_sweep_through_slurm_job_arrays_equals_the_local_sweep(tmp_path):
    file = tmp_path / "sweep.yaml"
    file.write_text(
        "name: slurm-cluster\n"
        "grids:\n"
        "  - backbones: [timm/test_resnet]\n"
        "    weights: [random]\n"
        "    seeds: [0, 1]\n"
        "    tasks:\n"
        "      - {task: knn/shapes-mini, grid: {k: [5, 10]}}\n"
    )

    def sweep(results: Path, *flags: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "bob.cli", "sweep", str(file), "--results-dir", str(results), "--quiet"]
        cmd += ["--cache-dir", str(results.parent / "cache"), "--device", "cpu", "--num-workers", "0"]
        return subprocess.run(
            [*cmd, *flags], capture_output=True, text=True, env=env(), cwd=REPO, timeout=600
        )

    start = time.perf_counter()
    slurm = sweep(
        tmp_path / "slurm" / "raw", "-x", "slurm", "--slurm-folder", str(tmp_path / "jobs"), *SLURM_FLAGS
    )
    seconds = time.perf_counter() - start
    assert slurm.returncode == 0, slurm.stdout + slurm.stderr
    assert sweep(tmp_path / "local" / "raw").returncode == 0
    remote, local = result_files(tmp_path / "slurm" / "raw"), result_files(tmp_path / "local" / "raw")
    from bob.api import sweep_plan

    assert set(remote) == set(local) == {s.id for s in sweep_plan(file).specs()}
    assert all(len(rs) == 1 and rs[0].ok for rs in remote.values())
    assert {i: rs[0].metrics for i, rs in remote.items()} == {i: rs[0].metrics for i, rs in local.items()}
    # One job array: one submitit folder per array task, each task's log kept.
    tasks = [p.name for p in (tmp_path / "jobs").iterdir() if re.fullmatch(r"\d+_\d+", p.name)]
    assert len({t.split("_")[0] for t in tasks}) == 1 and len(tasks) == 2  # one task per seed's group
    print(f"slurm sweep: {len(remote)} runs ok in {seconds:.1f}s")


DRIVER = """
import json, sys
from pathlib import Path
from bob.sweep.executors.slurm import SlurmExecutor
from tests.sweep_fixtures import fake_suite, run_fake
data, results, folder, mode = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
executor = SlurmExecutor(folder=folder, cluster="slurm", gpus_per_node=0, cpus_per_task=1, time_min=10)
with fake_suite():
    summary = run_fake(data, results, executor, mode)
print(json.dumps(summary.counts))
sys.exit(summary.exit_code)
"""


def kill_wait() -> int:
    """Seconds SLURM gives a cancelled task between SIGTERM and SIGKILL (submitit ignores SIGTERM)."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"^KillWait\s*=\s*(\d+)", config, re.M)
    return int(found.group(1)) if found else 30


def executions(log: Path) -> list[int]:
    """The seed of every execution the fake suite logged."""
    return (
        [int(line.split()[0]) for line in log.read_text().splitlines() if line.strip()]
        if log.exists()
        else []
    )


def test_a_cancelled_array_task_loses_its_run_and_the_resumed_sweep_runs_it_once(tmp_path):
    """scancel one running array task: its run ends lost (a failed result), every other run ok; the
    resumed sweep (--retry-failed) runs only that one, and a further sweep runs nothing."""
    from tests.sweep_fixtures import fake_suite, fake_sweep

    runs, log = 4, tmp_path / "executions.txt"
    # Each run outlasts KillWait, so the cancelled one is killed before it can finish.
    data = fake_sweep(runs, behaviour="sleep", seconds=float(kill_wait() + 10), log=str(log))
    (tmp_path / "sweep.json").write_text(json.dumps(data))
    results, jobs = tmp_path / "raw", tmp_path / "jobs"

    def driver(mode: str) -> subprocess.Popen:
        cmd = [sys.executable, "-c", DRIVER, str(tmp_path / "sweep.json"), str(results), str(jobs), mode]
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=REPO
        )

    def counts(process: subprocess.Popen) -> dict[str, int]:
        out, err = process.communicate(timeout=600)
        assert out.strip(), err
        return json.loads(out.strip().splitlines()[-1])

    start = time.perf_counter()
    first = driver("missing")
    try:
        cancelled = ""
        deadline = time.monotonic() + 300
        while not cancelled and time.monotonic() < deadline and first.poll() is None:
            if executions(log):  # a run is under way: cancel a running task of the array
                array = {p.name.split("_")[0] for p in jobs.iterdir() if re.fullmatch(r"\d+_\d+", p.name)}
                running = subprocess.run(
                    ["squeue", "-h", "-r", "-t", "R", "-o", "%i", "-j", ",".join(array)],
                    capture_output=True, text=True,
                ).stdout.split()  # fmt: skip
                if running:
                    cancelled = running[0]
                    subprocess.run(["scancel", cancelled], check=True)
            time.sleep(0.5)
        assert cancelled, "no array task was seen running"
        first_counts = counts(first)
    finally:
        if first.poll() is None:
            first.kill()
    with fake_suite():
        from bob.sweep.driver import plan_sweep
        from bob.sweep.spec import parse_sweep

        planned = {s.id for s in plan_sweep(parse_sweep(data)).specs()}
    assert first.returncode == 1 and first_counts.get("lost") == 1 and first_counts.get("ok") == runs - 1, (
        cancelled,
        first_counts,
        executions(log),
    )
    lost = [r for rs in result_files(results).values() for r in rs if not r.ok]
    assert len(lost) == 1 and lost[0].error["type"] == "WorkerLost" and cancelled in lost[0].error["message"]

    resumed = driver("failed")
    resumed_counts = counts(resumed)
    assert (
        resumed.returncode == 0
        and resumed_counts.get("ok") == 1
        and resumed_counts["done_before"] == runs - 1
    )
    again = driver("missing")
    again_counts = counts(again)
    assert again.returncode == 0 and again_counts["done_before"] == runs and not again_counts.get("ok")
    seconds = time.perf_counter() - start

    stored = result_files(results)
    assert set(stored) == planned and all(len(rs) == 1 and rs[0].ok for rs in stored.values())
    seeds = executions(log)
    # Every run executed once, the cancelled one twice (killed, then resumed): none ran after its ok.
    assert sorted(set(seeds)) == list(range(runs)) and len(seeds) == runs + 1
    print(
        f"scancel mid-array: planned {len(planned)} · ok {first_counts.get('ok')} · lost "
        f"{first_counts.get('lost')} · resumed ok {resumed_counts.get('ok')} · duplicated 0 · "
        f"executions {len(seeds)} · {seconds:.1f}s"
    )


def test_a_data_parallel_run_is_one_slurm_job_of_two_tasks(tmp_path):
    """`--ranks-per-run 2`: the fine-tuning run goes in its own array, of jobs with two tasks
    (`tasks_per_node`, srun), each task one rank joined from SLURM's environment; the knn run goes in
    the one-task array. Both results are ok; the fine-tuning one was trained by two ranks."""
    file = ddp_sweep_file(tmp_path / "sweep.yaml", "slurm-ranks")
    results, jobs = tmp_path / "raw", tmp_path / "jobs"
    cmd = [sys.executable, "-m", "bob.cli", "sweep", str(file), "--results-dir", str(results), "--quiet"]
    cmd += ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--num-workers", "0"]
    cmd += ["-x", "slurm", "--slurm-folder", str(jobs), "--ranks-per-run", "2", *SLURM_FLAGS]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=REPO, timeout=600)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    by_task = {rs[0].task["name"]: rs for rs in result_files(results).values()}
    (ft,), (knn,) = by_task["finetune/shapes-mini"], by_task["knn/shapes-mini"]
    assert ft.ok and knn.ok
    assert ft.protocol["data_parallel"]["world_size"] == 2 and "data_parallel" not in knn.protocol
    # Two arrays of one task each; the fine-tuning job's two tasks each logged (submitit: _0, _1).
    logs = sorted(p.name for p in jobs.rglob("*_log.out"))
    assert len({name.split("_")[0] for name in logs}) == 2 and len(logs) == 3, logs
    print(f"slurm data-parallel sweep: 2 runs ok (one on a 2-task job) in {seconds:.1f}s")


def test_srun_of_two_tasks_runs_bob_run_as_two_ranks(tmp_path):
    """`srun -n 2 bob run ... --gpus-per-run 2`: SLURM starts the ranks, each joins from SLURM's
    environment (SLURM_PROCID, SLURM_NTASKS, the job's first node), and rank 0 alone writes."""
    args = [f"-a{k}={v}" for k, v in DDP_FT_ARGS.items()]
    cmd = ["srun", "-n", "2", "--cpus-per-task", "1", "--time", "10", sys.executable, "-m", "bob.cli", "run"]
    cmd += ["-b", "timm/test_vit", "-w", "random", "-t", "finetune/shapes-mini", *args, "--device", "cpu"]
    cmd += ["--results-dir", str(tmp_path / "raw"), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    cmd += ["--gpus-per-run", "2"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=REPO, timeout=600)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    (results,) = result_files(tmp_path / "raw").values()
    assert len(results) == 1 and results[0].ok
    assert results[0].protocol["data_parallel"]["world_size"] == 2
    print(f"srun -n 2 bob run: ok in {seconds:.1f}s")
