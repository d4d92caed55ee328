"""The result table and the random-init gap table that `bob run` and `bob sweep` print.

Units follow the leaderboard: a suite whose metrics are fractions (accuracy, AP, mIoU) prints them
as fractions in [0, 1] with four decimals, exactly as the board's raw scores read; a suite of costs
(efficiency: ms, MB, MACs) prints them as they are, counts compactly (`2.2M` parameters, `3.1G`
MACs). Identity columns (backbone, weights, task) and metric headers fold onto more lines in a
narrow terminal instead of being cut off with an ellipsis.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bob.console import stdout_console

if TYPE_CHECKING:
    from bob.runner import RunOutcome

MAX_METRIC_COLUMNS = 8
IDENTITY_COLUMNS = ("backbone", "weights", "task")
FRACTION_DIGITS = 4  # the leaderboard's raw scores: `0.9362`
# Metric names that hold counts: printed with a K/M/G suffix, parameters with K/M/B as `bob ls` does.
COUNT_METRICS = ("params", "macs", "flops")
COMPACT_FROM = 1e5  # any value this large reads better as 123K than as 1.23e+05
IDENTITY_MIN_WIDTH = 12  # an identity column folds no narrower than this
HEADER_MIN_WIDTH = 6  # a longer header folds onto more lines rather than widen its column


def print_outcomes(outcomes: list[RunOutcome]) -> None:
    """One result table per suite, then the gain over random init where the grid has both."""
    out = stdout_console()
    for table in results_tables(outcomes):
        out.print(table)
    gaps = gap_table(outcomes)
    if gaps is not None:
        out.print(gaps)


def compact(value: float, billions: bool = False) -> str:
    """`2223872` -> `2.2M`, `3.1e9` -> `3.1G` (`3.1B` with `billions`, for parameter counts)."""
    for scale, suffix in ((1e12, "T"), (1e9, "B" if billions else "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.4g}"


def format_metric(name: str, value: float | None, fractions: bool = True) -> str:
    """One metric cell: a fraction with four decimals (as on the board), a count compactly, or the
    value as it is; `—` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    base = name.rsplit("/", 1)[-1].lower()
    if base in COUNT_METRICS or (not fractions and abs(value) >= COMPACT_FROM):
        return compact(value, billions=base.startswith("params"))
    if fractions and 0 <= value <= 1:
        return f"{value:.{FRACTION_DIGITS}f}"
    return f"{value:.4g}"


def results_tables(outcomes: list[RunOutcome], width: int | None = None) -> list[Table]:
    """One table per suite, main metric first: suites report different metrics, and a shared table
    with every suite's columns would squeeze them all into unreadable stubs. `width` (default: the
    terminal's) bounds how many metric columns are shown; the rest are counted in the caption."""
    width = width or stdout_console().width
    by_suite: dict[str, list[RunOutcome]] = {}
    for o in outcomes:
        by_suite.setdefault(o.spec.task.partition("/")[0], []).append(o)
    return [_suite_table(suite, group, width) for suite, group in by_suite.items()]


def _metric_names(outcomes: list[RunOutcome]) -> list[str]:
    """Every metric of the runs, main metrics first."""
    names: list[str] = []
    for o in outcomes:
        main = o.result.task.get("main_metric")
        if main and main not in names:
            names.insert(0, main)
        names += [m for m in o.result.metrics if m not in names]
    return names


def _min_width(col: str, cells: list[str]) -> int:
    """The narrowest a column may get: identity columns fold down to a readable stub, value columns
    keep every cell whole (`0.9362` never breaks; its header folds instead)."""
    if col in IDENTITY_COLUMNS:
        return min(IDENTITY_MIN_WIDTH, max((len(c) for c in [col, *cells]), default=0))
    return max([len(c) for c in cells] + [min(len(col), HEADER_MIN_WIDTH)])


def _add_columns(
    table: Table, names: list[str] | tuple[str, ...], right: set[str], rows: list[list[str]]
) -> None:
    """Every column folds what does not fit onto more lines: nothing is ever cut to `torchvis…`."""
    for i, col in enumerate(names):
        table.add_column(
            Text(col),
            justify="right" if col in right else "left",
            overflow="fold",
            no_wrap=False,
            min_width=_min_width(col, [row[i] for row in rows]),
        )


