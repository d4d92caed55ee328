"""Progress bars for long work (extraction, head fitting), quiet when asked or when not a terminal.

Library code asks for a bar with `progress_bar(description, total)` and calls `advance(n)`; whether
anything is drawn is decided once, by the CLI (`set_enabled`), so notebooks and tests stay quiet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bob import distributed
from bob.console import console

_ENABLED = False


def set_enabled(enabled: bool) -> None:
    global _ENABLED
    _ENABLED = enabled


def is_enabled() -> bool:
    return _ENABLED


class Progress:
    """A handle on one bar; a no-op when bars are disabled."""

    def __init__(self, bar: object | None = None, task: object | None = None) -> None:
        self._bar, self._task = bar, task

    def advance(self, n: float = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def update(self, description: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=description)


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, unit: str = "") -> Iterator[Progress]:
    """A live bar, or a silent `Progress` when bars are off or in ranks 1 to N-1 of a data-parallel
    run (rank 0 draws the run's bars; the others' output goes to log files)."""
    if not _ENABLED or not distributed.is_main():
        yield Progress()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if unit else TaskProgressColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    with RichProgress(*columns, console=console(), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield Progress(bar, task)
