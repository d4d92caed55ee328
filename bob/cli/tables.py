"""The result table and the random-init gap table that `bob run` and `bob sweep` print."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from bob.console import stdout_console

if TYPE_CHECKING:
    from bob.runner import RunOutcome

MAX_METRIC_COLUMNS = 8


def print_outcomes(outcomes: list[RunOutcome]) -> None:
    """One result table per suite, then the gain over random init where the grid has both."""
    out = stdout_console()
    for table in results_tables(outcomes):
        out.print(table)
    gaps = gap_table(outcomes)
    if gaps is not None:
        out.print(gaps)


def _fmt(value: float | None, fractions: bool = True) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.2f}" if fractions and 0 <= value <= 1 else f"{value:.4g}"


def results_tables(outcomes: list[RunOutcome]) -> list[Table]:
    """One table per suite, main metric first: suites report different metrics, and a shared table
    with every suite's columns would squeeze them all into unreadable stubs."""
    by_suite: dict[str, list[RunOutcome]] = {}
    for o in outcomes:
        by_suite.setdefault(o.spec.task.partition("/")[0], []).append(o)
    return [_suite_table(suite, group) for suite, group in by_suite.items()]


def _metric_names(outcomes: list[RunOutcome]) -> list[str]:
    """Every metric of the runs, main metrics first."""
    names: list[str] = []
    for o in outcomes:
        main = o.result.task.get("main_metric")
        if main and main not in names:
            names.insert(0, main)
        names += [m for m in o.result.metrics if m not in names]
    return names


def _suite_table(suite: str, outcomes: list[RunOutcome]) -> Table:
    metric_names = _metric_names(outcomes)
    hidden = len(metric_names) - MAX_METRIC_COLUMNS
    metric_names = metric_names[:MAX_METRIC_COLUMNS]
    caption = f"{hidden} more metric{'s' if hidden > 1 else ''} in each result file" if hidden > 0 else None
    # Suites whose metrics are not fractions (costs: ms, MACs, MB) print them as they are.
    fractions = outcomes[0].metrics_are_fractions
    title = f"bob results: {suite}" + (" (fractions in %)" if fractions else "")
    table = Table(title=Text(title), title_justify="left", caption=caption)
    for col in ("backbone", "weights", "task", "seed", "status", *metric_names, "time"):
        table.add_column(col, justify="right" if col in metric_names or col in ("seed", "time") else "left")
    for o in outcomes:
        r = o.result
        cells = [_fmt(r.metrics.get(m), fractions) for m in metric_names]
        time_s = r.timings.get("total_s")
        # Text, not str: names and checkpoint paths may hold [brackets] that rich would read as markup.
        table.add_row(
            Text(o.spec.backbone),
            Text(o.spec.weights),
            Text(o.spec.task),
            str(o.spec.seed),
            _status_cell(o),
            *cells,
            f"{time_s:.1f}s" if time_s is not None else "",
        )
    return table


def _status_cell(o: RunOutcome) -> Text:
    """`done` (stored earlier), `ok`, `failed`, or `skipped: <reason>` for a task that does not apply."""
    r = o.result
    if r.status == "skipped":
        return Text(f"skipped: {r.reason}", style="yellow")
    return Text("done" if o.skipped else r.status, style="green" if r.ok else "bold red")


def gap_table(outcomes: list[RunOutcome]) -> Table | None:
    """Pretrained minus random-init on the main metric, for every pair the grid contains."""
    by_key = {}
    for o in outcomes:
        # A gap in points only means something for fractions (accuracy), not for costs.
        if o.metrics_are_fractions and o.result.ok:
            by_key[(o.spec.backbone, o.spec.task, o.spec.seed, o.spec.weights)] = o.result
    rows = []
    for (b, t, s, w), r in by_key.items():
        if w == "random" or (b, t, s, "random") not in by_key:
            continue
        metric, value = r.main_metric
        base = by_key[(b, t, s, "random")].metrics.get(metric)
        if value is not None and base is not None:
            rows.append((b, w, t, str(s), metric, _fmt(value), _fmt(base), f"{100 * (value - base):+.2f}"))
    if not rows:
        return None
    table = Table(title="gain over random init (points)", title_justify="left")
    for col in ("backbone", "weights", "task", "seed", "metric", "trained", "random", "gap"):
        table.add_column(col, justify="right" if col in ("trained", "random", "gap", "seed") else "left")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table
