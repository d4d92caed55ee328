"""The sweep's live display: one bar over the whole sweep (done / failed / skipped / remaining and an
ETA) that advances as each run reports, a line under it per run in flight (backbone · task, what it
is doing, for how long), and a printed line per failure as it happens. Per-run bars (extraction,
head fitting) are switched off while it is shown: one live display at a time.

Runs in flight are known where the sweep runs them in this process (the local executor): the
driver calls `started` before each run. Executors that run groups elsewhere (Ray, SLURM) report
whole groups when they finish, so there the bar advances per reported run and no run is listed
as in flight.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text

from bob import progress
from bob.spec import RunSpec
from bob.sweep.worker import RunReport

# What a run in flight is doing, as the display words it.
EXTRACTING = "extracting features, then fitting"
FITTING = "fitting on cached features"
TRAINING = "training"
RUNNING = "running"
FAILED_STATUSES = ("failed", "lost")
MAX_ERROR_CHARS = 200  # a failure line keeps the error's first line, cut here; the result file has all


def run_label(spec: RunSpec) -> str:
    """`backbone [weights] · task · seed N · run <id>`: how the display names a run (the id tells
    apart runs that differ only in task args, and names its result file)."""
    weights = "" if spec.weights == "pretrained" else f" [{spec.weights}]"
    return f"{spec.backbone}{weights} · {spec.task} · seed {spec.seed} · run {spec.id}"


class SweepDisplay:
    def __init__(self, console: Any, enabled: bool = True) -> None:
        self.console, self.enabled = console, enabled
        self.counts = {"ok": 0, "failed": 0, "skipped": 0, "busy": 0, "not_applicable": 0, "elsewhere": 0}
        self.total = 0
        self.labels: dict[str, str] = {}  # run id -> run_label, for the runs this sweep starts
        self.in_flight: dict[str, tuple[str, str, float]] = {}  # run id -> (label, phase, start)
        self.failures: list[str] = []  # the failure lines printed so far
        self._bar: Any = None
        self._task: Any = None
        self._live: Any = None
        self._was_enabled = False

    def start(self, total: int, state: Any, specs: dict[str, RunSpec] | None = None) -> None:
        """Print what the sweep will do and open the bar; `specs` (run id -> spec) names the runs in
        the failure lines and in-flight rows (ids alone otherwise)."""
        self.total = total
        self.labels = {run_id: run_label(spec) for run_id, spec in (specs or {}).items()}
        self.console.print(
            f"{total} runs to do · {state.done} done earlier · {state.failed_before} failed earlier"
            + (f" · {state.not_applicable_before} not applicable" if state.not_applicable_before else "")
            + (f" · {len(state.damaged)} unreadable result files left alone" if state.damaged else ""),
            highlight=False,
        )
        self._was_enabled = progress.is_enabled()
        progress.set_enabled(False)
        if not self.enabled:
            return
        from rich.console import Group
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._task = self._bar.add_task("sweep", total=total, status=self._status())
        self._live = Live(Group(self._bar, _InFlight(self)), console=self.console, refresh_per_second=4)
        self._live.start()

    def _status(self) -> str:
        done = sum(self.counts.values())
        return (
            f"ok {self.counts['ok']} · failed {self.counts['failed']} · skipped {self.counts['skipped']}"
            + (f" · busy {self.counts['busy']}" if self.counts["busy"] else "")
            + (f" · by another sweep {self.counts['elsewhere']}" if self.counts["elsewhere"] else "")
            + (f" · not applicable {self.counts['not_applicable']}" if self.counts["not_applicable"] else "")
            + f" · remaining {self.total - done}"
            + (f" · in flight {len(self.in_flight)}" if self.in_flight else "")
        )

    def started(self, run_id: str, phase: str = RUNNING) -> None:
        """A run begins: list it under the bar with what it is doing and a clock of its own."""
        self.in_flight[run_id] = (self.labels.get(run_id, run_id), phase, time.monotonic())
        if self._bar is not None:
            self._bar.update(self._task, status=self._status())

    def update(self, report: RunReport) -> None:
        """A run reported: take it off the in-flight list, count it, advance the bar, and print a
        line now if it failed."""
        key = report.status if report.status in self.counts else "failed"
        self.counts[key] += 1
        self.in_flight.pop(report.id, None)
        if report.status in FAILED_STATUSES:
            self._print_failure(report)
        if self._bar is not None:
            self._bar.update(self._task, advance=1, status=self._status())

    def _print_failure(self, report: RunReport) -> None:
        error = (report.error or "no error message").strip().splitlines()[0] if report.error else ""
        if len(error) > MAX_ERROR_CHARS:
            error = error[: MAX_ERROR_CHARS - 1] + "…"
        line = f"failed: {self.labels.get(report.id, report.id)}" + (f": {error}" if error else "")
        self.failures.append(line)
        if self.enabled:
            self.console.print(line, style="red", highlight=False, markup=False)

    def stop(self) -> None:
        if self._live is not None:
            self.in_flight.clear()
            self._live.refresh()
            self._live.stop()
            self._live, self._bar = None, None
        progress.set_enabled(self._was_enabled)


class _InFlight:
    """The lines under the bar: one per run in flight, its label, what it is doing, and for how long."""

    def __init__(self, display: SweepDisplay) -> None:
        self.display = display

    def __rich__(self) -> Text:
        now = time.monotonic()
        lines = [
            f"  ▸ {label} — {phase} · {_clock(now - since)}"
            for label, phase, since in list(self.display.in_flight.values())
        ]
        return Text("\n".join(lines))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"
