"""`bob run`: run a grid through `bob.api.run`, print the result table, the random-init gap and failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from bob import distributed
from bob.cli.options import (
    STATE,
    BackboneArgs,
    BatchSize,
    CacheDir,
    ChannelsLast,
    Device,
    GeometryCache,
    GpusPerRun,
    Limit,
    Nodes,
    NumWorkers,
    Overwrite,
    Pipeline,
    Precision,
    Quiet,
    RdzvEndpoint,
    ResultsDir,
    Samples,
    Trackers,
)
from bob.cli.tables import print_outcomes
from bob.console import console, stdout_console

if TYPE_CHECKING:
    from bob.run_plan import RunPlan
    from bob.runner import RunOutcome
    from bob.selection import Selection
    from bob.spec import RunSpec

Backbones = Annotated[
    list[str],
    typer.Option(
        "--backbone",
        "-b",
        metavar="NAME[@WEIGHTS]",
        help="Backbone (repeatable): a name, a glob or a comma list, e.g. torchvision/mobilenet_v2, "
        "'torchvision/mobilenet_v3*', or your file.py:fn (never globbed). NAME@WEIGHTS runs that backbone "
        "with these weights only (pretrained, random or a checkpoint path), e.g. mine.py:build@random; "
        "--weights applies to the backbones without @.",
    ),
]
Tasks = Annotated[
    list[str],
    typer.Option(
        "--task",
        "-t",
        metavar="SUITE/DATASET",
        help="Task <suite>/<dataset> (repeatable), a glob, a comma list or a suite name (all its tasks whose "
        "data is on disk), e.g. linear-probe/animal-mnist, 'knn/*', knn, knn/digits,ncm/digits.",
    ),
]
Weights = Annotated[
    list[str] | None,
    typer.Option(
        "--weights",
        "-w",
        metavar="W",
        help="pretrained | random | PATH (repeatable): every backbone without an @WEIGHTS suffix runs with "
        "each. Per-backbone weights: -b NAME@WEIGHTS.",
    ),
]
Seeds = Annotated[list[int] | None, typer.Option("--seed", "-s", metavar="N", help="Seed (repeatable).")]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="List the planned runs (done or to run) and the feature sets (cached or to extract); run "
        "and write nothing.",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="With --dry-run: print the plan as JSON.")]
Yes = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Run a grid that a -b/-t pattern expanded to more than 50 runs."),
]
TaskArgs = Annotated[
    list[str] | None,
    typer.Option(
        "--task-arg", "-a", metavar="[SUITE:]KEY=VALUE", help="Task argument KEY=VALUE (repeatable)."
    ),
]


def run(
    ctx: typer.Context,
    backbone: Backbones,
    task: Tasks,
    weights: Weights = None,
    seed: Seeds = None,
    task_arg: TaskArgs = None,
    backbone_arg: BackboneArgs = None,
    results_dir: ResultsDir = Path("results/raw"),
    cache_dir: CacheDir = None,
    device: Device = "auto",
    batch_size: BatchSize = 64,
    num_workers: NumWorkers = None,
    overwrite: Overwrite = False,
    samples: Samples = True,
    pipeline: Pipeline = "pil",
    precision: Precision = "fp32",
    channels_last: ChannelsLast = False,
    geometry_cache: GeometryCache = None,
    limit: Limit = None,
    gpus_per_run: GpusPerRun = 1,
    nodes: Nodes = 1,
    rdzv_endpoint: RdzvEndpoint = None,
    dry_run: DryRun = False,
    as_json: AsJson = False,
    yes: Yes = False,
    tracker: Trackers = None,
    quiet: Quiet = False,
) -> None:
    """Run backbones × weights × tasks × seeds; print a result table; write one JSON per run.

    Example: bob run -b torchvision/mobilenet_v2 -w pretrained -w random -t linear-probe/animal-mnist
    """
    weights, seeds, bargs = weights or ["pretrained"], seed or [0], backbone_arg or []
    targs = [*(task_arg or []), *([f"limit={limit}"] if limit is not None else [])]
    extraction = {"pipeline": pipeline, "precision": precision, "channels_last": channels_last}
    if dry_run or as_json:
        raise typer.Exit(
            print_plan(
                backbone, task, weights, seeds, targs, bargs, results_dir, cache_dir, overwrite, as_json,
                extraction=extraction,
            )
        )  # fmt: skip

    def refusals() -> list[tuple[str, str]]:
        from bob import api

        return api.data_parallel_refusals(
            backbone, task, weights, seeds, task_args=targs, backbone_args=bargs, yes=yes
        )

    launched = distributed.data_parallel(
        ctx, gpus_per_run, refusals, device, STATE["debug"], nodes=nodes, endpoint=rdzv_endpoint
    )
    if launched is not None:  # the ranks ran it (docs/distributed.md)
        raise typer.Exit(launched)
    code = run_grid(
        backbone,
        task,
        weights,
        seeds,
        targs,
        bargs,
        results_dir,
        cache_dir,
        device,
        batch_size,
        num_workers,
        overwrite,
        samples=samples,
        progress=not quiet,
        debug=STATE["debug"],
        extraction=extraction,
        geometry_cache=geometry_cache,
        yes=yes,
        trackers=tracker or [],
    )
    raise typer.Exit(code)


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
    samples: bool = True,
    progress: bool = True,
    debug: bool = False,
    extraction: dict[str, Any] | None = None,
    geometry_cache: Path | None = None,
    yes: bool = False,
    trackers: list[str] | None = None,
) -> int:
    """`bob run` in-process; returns the exit code (0 all ok or not applicable, 1 any run failed)."""
    from bob import api  # the suite registry and the runner: never needed by `bob --help`

    err = console()

    def announce(i: int, n: int, spec: RunSpec) -> None:
        err.rule(Text(f"[{i}/{n}] {spec.label}"), style="dim")

    def already_done(outcome: RunOutcome) -> None:
        if outcome.skipped:
            err.print(
                f"already done: {outcome.path} (use --overwrite to re-run)", highlight=False, markup=False
            )

    outcomes = api.run(
        backbones, tasks, weights, seeds,
        task_args=task_args, backbone_args=backbone_args, results_dir=results_dir, cache_dir=cache_dir,
        device=device, batch_size=batch_size, num_workers=num_workers, overwrite=overwrite,
        samples=samples, progress=progress, on_start=announce, on_outcome=already_done,
        geometry_cache=geometry_cache, yes=yes, on_selection=print_selection, trackers=trackers or [],
        **(extraction or {}),
    )  # fmt: skip
    print_outcomes(outcomes)
    err.print(f"results: {Path(results_dir)} (one JSON per run)", highlight=False, markup=False)
    return report_failures(outcomes, debug)


def print_selection(selection: Selection) -> None:
    """What each -b/-t pattern expanded to, one line each on stderr."""
    for note in selection.notes():
        console().print(note, highlight=False, markup=False)


def print_plan(
    backbones: list[str],
    tasks: list[str],
    weights: list[str],
    seeds: list[int],
    task_args: list[str],
    backbone_args: list[str],
    results_dir: Path,
    cache_dir: Path | None,
    overwrite: bool,
    as_json: bool,
    extraction: dict[str, Any],
) -> int:
    """`bob run --dry-run`: the planned runs and feature sets as tables (or JSON); exit code 0."""
    from bob import api  # the suite registry: never needed by `bob --help`

    plan = api.plan_run(
        backbones, tasks, weights, seeds,
        task_args=task_args, backbone_args=backbone_args, results_dir=results_dir, cache_dir=cache_dir,
        overwrite=overwrite, on_selection=None if as_json else print_selection, **extraction,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(plan.to_dict(), indent=2))
        return 0
    print_run_plan(plan)
    return 0


def print_run_plan(plan: RunPlan) -> None:
    """The planned runs (backbone, weights, task, seed, run id, state) and the feature sets they read."""
    out = stdout_console()
    runs = Table(title="planned runs", title_justify="left")
    for col in ("backbone", "weights", "task", "seed", "run id", "state", "features"):
        runs.add_column(col, overflow="fold")
    for r in plan.runs:
        features = "trains" if r.extraction is None else f"#{r.extraction + 1}"
        spec = r.spec
        runs.add_row(spec.backbone, spec.weights, spec.task_label, str(spec.seed), spec.id, r.state, features)
    out.print(runs)
    if plan.extractions:
        sets = Table(title="feature sets", title_justify="left")
        for col in ("#", "backbone", "weights", "dataset", "runs", "state"):
            sets.add_column(col, overflow="fold")
        for i, e in enumerate(plan.extractions, 1):
            sets.add_row(str(i), e.backbone, e.weights, e.dataset, str(len(e.runs)), e.state)
        out.print(sets)
    n = plan.counts()
    console().print(
        f"dry run: {n['runs']} runs ({n['done']} done, {n['to_run']} to run), {n['extractions']} feature "
        f"sets ({n['cached']} cached); nothing ran, nothing was written.",
        highlight=False,
        markup=False,
    )


def report_failures(outcomes: list[RunOutcome], debug: bool) -> int:
    """Each failed run with its error (and traceback with --debug); the exit code of the grid."""
    err = console()
    failed = [o for o in outcomes if o.result.status == "failed"]
    for o in failed:
        e = o.result.error or {}
        err.print(
            Text.assemble(("failed: ", "bold red"), f"{o.spec.label}\n  {e.get('type')}: {e.get('message')}")
        )
        if debug:
            err.print("\n".join(e.get("traceback", [])), highlight=False, markup=False)
        else:
            err.print(
                f"  (traceback in {o.path}; re-run with --debug to print it)", highlight=False, markup=False
            )
    return 1 if failed else 0
