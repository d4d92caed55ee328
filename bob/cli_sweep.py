"""`bob sweep FILE`: expand a sweep file, print its plan (--dry-run) or run it on an executor."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from bob.console import console, stdout_console
from bob.errors import UsageError

if TYPE_CHECKING:
    from bob.sweep.plan import Plan

MAX_LISTED = 20  # failed runs listed by name after a sweep; the rest are counted
MAX_TABLE = 40  # sweeps up to this many runs end with the result table `bob run` prints


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(title.split()[-1])
    table.add_column("runs", justify="right")
    for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(key, str(n))
    return table


def print_plan(plan: Plan, name: str, as_json: bool) -> None:
    breakdown = plan.breakdown()
    out = stdout_console()
    if as_json:
        data = {
            "sweep": name,
            "runs": plan.runs,
            "extractions": plan.extractions,
            "training_runs": plan.training_runs,
            "groups": len(plan.groups),
            **{f"by_{k}": dict(v) for k, v in breakdown.items()},
        }
        out.print_json(json.dumps(data))
        return
    out.print(
        f"sweep {name}: {plan.runs} runs · {plan.extractions} unique feature extractions for "
        f"{plan.runs - plan.training_runs} cache-reading runs · {plan.training_runs} training runs · "
        f"{len(plan.groups)} plan groups",
        highlight=False,
    )
    out.print(_counts_table("runs by suite", breakdown["suite"]))
    out.print(_counts_table("runs by family", breakdown["family"]))
    out.print(_counts_table("runs by weights", breakdown["weights"]))


def _print_progress(plan: Plan, results_dir: Path, mode: str) -> None:
    """Where an interrupted sweep stands, from the result files alone."""
    from bob.results import ResultStore
    from bob.sweep.driver import survey

    state = survey(plan.specs(), ResultStore(results_dir), mode)
    stdout_console().print(
        f"in {results_dir}: {len(state.todo)} to run · {state.done} done · {state.failed_before} failed"
        + (f" · {state.not_applicable_before} not applicable" if state.not_applicable_before else "")
        + (f" · {len(state.damaged)} unreadable" if state.damaged else ""),
        highlight=False,
    )


def _print_results(plan: Plan, results_dir: Path) -> None:
    """The result table (and random-init gaps) of a small sweep, as `bob run` prints them."""
    from bob.cli_run import gap_table, results_tables
    from bob.errors import ResultFileError
    from bob.results import ResultStore
    from bob.runner import RunOutcome

    store = ResultStore(results_dir)
    outcomes = []
    for spec in plan.specs():
        try:
            result = store.load(spec)
        except ResultFileError:
            continue
        if result is not None:
            outcomes.append(RunOutcome(spec, result, store.path_for(spec)))
    out = stdout_console()
    for table in results_tables(outcomes):
        out.print(table)
    gaps = gap_table(outcomes)
    if gaps is not None:
        out.print(gaps)


def _not_applicable_note(counts: dict[str, int]) -> str:
    """Runs skipped because the task does not apply to the backbone: settled, counted apart."""
    now, before = counts.get("not_applicable", 0), counts.get("not_applicable_before", 0)
    if not now and not before:
        return ""
    return f" · {now} not applicable (skipped)" + (f", {before} earlier" if before else "")


def _executor_settings(executor: str, **flags: object) -> dict[str, object]:
    keep = {
        "local": (),
        "ray": ("address", "num_cpus", "gpus_per_run", "max_retries"),
        "slurm": ("folder", "partition", "time_min", "gpus_per_node", "cpus_per_task", "cluster"),
    }.get(executor, ())
    return {k: v for k, v in flags.items() if k in keep and v is not None}


def own_backbones(plan: Plan) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, weights, backbone args) of every user backbone in the plan: a factory named in the
    sweep file, or one an installed package registers under the `bob.backbones` entry points."""
    from bob.backbones import BACKBONES
    from bob.backbones.catalog import composite_inner, is_factory_name

    seen: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for spec in plan.specs():
        name = spec.backbone
        inner = composite_inner(name) or name  # a composite of a user backbone is checked whole
        own = is_factory_name(inner) or (inner in BACKBONES and "factory" in BACKBONES.get(inner).meta)
        if own:
            key = json.dumps([name, spec.weights, spec.backbone_args], sort_keys=True, default=str)
            seen.setdefault(key, (name, spec.weights, dict(spec.backbone_args)))
    return list(seen.values())


def check_own_backbones(plan: Plan) -> None:
    """A user backbone joins a sweep only after it passes `bob check`'s contract checks (resolve,
    build, pooled shape and finiteness, determinism, batch invariance, feature levels)."""
    from bob.check import check_backbone

    for name, weights, args in own_backbones(plan):
        failed = [r for r in check_backbone(name, weights, args, mock_runs=False) if r.status == "fail"]
        if failed:
            first = failed[0]
            raise UsageError(
                f"Backbone '{name}' [{weights}] fails `bob check` ({first.name}: {first.detail}), so this "
                f"sweep does not accept it; nothing ran. `bob check --backbone {name}` shows the whole report."
            )


