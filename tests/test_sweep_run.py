"""Executing sweeps locally: resume, --retry-failed, --overwrite, faults as failed results, locks,
a driver killed with -9, and two sweeps on one results directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bob.results import ResultStore, read_result
from bob.sweep.locks import RunLock
from tests.sweep_fixtures import fake_suite, fake_sweep, run_fake


@pytest.fixture(scope="module", autouse=True)
def _fake_suite():
    with fake_suite():
        yield


REPO = Path(__file__).resolve().parents[1]


def results_by_seed(results: Path) -> dict[int, object]:
    out = {}
    for path in results.rglob("*.json"):
        r = read_result(path)
        out[r.spec["seed"]] = r
    return out


def test_sweep_runs_then_resumes_then_overwrites(tmp_path):
    results, log = tmp_path / "raw", tmp_path / "log.txt"
    data = fake_sweep(5, log=str(log))
    first = run_fake(data, results)
    assert first.counts["ok"] == 5 and first.exit_code == 0
    assert len(log.read_text().splitlines()) == 5
    again = run_fake(data, results)
    assert again.counts["done_before"] == 5 and "ok" not in again.counts
    assert len(log.read_text().splitlines()) == 5, "finished runs are skipped"
    forced = run_fake(data, results, mode="all")
    assert forced.counts["ok"] == 5 and len(log.read_text().splitlines()) == 10
    assert sorted(results_by_seed(results)) == [0, 1, 2, 3, 4]


def test_faults_become_failed_results_and_the_sweep_goes_on(tmp_path):
    results = tmp_path / "raw"
    data = fake_sweep(1, behaviour="ok")
    grid = data["grids"][0]
    grid["tasks"] = [
        {"task": "sweep-fake/shapes-mini", "grid": {"behaviour": ["ok", "raise", "nan", "oom", "oom-always"]}}
    ]
    summary = run_fake(data, results)
    assert summary.counts["ok"] == 2 and summary.counts["failed"] == 3 and summary.exit_code == 1
    by_behaviour = {
        read_result(p).spec["task_args"]["behaviour"]: read_result(p) for p in results.rglob("*.json")
    }
    assert by_behaviour["raise"].error["type"] == "ValueError"
    assert by_behaviour["nan"].error["type"] == "TrainingDivergedError"
    assert "inf" in by_behaviour["nan"].error["message"] or "nan" in by_behaviour["nan"].error["message"]
    oom = by_behaviour["oom"]  # first try at batch 64 ran out of memory; the retry at 32 fits
    assert oom.ok and oom.protocol["oom_retry"]["batch_size"] == 32
    assert oom.protocol["extraction_batch_size"] == 32 and oom.protocol["batch_size"] == 16
    assert "out of memory" in oom.protocol["oom_retry"]["first_error"]
    never = by_behaviour["oom-always"]
    assert not never.ok and never.error["out_of_memory"] and never.protocol["oom_retry"]["batch_size"] == 32


def test_retry_failed_reruns_only_the_failed_runs(tmp_path):
    results, log = tmp_path / "raw", tmp_path / "log.txt"
    marker = tmp_path / "fixed"
    ok = fake_sweep(3, log=str(log))
    run_fake(ok, results)
    bad = fake_sweep(2, behaviour="raise")
    bad["grids"][0]["seeds"] = [10, 11]
    run_fake(bad, results)
    assert len(log.read_text().splitlines()) == 3
    # The same two failed specs, now retried: only they run (their identity has not changed).
    summary = run_fake(bad, results, mode="failed")
    assert summary.counts["failed"] == 2 and "done_before" in summary.counts
    both = {"name": "both", "grids": ok["grids"] + bad["grids"]}
    summary = run_fake(both, results, mode="failed")
    assert summary.counts.get("failed") == 2 and summary.counts["done_before"] == 3
    assert len(log.read_text().splitlines()) == 3, "ok runs were not re-run"
    assert not marker.exists()


def test_lock_blocks_a_live_owner_and_breaks_a_dead_ones(tmp_path):
    path = tmp_path / "run.json"
    held = RunLock(path)
    assert held.acquire()
    assert not RunLock(path).acquire(), "a live owner keeps its lock"
    held.release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    Path(str(path) + ".lock").write_text(
        json.dumps({"host": os.uname().nodename, "pid": dead.pid, "since": 0})
    )
    lock = RunLock(path)
    if lock.owner()["host"] != __import__("bob.sweep.locks").sweep.locks.HOST:
        pytest.skip("hostname differs between os.uname and socket")
    assert lock.acquire(), "a lock whose owner died is stale"
    lock.release()
    assert not Path(str(path) + ".lock").exists()


def test_a_run_lock_from_another_host_lasts_while_its_heartbeat_does(tmp_path):
    """A node that died (another host: its pid cannot be checked) stops touching its run lock; after
    a few missed heartbeats the lock is abandoned and a retry elsewhere may take the run."""
    from bob.locks import STALE_BEATS
    from bob.sweep.locks import RUN_HEARTBEAT_S

    path = tmp_path / "run.json"
    held = RunLock(path)
    assert held.acquire() and held.owner()["heartbeat"] == RUN_HEARTBEAT_S
    held.release()
    lock_file = Path(str(path) + ".lock")
    owner = {"host": "node-that-died", "pid": 1, "since": 0, "heartbeat": RUN_HEARTBEAT_S}
    lock_file.write_text(json.dumps(owner))
    assert not RunLock(path).acquire(), "a fresh lock from another host is respected"
    old = time.time() - (STALE_BEATS + 1) * RUN_HEARTBEAT_S
    os.utime(lock_file, (old, old))
    lock = RunLock(path)
    assert lock.acquire(), "a lock whose heartbeat stopped is abandoned"
    lock.release()


def test_busy_runs_are_left_to_their_owner(tmp_path):
    results = tmp_path / "raw"
    data = fake_sweep(2)
    from bob.sweep.driver import plan_sweep
    from bob.sweep.spec import parse_sweep

    spec = plan_sweep(parse_sweep(data)).specs()[0]
    lock = RunLock(ResultStore(results).path_for(spec))
    assert lock.acquire()
    summary = run_fake(data, results)
    lock.release()
    assert summary.counts["busy"] == 1 and summary.counts["ok"] == 1 and summary.exit_code == 1
    assert run_fake(data, results).counts["ok"] == 1


def _driver(data: dict, results: Path, tmp_path: Path, name: str) -> subprocess.Popen:
    spec_file = tmp_path / f"{name}.json"
    spec_file.write_text(json.dumps(data))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sweep_fixtures", str(spec_file), str(results)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _all_valid(results: Path) -> list:
    files = list(results.rglob("*.json"))
    return [read_result(p) for p in files]  # raises on a torn file


@pytest.mark.slow
def test_driver_killed_with_sigkill_resumes_without_torn_or_duplicate_results(tmp_path):
    results, log = tmp_path / "raw", tmp_path / "log.txt"
    data = fake_sweep(8, behaviour="sleep", seconds=0.4, log=str(log))
    proc = _driver(data, results, tmp_path, "crash")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(results.rglob("*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(_all_valid(results))
    assert 2 <= done_before < 8, "killed mid-sweep"
    summary = run_fake(data, results)  # breaks the dead driver's stale lock, runs the rest
    assert summary.counts["done_before"] == done_before and summary.counts["ok"] == 8 - done_before
    finished = _all_valid(results)
    assert len(finished) == 8 and len({r.id for r in finished}) == 8
    assert not list(results.rglob("*.lock")) and not list(results.rglob("*.tmp*"))
    executions = [line.split()[0] for line in log.read_text().splitlines()]
    assert len(executions) <= 9, "at most the run in flight at the kill ran twice"


@pytest.mark.slow
def test_two_sweeps_on_one_results_dir_never_run_a_spec_twice(tmp_path):
    results, log = tmp_path / "raw", tmp_path / "log.txt"
    data = fake_sweep(10, behaviour="sleep", seconds=0.3, log=str(log))
    procs = [_driver(data, results, tmp_path, f"d{i}") for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    finished = _all_valid(results)
    assert len(finished) == 10 and all(r.ok for r in finished)
    seeds = [line.split()[0] for line in log.read_text().splitlines()]
    assert sorted(seeds) == sorted(set(seeds)), "a spec ran in both sweeps"
    busy_skips = run_fake(data, results)
    assert busy_skips.counts["done_before"] == 10


_COUNTING_DRIVER = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from tests.sweep_fixtures import register, run_fake\n"
    "register()\n"
    "print(json.dumps(run_fake(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])).counts))\n"
)


@pytest.mark.slow
def test_two_sweeps_count_only_the_runs_they_executed(tmp_path):
    """Before: 24 + 25 = 49 `ok` for 40 runs, a result the other sweep wrote counted as one's own.
    Now every run is `ok` in exactly one summary; the other sees it as busy or finished elsewhere."""
    results, log = tmp_path / "raw", tmp_path / "log.txt"
    data = fake_sweep(10, behaviour="sleep", seconds=0.3, log=str(log))
    (tmp_path / "s.json").write_text(json.dumps(data))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", _COUNTING_DRIVER, str(tmp_path / "s.json"), str(results)]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    counts = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert sum(c.get("ok", 0) for c in counts) == 10, counts
    for c in counts:
        assert c.get("ok", 0) + c.get("busy", 0) + c.get("elsewhere", 0) == 10, counts
    assert len(log.read_text().splitlines()) == 10, "every run ran once"
    for result in _all_valid(results):
        assert result.sweep is not None  # the token of the sweep that executed it


@pytest.mark.slow
def test_cli_sweep_runs_resumes_and_reports(tmp_path):
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(
        "name: tiny\ngrids:\n  - backbones: [timm/test_resnet]\n    weights: [random]\n"
        "    tasks: [knn/shapes-mini, {task: knn/shapes-mini, args: {k: 5}}]\n"
    )
    cmd = [sys.executable, "-m", "bob.cli", "sweep", str(sweep), "--results-dir", str(tmp_path / "raw")]
    cmd += ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    # one extraction (backbone × dataset) for both runs: its train and test split feature sets
    assert "2 ok" in first.stderr and "1 unique feature extractions" in first.stderr
    assert "2 split feature sets" in first.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and "2 done earlier" in again.stderr, again.stderr
    both = subprocess.run([*cmd, "--overwrite", "--retry-failed"], capture_output=True, text=True, env=env)
    assert both.returncode == 2 and "exclude each other" in both.stderr
