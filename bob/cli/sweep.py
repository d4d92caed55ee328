"""`bob sweep FILE`: print a sweep's plan (--dry-run) or run it through `bob.api.sweep` on an executor."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from bob.cli.options import (
    BatchSize,
    CacheDir,
    Device,
    GeometryCache,
    NumWorkers,
    Quiet,
    ResultsDir,
    Samples,
    Trackers,
)
from bob.cli.tables import print_outcomes
from bob.console import console, stdout_console
from bob.errors import UsageError
from bob.sweep.geometry import GeometryReport, geometry_report
from bob.sweep.spec import DEFAULT_MAX_RUNS

if TYPE_CHECKING:
    from bob.sweep.driver import SweepState, SweepSummary
    from bob.sweep.plan import Dependency, Plan

MAX_LISTED = 20  # failed runs listed by name after a sweep; the rest are counted
MAX_TABLE = 40  # sweeps up to this many runs end with the result table `bob run` prints


SweepFile = Annotated[
    Path, typer.Argument(metavar="FILE", help="Sweep file (YAML), e.g. sweeps/quickstart.yaml.")
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Print runs, breakdowns and extractions; run nothing.")
]
Geometry = Annotated[
    bool,
    typer.Option(
        "--geometry",
        help="With --dry-run: group the extractions by eval geometry and print the decodes and the bytes "
        "a --geometry-cache would hold (resolves each backbone's transform: imports its library).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="With --dry-run: print the plan as JSON.")]
Executor = Annotated[str, typer.Option("--executor", "-x", help="local | ray | slurm.")]
Address = Annotated[
    str | None, typer.Option("--address", help="Ray: address of an existing cluster (default: start one).")
]
NumCpus = Annotated[
    int | None, typer.Option("--num-cpus", min=1, help="Ray: CPUs of the local Ray started for the sweep.")
]
GpusPerRun = Annotated[
    float | None, typer.Option("--gpus-per-run", min=0, help="Ray: GPUs per group (default: 1 if any).")
]
RanksPerRun = Annotated[
    int,
    typer.Option(
        "--ranks-per-run",
        min=1,
        help="Data-parallel ranks (one device each) for every run whose suite trains data-parallel; "
        "ray places them as one gang, slurm as one job of that many tasks (docs/distributed.md).",
    ),
]
MaxRetries = Annotated[
    int, typer.Option("--max-retries", min=0, help="Ray: retries of a group whose worker died.")
]
Partition = Annotated[str | None, typer.Option("--partition", help="SLURM partition.")]
TimeMin = Annotated[int, typer.Option("--time", min=1, help="SLURM: minutes per array task.")]
Gpus = Annotated[int, typer.Option("--gpus", min=0, help="SLURM: GPUs per array task.")]
Cpus = Annotated[int, typer.Option("--cpus", min=1, help="SLURM: CPUs per array task.")]
SlurmFolder = Annotated[
    Path, typer.Option("--slurm-folder", help="SLURM: where submitit keeps logs and pickles.")
]
RetryFailed = Annotated[bool, typer.Option("--retry-failed", help="Re-run only the failed runs.")]
Yes = Annotated[
    bool,
    typer.Option(
        "--yes", "-y", help="Run a sweep above its size limit (the file's max_runs, else 10,000 runs)."
    ),
]
RerunAll = Annotated[bool, typer.Option("--overwrite", help="Re-run every run, replacing results.")]


def sweep(
    file: SweepFile,
    dry_run: DryRun = False,
    geometry: Geometry = False,
    as_json: AsJson = False,
    executor: Executor = "local",
    address: Address = None,
    num_cpus: NumCpus = None,
    gpus_per_run: GpusPerRun = None,
    ranks_per_run: RanksPerRun = 1,
    max_retries: MaxRetries = 3,
    partition: Partition = None,
    time_min: TimeMin = 240,
    gpus: Gpus = 1,
    cpus: Cpus = 8,
    slurm_folder: SlurmFolder = Path("results/slurm"),
    retry_failed: RetryFailed = False,
    overwrite: RerunAll = False,
    results_dir: ResultsDir = Path("results/raw"),
    cache_dir: CacheDir = None,
    device: Device = "auto",
    batch_size: BatchSize = 64,
    num_workers: NumWorkers = None,
    samples: Samples = True,
    geometry_cache: GeometryCache = None,
    yes: Yes = False,
    tracker: Trackers = None,
    quiet: Quiet = False,
) -> None:
    """Run a sweep file: every run of its grid, extracting each feature set once; resumable.

    Example: bob sweep sweeps/quickstart.yaml --dry-run
    """
    mode = _mode(retry_failed, overwrite)
    from bob import api  # the suite registry and the runner: never needed by `bob --help`

    plan = api.sweep_plan(file)
    if geometry and not dry_run:
        raise UsageError("--geometry goes with --dry-run: it reports what a run would decode and store.")
    if dry_run:
        print_plan(plan, as_json, geometry)
        if results_dir.is_dir() and not as_json:
            print_status(api.sweep_status(plan, results_dir, mode, keep=False), results_dir)
        raise typer.Exit(0)
    flags = {"address": address, "num_cpus": num_cpus, "gpus_per_run": gpus_per_run}
    flags |= {"max_retries": max_retries, "folder": slurm_folder, "partition": partition}
    flags |= {"time_min": time_min, "gpus_per_node": gpus, "cpus_per_task": cpus}
    summary = api.sweep(
        plan, mode=mode, executor=executor, executor_options=_executor_settings(executor, **flags),
        results_dir=results_dir, cache_dir=cache_dir, device=device, batch_size=batch_size,
        num_workers=num_workers, samples=samples, display=api.SweepDisplay(console(), enabled=not quiet), yes=yes,
        geometry_cache=geometry_cache, trackers=tracker or [], ranks_per_run=ranks_per_run,
    )  # fmt: skip
    print_summary(plan, summary, mode, results_dir)
    print_outcomes(api.load_outcomes(plan.specs(), results_dir) if plan.runs <= MAX_TABLE else [])
    print_failures(summary)
    raise typer.Exit(summary.exit_code)


def _mode(retry_failed: bool, overwrite: bool) -> str:
    """Which runs the sweep wants: missing ones (resume), failed ones, or all of them."""
    if retry_failed and overwrite:
        raise UsageError("--retry-failed and --overwrite exclude each other: pick one.")
    return "all" if overwrite else "failed" if retry_failed else "missing"


def _executor_settings(executor: str, **flags: object) -> dict[str, object]:
    """The flags the chosen executor takes (the others belong to another executor)."""
    keep = {
        "local": (),
        "ray": ("address", "num_cpus", "gpus_per_run", "max_retries"),
        "slurm": ("folder", "partition", "time_min", "gpus_per_node", "cpus_per_task", "cluster"),
    }.get(executor, ())
    return {k: v for k, v in flags.items() if k in keep and v is not None}


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(title.split()[-1])
    table.add_column("runs", justify="right")
    for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(Text(key), str(n))  # Text: weights may be checkpoint paths with [brackets]
    return table


def print_plan(plan: Plan, as_json: bool, geometry: bool = False) -> None:
    """Runs, extractions and plan groups, and the runs by suite, family and weights; with `geometry`,
    the decodes and geometry-cache bytes of the plan's extractions."""
    breakdown = plan.breakdown()
    out = stdout_console()
    report = None
    if geometry:
        report = geometry_report(plan)  # resolves transforms: imports the backbones' libraries
    edges = plan.dependencies()
    if as_json:
        data = {
            "sweep": plan.name,
            "runs": plan.runs,
            "extractions": plan.extractions,
            "training_runs": plan.training_runs,
            "groups": plan.group_count,
            **{f"by_{k}": dict(v) for k, v in breakdown.items()},
        }
        if report is not None:
            data["geometry"] = report.to_dict()
        data["dependencies"] = len(edges)
        data["dependency_edges"] = [
            {"run": e.consumer.id, "task": e.consumer.task, "after": e.provider, "in_sweep": e.in_plan}
            for e in edges
        ]
        out.print_json(json.dumps(data))
        return
    out.print(
        f"sweep {plan.name}: {plan.runs} runs · {plan.extractions} unique feature extractions "
        f"(backbone × dataset, all its splits) for "
        f"{plan.runs - plan.training_runs} cache-reading runs · {plan.training_runs} training runs · "
        f"{plan.group_count} plan groups",
        highlight=False,
        markup=False,
    )
    out.print(_counts_table("runs by suite", breakdown["suite"]))
    out.print(_counts_table("runs by family", breakdown["family"]))
    out.print(_counts_table("runs by weights", breakdown["weights"]))
    if report is not None:
        print_geometry(report)
    print_dependencies(edges)
    limit = plan.max_runs or DEFAULT_MAX_RUNS
    if plan.runs > limit:
        out.print(
            f"{plan.runs} runs is more than this sweep's limit of {limit}: running it needs --yes "
            "(or a max_runs key in the file that covers it).",
            highlight=False,
        )


