"""The sweep's progress bar: one bar over the whole sweep with done / failed / skipped / remaining
and an ETA. Per-run bars (extraction, head fitting) are switched off while it is shown: one live
display at a time."""

from __future__ import annotations

from typing import Any

from bob import progress
from bob.sweep.worker import RunReport


class SweepDisplay:
    def __init__(self, console: Any, enabled: bool = True) -> None:
        self.console, self.enabled = console, enabled
        self.counts = {"ok": 0, "failed": 0, "skipped": 0, "busy": 0, "not_applicable": 0, "elsewhere": 0}
        self._bar: Any = None
        self._task: Any = None
        self._was_enabled = False

    def start(self, total: int, state: Any) -> None:
        self.total = total
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
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._bar.start()
        self._task = self._bar.add_task("sweep", total=total, status=self._status())

    def _status(self) -> str:
        done = sum(self.counts.values())
        return (
            f"ok {self.counts['ok']} · failed {self.counts['failed']} · skipped {self.counts['skipped']}"
            + (f" · busy {self.counts['busy']}" if self.counts["busy"] else "")
            + (f" · by another sweep {self.counts['elsewhere']}" if self.counts["elsewhere"] else "")
            + (f" · not applicable {self.counts['not_applicable']}" if self.counts["not_applicable"] else "")
            + f" · remaining {self.total - done}"
        )

    def update(self, report: RunReport) -> None:
        key = report.status if report.status in self.counts else "failed"
        self.counts[key] += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, status=self._status())

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        progress.set_enabled(self._was_enabled)
