"""efficiency/<size>: the foreign load during each timed phase, its warning and its protocol record."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bob.tasks.efficiency.run as efficiency_run
from bob.runner import RunOptions, execute
from bob.spec import make_spec
from bob.tasks.efficiency.load import BUSY_CORES, ForeignLoad, load_record, machine_busy_seconds, warn_if_busy

TINY = {"warmup": "1", "iters": "2", "max_batch": "2", "throughput_iters": "1", "train_batch": "2"}
HAS_PROC = Path("/proc/stat").exists()


def _stat(path: Path, user: int, system: int, idle: int) -> None:
    path.write_text(f"cpu  {user} 0 {system} {idle} 7 0 0 0 0 0\ncpu0 {user} 0 {system} {idle} 7 0 0 0 0 0\n")


def test_foreign_load_is_machine_busy_time_minus_our_own_per_wall_second(tmp_path):
    stat, tick = tmp_path / "stat", os.sysconf("SC_CLK_TCK")
    _stat(stat, user=100, system=50, idle=1000)
    clock, own = iter([100.0, 102.0]), iter([10.0, 10.5])
    with ForeignLoad(stat, clock=clock.__next__, own=own.__next__) as load:
        # 3 s of busy CPU on the machine (user + system) while we used 0.5 s over 2 wall seconds.
        _stat(stat, user=100 + 2 * tick, system=50 + tick, idle=1100)
    assert load.wall_s == 2.0
    assert load.cores == pytest.approx((3.0 - 0.5) / 2.0)


def test_no_proc_stat_means_unknown_never_a_guess(tmp_path):
    with ForeignLoad(tmp_path / "missing") as load:
        pass
    assert load.cores is None and machine_busy_seconds(tmp_path / "missing") is None
    record = load_record({"latency": None, "throughput": None})
    assert record["busy"] is None and record["busy_phases"] == []
    assert warn_if_busy("m", record) is None


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc/stat")
def test_a_process_spinning_beside_us_is_seen():
    """A child spinning on one core while we sleep: about one foreign core (more if others run)."""
    spin = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass\n"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.2)  # let it start
        with ForeignLoad() as load:
            time.sleep(0.8)
    finally:
        child.wait()  # joined only after the measurement, so its time is not counted as ours
    assert load.cores is not None and load.cores > 0.5


def test_the_record_flags_phases_above_the_threshold_and_the_warning_names_them(caplog):
    record = load_record({"latency": 0.02, "throughput": 1.2345, "train_step": None})
    assert record["cores"] == {"latency": 0.02, "throughput": 1.234, "train_step": None}
    assert record["busy"] is True and record["busy_phases"] == ["throughput"]
    assert record["busy_threshold_cores"] == BUSY_CORES
    with caplog.at_level(logging.WARNING, logger="bob"):
        message = warn_if_busy("timm/resnet18", record)
    assert message in caplog.text
    assert "1.23 cores busy" in message and "throughput" in message and "latency" not in message
    quiet = load_record({"latency": 0.01, "throughput": 0.1})
    assert quiet["busy"] is False and warn_if_busy("m", quiet) is None


def _run(tmp_path: Path):
    spec = make_spec("timm/test_resnet", "efficiency/64", "random", 0, None, TINY)
    return execute(
        spec, RunOptions(tmp_path / "results", tmp_path / "cache", device="cpu", num_workers=0)
    ).result


def test_a_run_records_the_load_of_every_timed_phase(tmp_path):
    result = _run(tmp_path)
    assert result.ok, result.error
    record = result.protocol["foreign_load"]
    assert set(record["cores"]) == {"latency", "throughput", "train_step"}
    if HAS_PROC:
        assert all(isinstance(c, float) and c >= 0 for c in record["cores"].values())
        assert record["busy"] == any(c > BUSY_CORES for c in record["cores"].values())


def test_a_run_on_a_busy_machine_warns_and_says_so_in_its_result(tmp_path, monkeypatch, caplog):
    class Busy(ForeignLoad):
        def __exit__(self, *exc: object) -> None:
            super().__exit__(*exc)
            self.cores = 1.5

    monkeypatch.setattr(efficiency_run, "ForeignLoad", Busy)
    with caplog.at_level(logging.WARNING, logger="bob"):
        result = _run(tmp_path)
    assert result.ok, result.error
    record = result.protocol["foreign_load"]
    assert record["busy"] is True and record["busy_phases"] == ["latency", "throughput", "train_step"]
    assert "1.50 cores busy" in record["warning"] and record["warning"] in caplog.text
    # The metrics themselves are what was measured: the flag sits beside them, not in them.
    assert result.metrics["latency_ms"] > 0