def print_dependencies(edges: list[Dependency], shown: int = 20) -> None:
    """The runs that read another run's result (ood `mode=checkpoint` reads a finetune run): each
    executor starts them only after the runs they read."""
    if not edges:
        return
    out = stdout_console()
    outside = sum(not e.in_plan for e in edges)
    out.print(
        f"{len(edges)} dependencies (a run that reads another run's result runs after it)"
        + (f"; {outside} read runs outside this sweep, which must exist already" if outside else ""),
        highlight=False,
        markup=False,
    )
    for edge in edges[:shown]:
        out.print(f"  {edge.describe()}", highlight=False, markup=False)
    if len(edges) > shown:
        out.print(f"  … {len(edges) - shown} more (--json lists all)", highlight=False, markup=False)


def print_geometry(report: GeometryReport) -> None:
    """Decodes with and without the geometry cache, and what the cache would hold."""
    out = stdout_console()
    ratio = report.extractions / report.geometries if report.geometries else 0.0
    out.print(
        f"geometry: {report.extractions} unique extractions · {report.geometries} unique geometries "
        f"(decodes with --geometry-cache; {report.extractions} without, {ratio:.2f} extractions per decode) · "
        f"geometry cache {report.cache_bytes / 1e9:.2f} GB"
        + (f" plus unsized datasets: {', '.join(sorted(report.unsized))}" if report.unsized else ""),
        highlight=False,
        markup=False,
    )
    for backbone, why in sorted(report.unresolved.items()):
        out.print(f"  transform unknown for {backbone}: {why}", highlight=False, markup=False)


