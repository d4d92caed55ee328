"""The `bob` command line: a thin layer over the Python API.

Exit codes: 0 every run ok (or already done), 1 a run failed, 2 bad usage or bad input.
Tracebacks are shown only with --debug; every error bob raises on purpose is one clear paragraph.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from bob import __version__
from bob.console import console
from bob.errors import BobError

app = typer.Typer(
    name="bob",
    help="bob: benchmark pretrained vision backbones on a battery of task suites.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_STATE = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"bob {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _STATE["debug"] = debug
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console(), show_path=debug, rich_tracebacks=debug)],
    )
    logging.getLogger("bob").setLevel(logging.DEBUG if debug else logging.INFO)


@app.command()
def run(
    backbone: Annotated[
        list[str],
        typer.Option(
            "--backbone",
            "-b",
            metavar="NAME",
            help="Backbone name (repeatable), e.g. torchvision/mobilenet_v2.",
        ),
    ],
    task: Annotated[
        list[str],
        typer.Option(
            "--task",
            "-t",
            metavar="SUITE/DATASET",
            help="Task name <suite>/<dataset> (repeatable), e.g. linear-probe/animal-mnist.",
        ),
    ],
    weights: Annotated[
        list[str] | None,
        typer.Option("--weights", "-w", metavar="W", help="pretrained | random | PATH (repeatable)."),
    ] = None,
    seed: Annotated[
        list[int] | None, typer.Option("--seed", "-s", metavar="N", help="Seed (repeatable).")
    ] = None,
    task_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--task-arg", "-a", metavar="[SUITE:]KEY=VALUE", help="Task argument KEY=VALUE (repeatable)."
        ),
    ] = None,
    backbone_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--backbone-arg",
            metavar="KEY=VALUE",
            help="Backbone constructor argument KEY=VALUE (repeatable).",
        ),
    ] = None,
    results_dir: Annotated[
        Path, typer.Option("--results-dir", metavar="DIR", help="Where result JSON files go.")
    ] = Path("results/raw"),
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            metavar="DIR",
            help="Feature cache (default: $BOB_CACHE_DIR/features or ~/.cache/bob/features).",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", metavar="DEVICE", help="auto | cpu | cuda | cuda:N | mps.")
    ] = "auto",
    batch_size: Annotated[
        int, typer.Option("--batch-size", metavar="N", min=1, help="Feature-extraction batch size.")
    ] = 64,
    num_workers: Annotated[
        int | None,
        typer.Option(
            "--num-workers",
            metavar="N",
            min=0,
            help="Data-loader workers (default: half the cores, none on 2 or fewer).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Re-run and replace results that already exist.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run backbones × weights × tasks × seeds; print a result table; write one JSON per run.

    Example: bob run -b torchvision/mobilenet_v2 -w pretrained -w random -t linear-probe/animal-mnist
    """
    from bob.cli_run import run_grid

    code = run_grid(
        backbones=backbone,
        tasks=task,
        weights=weights or ["pretrained"],
        seeds=seed or [0],
        task_args=task_arg or [],
        backbone_args=backbone_arg or [],
        results_dir=results_dir,
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        overwrite=overwrite,
        progress=not quiet,
        debug=_STATE["debug"],
    )
    raise typer.Exit(code)


@app.command()
def check(
    backbone: Annotated[
        str,
        typer.Option(
            "--backbone", "-b", metavar="NAME", help="Catalog name, library name, file.py:fn, or module:fn."
        ),
    ],
    weights: Annotated[
        str, typer.Option("--weights", "-w", metavar="W", help="pretrained | random | PATH.")
    ] = "pretrained",
    backbone_arg: Annotated[
        list[str] | None,
        typer.Option("--backbone-arg", metavar="KEY=VALUE", help="Backbone argument (repeatable)."),
    ] = None,
    image_size: Annotated[
        int, typer.Option("--image-size", min=16, metavar="N", help="Input size of the checks.")
    ] = 64,
    suites: Annotated[
        str,
        typer.Option(
            "--suites",
            metavar="PATTERN",
            help="Mock-run only the suites matching these globs, comma-separated (default: all).",
        ),
    ] = "*",
) -> None:
    """The submission gate: contract checks, then a mock run of every suite; writes no results.

    Example: bob check --backbone examples/my_backbone.py:tiny_convnet --weights random
    """
    from bob.cli_check import run_check

    raise typer.Exit(run_check(backbone, weights, backbone_arg or [], image_size, suites))


