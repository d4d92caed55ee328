"""`bob run`: validate the whole grid first, run it, print the result table and the random-init gap."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

from rich.table import Table
from rich.text import Text

from bob import progress
from bob.console import console, stdout_console
from bob.errors import UnknownNameError, UsageError
from bob.runner import RunOptions, RunOutcome, execute
from bob.spec import RunSpec, make_spec, parse_backbone_args
from bob.task import parse_assignments

log = logging.getLogger(__name__)


def build_specs(
    backbones: list[str],
    tasks: list[str],
    weights: list[str],
    seeds: list[int],
    task_args: list[str],
    backbone_args: list[str],
) -> list[RunSpec]:
    """Every (backbone, weights, task, seed) combination, validated before anything runs.

    A task arg `KEY=VALUE` applies to every task of the grid; `SUITE:KEY=VALUE` only to that suite's
    tasks (e.g. `linear-probe:epochs=50` beside `knn:k=10`).
    """
    scoped = _scope_task_args(parse_assignments(task_args, "--task-arg"))
    bargs = parse_backbone_args(parse_assignments(backbone_args, "--backbone-arg"))
    specs: dict[str, RunSpec] = {}
    for b, t, w, s in itertools.product(backbones, tasks, weights, seeds):
        suite = t.partition("/")[0]
        targs = {**scoped.get("", {}), **scoped.get(suite, {})}
        try:
            spec = make_spec(b, t, w, s, bargs, targs)
        except UnknownNameError as err:
            if err.kind.startswith("task arg") and len(tasks) > 1:
                raise UsageError(
                    f"{err} Scope an arg to one suite with --task-arg SUITE:KEY=VALUE."
                ) from None
            raise
        specs.setdefault(spec.id, spec)
    return list(specs.values())


def _scope_task_args(args: dict[str, str]) -> dict[str, dict[str, str]]:
    from bob.suites import SUITES

    scoped: dict[str, dict[str, str]] = {}
    for key, value in args.items():
        suite, sep, name = key.rpartition(":")
        if sep:
            SUITES.get(suite)  # unknown suite: did-you-mean error
        scoped.setdefault(suite, {})[name] = value
    return scoped


def _fmt(value: float | None, fractions: bool = True) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.2f}" if fractions and 0 <= value <= 1 else f"{value:.4g}"


MAX_METRIC_COLUMNS = 8


def results_tables(outcomes: list[RunOutcome]) -> list[Table]:
    """One table per suite, main metric first: suites report different metrics, and a shared table
    with every suite's columns would squeeze them all into unreadable stubs."""
    by_suite: dict[str, list[RunOutcome]] = {}
    for o in outcomes:
        by_suite.setdefault(o.spec.task.partition("/")[0], []).append(o)
    return [_suite_table(suite, group) for suite, group in by_suite.items()]


def _suite_table(suite: str, outcomes: list[RunOutcome]) -> Table:
    metric_names: list[str] = []
    for o in outcomes:
        main = o.result.task.get("main_metric")
        if main and main not in metric_names:
            metric_names.insert(0, main)
        metric_names += [m for m in o.result.metrics if m not in metric_names]
    hidden = len(metric_names) - MAX_METRIC_COLUMNS
    metric_names = metric_names[:MAX_METRIC_COLUMNS]
    caption = f"{hidden} more metric{'s' if hidden > 1 else ''} in each result file" if hidden > 0 else None
    from bob.suites import task_class

    # Suites whose metrics are not fractions (costs: ms, MACs, MB) print them as they are.
    fractions = task_class(suite).metrics_are_fractions
    title = f"bob results: {suite}" + (" (fractions in %)" if fractions else "")
    table = Table(title=title, title_justify="left", caption=caption)
    for col in ("backbone", "weights", "task", "seed", "status", *metric_names, "time"):
        table.add_column(col, justify="right" if col in metric_names or col in ("seed", "time") else "left")
    for o in outcomes:
        r = o.result
        status = _status_cell(o)
        cells = [_fmt(r.metrics.get(m), fractions) for m in metric_names]
        time_s = r.timings.get("total_s")
        table.add_row(
            o.spec.backbone,
            o.spec.weights,
            o.spec.task,
            str(o.spec.seed),
            status,
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
    from bob.suites import task_class

    by_key = {}
    for o in outcomes:
        # A gap in points only means something for fractions (accuracy), not for costs.
        if not task_class(o.spec.task.partition("/")[0]).metrics_are_fractions:
            continue
        if o.result.ok:
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
        table.add_row(*row)
    return table


def run_grid(
    backbones: list[str],
    tasks: list[str],
    weights: list[str],
    seeds: list[int],
    task_args: list[str],
    backbone_args: list[str],
    results_dir: Path,
    cache_dir: Path | None,
    device: str,
    batch_size: int,
    num_workers: int | None,
    overwrite: bool,
    progress: bool = True,
    debug: bool = False,
) -> int:
    """Run the grid; returns the exit code (0 all ok or skipped as not applicable, 1 any run failed)."""
    specs = build_specs(backbones, tasks, weights, seeds, task_args, backbone_args)
    options = RunOptions(results_dir, cache_dir, device, batch_size, num_workers, overwrite)
    _set_progress(progress)
    outcomes = []
    err = console()
    for i, spec in enumerate(specs, 1):
        err.rule(Text(f"[{i}/{len(specs)}] {spec.label}"), style="dim")
        outcome = execute(spec, options)
        if outcome.skipped:
            err.print(f"already done: {outcome.path} (use --overwrite to re-run)", highlight=False)
        outcomes.append(outcome)
    out = stdout_console()
    for table in results_tables(outcomes):
        out.print(table)
    gaps = gap_table(outcomes)
    if gaps is not None:
        out.print(gaps)
    err.print(f"results: {options.results_dir} (one JSON per run)", highlight=False)
    failed = [o for o in outcomes if o.result.status == "failed"]
    for o in failed:
        e = o.result.error or {}
        err.print(
            Text.assemble(("failed: ", "bold red"), f"{o.spec.label}\n  {e.get('type')}: {e.get('message')}")
        )
        if debug:
            err.print("\n".join(e.get("traceback", [])), highlight=False)
        else:
            err.print(f"  (traceback in {o.path}; re-run with --debug to print it)", highlight=False)
    return 1 if failed else 0


def _set_progress(enabled: bool) -> None:
    progress.set_enabled(enabled)