def _fits(table: Table, width: int) -> bool:
    """Whether `table` renders within `width` columns (rendered uncropped into a scratch console)."""
    scratch = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False)
    scratch.print(table, crop=False)
    return all(len(line) <= width for line in scratch.file.getvalue().splitlines())


def _suite_table(suite: str, outcomes: list[RunOutcome], width: int) -> Table:
    """The suite's table with as many metric columns (main first) as fit in `width`, at most
    MAX_METRIC_COLUMNS; the caption counts the metrics left out."""
    every = _metric_names(outcomes)
    fractions = outcomes[0].metrics_are_fractions  # costs (ms, MACs, MB) print as they are
    rows = [
        [
            o.spec.backbone,
            o.spec.weights,
            o.spec.task_label,
            str(o.spec.seed),
            _status_text(o),
            *(format_metric(m, o.result.metrics.get(m), fractions) for m in every[:MAX_METRIC_COLUMNS]),
            f"{t:.1f}s" if (t := o.result.timings.get("total_s")) is not None else "",
        ]
        for o in outcomes
    ]
    shown = min(len(every), MAX_METRIC_COLUMNS)
    while True:
        table = _build_table(suite, outcomes, rows, every, shown, fractions)
        if shown <= 1 or _fits(table, width):
            return table
        shown -= 1


def _build_table(
    suite: str,
    outcomes: list[RunOutcome],
    rows: list[list[str]],
    every: list[str],
    shown: int,
    fractions: bool,
) -> Table:
    hidden = len(every) - shown
    caption = f"{hidden} more metric{'s' if hidden > 1 else ''} in each result file" if hidden > 0 else None
    title = f"bob results: {suite}" + (" (fractions in [0, 1], as on the leaderboard)" if fractions else "")
    table = Table(title=Text(title), title_justify="left", caption=caption)
    metric_names = every[:shown]
    kept = [[*row[: 5 + shown], row[-1]] for row in rows]
    _add_columns(
        table,
        [*IDENTITY_COLUMNS, "seed", "status", *metric_names, "time"],
        {*metric_names, "seed", "time"},
        kept,
    )
    for o, row in zip(outcomes, kept, strict=True):
        # Text, not str: names and checkpoint paths may hold [brackets] that rich would read as markup.
        table.add_row(*(Text(cell) for cell in row[:4]), _status_cell(o), *(Text(cell) for cell in row[5:]))
    return table


def _status_text(o: RunOutcome) -> str:
    """`done` (stored earlier), `ok`, `failed`, or `skipped: <reason>` for a task that does not apply."""
    r = o.result
    if r.status == "skipped":
        return f"skipped: {r.reason}"
    return "done" if o.skipped else r.status


def _status_cell(o: RunOutcome) -> Text:
    style = "yellow" if o.result.status == "skipped" else "green" if o.result.ok else "bold red"
    return Text(_status_text(o), style=style)


def gap_table(outcomes: list[RunOutcome]) -> Table | None:
    """Pretrained minus random-init on the main metric, for every pair the grid contains, in the
    metric's own unit (fractions, as the result tables and the board)."""
    by_key = {}
    for o in outcomes:
        # A gap only means something for fractions (accuracy), not for costs.
        if o.metrics_are_fractions and o.result.ok:
            by_key[(o.spec.backbone, o.spec.task_label, o.spec.seed, o.spec.weights)] = o.result
    rows = []
    for (b, t, s, w), r in by_key.items():
        if w == "random" or (b, t, s, "random") not in by_key:
            continue
        metric, value = r.main_metric
        base = by_key[(b, t, s, "random")].metrics.get(metric)
        if value is not None and base is not None:
            gap = f"{value - base:+.{FRACTION_DIGITS}f}"
            rows.append(
                (b, w, t, str(s), metric, format_metric(metric, value), format_metric(metric, base), gap)
            )
    if not rows:
        return None
    table = Table(title="gain over random init (trained minus random, fractions)", title_justify="left")
    columns = ("backbone", "weights", "task", "seed", "metric", "trained", "random", "gap")
    _add_columns(table, columns, {"trained", "random", "gap", "seed"}, [list(row) for row in rows])
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table
