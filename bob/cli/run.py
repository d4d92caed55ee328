"""`bob run`: run a grid through `bob.api.run`, print the result table, the random-init gap and failures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from bob.cli.options import (
    STATE,
    BackboneArgs,
    BatchSize,
    CacheDir,
    ChannelsLast,
    Device,
    GeometryCache,
    NumWorkers,
    Overwrite,
    Pipeline,
    Precision,
    Quiet,
    ResultsDir,
    Samples,
)
from bob.cli.tables import print_outcomes
from bob.console import console

if TYPE_CHECKING:
    from bob.runner import RunOutcome
    from bob.spec import RunSpec

Backbones = Annotated[
    list[str],
    typer.Option(
        "--backbone", "-b", metavar="NAME", help="Backbone name (repeatable), e.g. torchvision/mobilenet_v2."
    ),
]
Tasks = Annotated[
    list[str],
    typer.Option(
        "--task",
        "-t",
        metavar="SUITE/DATASET",
        help="Task name <suite>/<dataset> (repeatable), e.g. linear-probe/animal-mnist.",
    ),
]
Weights = Annotated[
    list[str] | None,
    typer.Option("--weights", "-w", metavar="W", help="pretrained | random | PATH (repeatable)."),
]
Seeds = Annotated[list[int] | None, typer.Option("--seed", "-s", metavar="N", help="Seed (repeatable).")]
TaskArgs = Annotated[
    list[str] | None,
    typer.Option(
        "--task-arg", "-a", metavar="[SUITE:]KEY=VALUE", help="Task argument KEY=VALUE (repeatable)."
    ),
]


def run(
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
    quiet: Quiet = False,
) -> None:
    """Run backbones × weights × tasks × seeds; print a result table; write one JSON per run.

    Example: bob run -b torchvision/mobilenet_v2 -w pretrained -w random -t linear-probe/animal-mnist
    """
    code = run_grid(
        backbone,
        task,
        weights or ["pretrained"],
        seed or [0],
        task_arg or [],
        backbone_arg or [],
        results_dir,
        cache_dir,
        device,
        batch_size,
        num_workers,
        overwrite,
        samples=samples,
        progress=not quiet,
        debug=STATE["debug"],
        extraction={"pipeline": pipeline, "precision": precision, "channels_last": channels_last},
        geometry_cache=geometry_cache,
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
        geometry_cache=geometry_cache, **(extraction or {}),
    )  # fmt: skip
    print_outcomes(outcomes)
    err.print(f"results: {Path(results_dir)} (one JSON per run)", highlight=False, markup=False)
    return report_failures(outcomes, debug)


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