@app.command(name="ls")
def ls(
    kind: Annotated[str, typer.Argument(help="backbones | tasks | datasets")],
    pattern: Annotated[
        str | None, typer.Argument(help="Glob pattern, e.g. 'timm/vit_*' or 'resnet*'.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="Do not truncate long listings.")] = False,
    args: Annotated[
        bool, typer.Option("--args", help="With `ls tasks`: also list each suite's task args.")
    ] = False,
    family: Annotated[
        str | None, typer.Option(help="Backbones of one family: cnn, vit, hierarchical, hybrid, diffusion.")
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="Pretraining method glob, e.g. 'ssl:*' or supervised.")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Pretraining data glob, e.g. 'IN-21k*' or 'LAION*'.")
    ] = None,
    group: Annotated[str | None, typer.Option(help="Catalog group: bob, seed-papers or newer.")] = None,
    max_params: Annotated[
        str | None, typer.Option(help="Fewer parameters than this, e.g. 30M (BoB's 'small').")
    ] = None,
) -> None:
    """List what exists: backbones, tasks or datasets (never imports torch).

    Example: bob ls backbones --method 'ssl:*' --max-params 30M
    """
    from bob.cli_ls import BackboneFilter, list_kind

    filters = BackboneFilter(family, method, data, group, max_params)
    list_kind(kind, pattern, as_json=as_json, show_all=show_all, show_args=args, filters=filters)


@app.command()
def leaderboard(
    results_dir: Annotated[
        Path, typer.Option("--results-dir", metavar="DIR", help="Where the result JSON files are.")
    ] = Path("results/raw"),
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Where leaderboard.{csv,md,html} go.")
    ] = Path("results"),
    suite: Annotated[
        list[str] | None,
        typer.Option("--suite", metavar="SUITE", help="Score only these suites (repeatable)."),
    ] = None,
    filter_: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            metavar="KEY=GLOB",
            help="Show only matching backbones: family, method, data, size, backbone, weights (repeatable).",
        ),
    ] = None,
    weighting: Annotated[
        str,
        typer.Option(
            metavar="suite|setting",
            help="Overall score: mean over suites (each weighs the same) or over settings.",
        ),
    ] = "suite",
    best_of: Annotated[
        list[str] | None,
        typer.Option(
            "--best-of", metavar="ARG", help="Task arg to take the best value over, e.g. lr (repeatable)."
        ),
    ] = None,
    min_backbones: Annotated[
        int, typer.Option(metavar="N", help="Fewest pretrained backbones a setting needs to be z-scored.")
    ] = 3,
    efficiency_suite: Annotated[
        list[str] | None,
        typer.Option(
            "--efficiency-suite",
            metavar="SUITE",
            help="Suites shown beside the board, never z-scored (repeatable; default: efficiency).",
        ),
    ] = None,
    pareto_y: Annotated[
        str,
        typer.Option(
            metavar="COLUMN",
            help="Accuracy axis of the accuracy-vs-MACs Pareto view: overall, suite:SUITE, z:SETTING or "
            "value:SETTING.",
        ),
    ] = "overall",
    pareto_cost: Annotated[
        str,
        typer.Option(
            metavar="SETTING",
            help="Efficiency setting whose GMACs are the Pareto view's cost, e.g. efficiency/224 "
            "(default: the one that measured the most backbones).",
        ),
    ] = "",
    top: Annotated[int, typer.Option(metavar="N", min=1, help="Rows printed to the terminal.")] = 20,
    group_by: Annotated[
        str | None,
        typer.Option(
            metavar="KEY", help="Also print a summary by family, method_class, pretrain_data or size."
        ),
    ] = None,
) -> None:
    """Rank backbones by BoB z-scores from the result files; write CSV, Markdown and HTML.

    Example: bob leaderboard --results-dir results/raw --out results --filter family=vit
    """
    from bob.cli_leaderboard import run_leaderboard

    code = run_leaderboard(
        results_dir,
        out,
        suite or [],
        filter_ or [],
        weighting,
        best_of or [],
        min_backbones,
        top,
        group_by,
        efficiency_suite or ["efficiency"],
        pareto_y=pareto_y,
        pareto_cost=pareto_cost,
    )
    raise typer.Exit(code)


from bob.cli_sweep import sweep as _sweep  # noqa: E402  (the command lives in its own module)

app.command(name="sweep")(_sweep)


def main() -> None:
    """Console-script entry point: BobErrors become one paragraph and their exit code."""
    try:
        code = app(standalone_mode=False)  # returns the code of a typer.Exit
    except BobError as err:
        if _STATE["debug"]:
            console().print_exception()
        from rich.text import Text

        console().print(Text.assemble(("error: ", "bold red"), str(err)), highlight=False)
        sys.exit(err.exit_code)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        console().print("interrupted; finished runs are saved, the interrupted one left nothing behind")
        sys.exit(130)
    except Exception as err:
        # Usage errors of the command-line parser (unknown option, missing value) show themselves and
        # carry exit code 2. typer vendors click, so they are recognised by shape, not by class.
        if callable(getattr(err, "show", None)) and isinstance(getattr(err, "exit_code", None), int):
            err.show()
            sys.exit(err.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
