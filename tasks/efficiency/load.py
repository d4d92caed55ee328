"""How busy other processes kept the machine while a phase was timed.

A timing on a shared machine measures the model and whatever else runs: on a 2-core machine with one
other job flat out, identical architectures time 2× apart. So each timed phase runs inside
`ForeignLoad`, which reads the machine-wide busy CPU time from /proc/stat and subtracts this process's
own CPU time (its threads and joined children): what is left, divided by the wall time, is the average
number of cores other processes kept busy. A phase above `BUSY_CORES` is flagged: the run logs a
warning and its protocol says so (`foreign_load`), so a board can tell a slow model from a busy
machine. Where /proc/stat does not exist (macOS, Windows) the load is unknown (None), never guessed.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Average cores of other work above which a timing is flagged (a quarter of a core: a browser tab
# or an editor stays under it, a second job does not).
BUSY_CORES = 0.25
PROC_STAT = Path("/proc/stat")
# /proc/stat columns after "cpu": user nice system idle iowait irq softirq steal guest guest_nice.
# Busy = everything but idle and iowait (guest time is already counted in user).
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


def machine_busy_seconds(stat: Path = PROC_STAT) -> float | None:
    """CPU seconds every process on the machine has been busy since boot; None without /proc/stat."""
    try:
        fields = stat.read_text().splitlines()[0].split()[1:]
        return sum(int(fields[i]) for i in _BUSY_COLUMNS) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def own_seconds() -> float:
    """CPU seconds of this process, its threads and its joined children (e.g. DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class ForeignLoad:
    """Context manager: average number of cores other processes kept busy while it was open.

    with ForeignLoad() as load:
        work()
    load.cores  # ~0.02 on a quiet machine, ~1.0 when another job runs flat out; None: unknown
    """

    def __init__(
        self,
        stat: Path = PROC_STAT,
        clock: Callable[[], float] = time.perf_counter,
        own: Callable[[], float] = own_seconds,
    ) -> None:
        self.stat, self.clock, self.own = stat, clock, own
        self.cores: float | None = None
        self.wall_s = 0.0

    def __enter__(self) -> ForeignLoad:
        self._start = (self.clock(), machine_busy_seconds(self.stat), self.own())
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, busy0, own0 = self._start
        busy = machine_busy_seconds(self.stat)
        self.wall_s = self.clock() - wall0
        own = self.own() - own0
        if busy is not None and busy0 is not None and self.wall_s > 0:
            self.cores = max(0.0, (busy - busy0 - own) / self.wall_s)


def load_record(loads: dict[str, float | None], threshold: float = BUSY_CORES) -> dict[str, Any]:
    """The protocol record of the timed phases' foreign loads: per phase (cores, rounded), the
    threshold, and `busy`: True when any phase was above it, None when none could be measured."""
    known = {phase: cores for phase, cores in loads.items() if cores is not None}
    return {
        "cores": {phase: None if cores is None else round(cores, 3) for phase, cores in loads.items()},
        "busy_threshold_cores": threshold,
        "busy": any(cores > threshold for cores in known.values()) if known else None,
        "busy_phases": sorted(phase for phase, cores in known.items() if cores > threshold),
        "source": "/proc/stat busy time minus this process's CPU time, per wall second",
    }


def warn_if_busy(name: str, record: dict[str, Any]) -> str | None:
    """Log (and return) the warning for a run whose timings other processes disturbed."""
    if not record["busy"]:
        return None
    worst = max(record["cores"][p] for p in record["busy_phases"])
    message = (
        f"{name}: other processes kept up to {worst:.2f} cores busy while bob timed "
        f"{', '.join(record['busy_phases'])} (threshold {record['busy_threshold_cores']:g}); the timings "
        "may be slow by as much, so compare them only with runs on a quiet machine "
        "(the result records this under protocol.foreign_load)"
    )
    log.warning(message)
    return message