def sweep(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Sweep file (YAML), e.g. sweeps/quickstart.yaml.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print runs, breakdowns and extractions; run nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: print the plan as JSON.")] = False,
    executor: Annotated[str, typer.Option("--executor", "-x", help="local | ray | slurm.")] = "local",
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray: address of an existing cluster (default: start one)."),
    ] = None,
    num_cpus: Annotated[
        int | None,
        typer.Option("--num-cpus", min=1, help="Ray: CPUs of the local Ray started for the sweep."),
    ] = None,
    gpus_per_run: Annotated[
        float | None, typer.Option("--gpus-per-run", min=0, help="Ray: GPUs per group (default: 1 if any).")
    ] = None,
    max_retries: Annotated[
        int, typer.Option("--max-retries", min=0, help="Ray: retries of a group whose worker died.")
    ] = 3,
    partition: Annotated[str | None, typer.Option("--partition", help="SLURM partition.")] = None,
    time_min: Annotated[int, typer.Option("--time", min=1, help="SLURM: minutes per array task.")] = 240,
    gpus: Annotated[int, typer.Option("--gpus", min=0, help="SLURM: GPUs per array task.")] = 1,
    cpus: Annotated[int, typer.Option("--cpus", min=1, help="SLURM: CPUs per array task.")] = 8,
    slurm_folder: Annotated[
        Path, typer.Option("--slurm-folder", help="SLURM: where submitit keeps logs and pickles.")
    ] = Path("results/slurm"),
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Re-run only the failed runs.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Re-run every run, replacing results.")
    ] = False,
    results_dir: Annotated[Path, typer.Option("--results-dir", metavar="DIR")] = Path("results/raw"),
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", metavar="DIR")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Extraction batch size.")] = 64,
    num_workers: Annotated[int | None, typer.Option("--num-workers", min=0)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run a sweep file: every run of its grid, extracting each feature set once; resumable.

    Example: bob sweep sweeps/quickstart.yaml --dry-run
    """
    from bob.runner import RunOptions
    from bob.sweep.display import SweepDisplay
    from bob.sweep.driver import plan_sweep, run_sweep
    from bob.sweep.executors import make_executor
    from bob.sweep.spec import load_sweep

    if retry_failed and overwrite:
        raise UsageError("--retry-failed and --overwrite exclude each other: pick one.")
    spec = load_sweep(file)
    plan = plan_sweep(spec)
    mode = "all" if overwrite else "failed" if retry_failed else "missing"
    if dry_run:
        print_plan(plan, spec.name, as_json)
        if results_dir.is_dir() and not as_json:
            _print_progress(plan, results_dir, mode)
        raise typer.Exit(0)
    check_own_backbones(plan)
    settings = _executor_settings(
        executor,
        address=address,
        num_cpus=num_cpus,
        gpus_per_run=gpus_per_run,
        max_retries=max_retries,
        folder=slurm_folder,
        partition=partition,
        time_min=time_min,
        gpus_per_node=gpus,
        cpus_per_task=cpus,
    )
    runner = make_executor(executor, **settings)
    options = RunOptions(results_dir, cache_dir, device, batch_size, num_workers)
    err = console()
    display = SweepDisplay(err, enabled=not quiet)
    summary = run_sweep(plan, runner, options, mode, display)
    c = summary.counts
    err.print(
        f"sweep {spec.name}: {c.get('ok', 0)} ok · {c.get('failed', 0) + c.get('lost', 0)} failed · "
        f"{c.get('done_before', 0)} done earlier · {c.get('failed_before', 0)} failed earlier"
        + (" (re-run them with --retry-failed)" if c.get("failed_before") and mode == "missing" else "")
        + (f" · {c['busy']} running in another sweep" if c.get("busy") else "")
        + _not_applicable_note(c)
        + f" · {summary.extractions} extractions · {summary.seconds:.1f}s · results in {results_dir}",
        highlight=False,
    )
    debug = logging.getLogger("bob").isEnabledFor(logging.DEBUG)
    if plan.runs <= MAX_TABLE:
        _print_results(plan, results_dir)
    failed = [r for r in summary.reports if r.status in ("failed", "lost")]
    for report in failed[:MAX_LISTED]:
        err.print(f"failed: {report.id}: {report.error}", highlight=False, markup=False)
    if len(failed) > MAX_LISTED:
        err.print(f"... and {len(failed) - MAX_LISTED} more failed runs", highlight=False)
    if not debug and (c.get("failed") or c.get("lost")):
        err.print("tracebacks are in the failed runs' result files", highlight=False)
    raise typer.Exit(summary.exit_code)