def print_status(state: SweepState, results_dir: Path) -> None:
    """Where an interrupted sweep stands, from the result files alone."""
    stdout_console().print(
        f"in {results_dir}: {state.to_run} to run · {state.done} done · {state.failed_before} failed"
        + (f" · {state.not_applicable_before} not applicable" if state.not_applicable_before else "")
        + (f" · {len(state.damaged)} unreadable" if state.damaged else ""),
        highlight=False,
        markup=False,
    )


def _not_applicable_note(counts: dict[str, int]) -> str:
    """Runs skipped because the task does not apply to the backbone: settled, counted apart."""
    now, before = counts.get("not_applicable", 0), counts.get("not_applicable_before", 0)
    if not now and not before:
        return ""
    return f" · {now} not applicable (skipped)" + (f", {before} earlier" if before else "")


def print_summary(plan: Plan, summary: SweepSummary, mode: str, results_dir: Path) -> None:
    c = summary.counts
    console().print(
        f"sweep {plan.name}: {c.get('ok', 0)} ok · {c.get('failed', 0) + c.get('lost', 0)} failed · "
        f"{c.get('done_before', 0)} done earlier · {c.get('failed_before', 0)} failed earlier"
        + (" (re-run them with --retry-failed)" if c.get("failed_before") and mode == "missing" else "")
        + (f" · {c['busy']} running in another sweep" if c.get("busy") else "")
        + (f" · {c['elsewhere']} finished by another sweep" if c.get("elsewhere") else "")
        + _not_applicable_note(c)
        + f" · {summary.unique_extractions} unique feature extractions (backbone × dataset, all its splits; "
        + f"{summary.extractions} split feature sets) · {summary.seconds:.1f}s · results in {results_dir}",
        highlight=False,
        markup=False,
    )


def print_failures(summary: SweepSummary) -> None:
    """The first failed runs by name, a count of the rest, and where their tracebacks are."""
    err = console()
    failed = [r for r in summary.reports if r.status in ("failed", "lost")]
    for report in failed[:MAX_LISTED]:
        err.print(f"failed: {report.id}: {report.error}", highlight=False, markup=False)
    if len(failed) > MAX_LISTED:
        err.print(f"... and {len(failed) - MAX_LISTED} more failed runs", highlight=False)
    debug = logging.getLogger("bob").isEnabledFor(logging.DEBUG)
    c = summary.counts
    if not debug and (c.get("failed") or c.get("lost")):
        err.print("tracebacks are in the failed runs' result files", highlight=False)
