"""`bob check`: run `bob.api.check` and print one row per check; exit 1 on any failed check, 2 on bad
input (an unknown name, a factory its file does not define) found before any check ran."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from bob.cli.options import BackboneArgs
from bob.console import stdout_console

if TYPE_CHECKING:
    from bob.check import CheckResult

_STYLE = {"pass": ("PASS", "green"), "fail": ("FAIL", "bold red"), "skip": ("skip", "yellow")}


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
    backbone_arg: BackboneArgs = None,
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
    from bob import api  # torch and the suites: never needed by `bob --help`

    results = api.check(backbone, weights, backbone_arg or [], image_size=image_size, suites=suites)
    raise typer.Exit(print_checks(f"bob check {backbone} [{weights}]", results))


def print_checks(title: str, results: list[CheckResult]) -> int:
    """The checks as a table and the verdict; returns the exit code (1 when any check failed)."""
    # Text, not str: the title holds user input (`--weights /abs/path.pth` reads `[/abs/path.pth]`),
    # which rich would parse as markup and fail on after every check has run.
    table = Table(title=Text(title), title_justify="left")
    for col in ("check", "result", "detail", "time"):
        table.add_column(col, overflow="fold")
    for r in results:
        label, style = _STYLE[r.status]
        table.add_row(r.name, Text(label, style=style), Text(r.detail), f"{r.seconds:.1f}s")
    out = stdout_console()
    out.print(table)
    failed = [r.name for r in results if r.status == "fail"]
    if failed:
        out.print(
            Text(f"FAILED: {', '.join(failed)}. Fix these before submitting results.", style="bold red")
        )
        return 1
    out.print(Text("All checks passed: this backbone can join the benchmark.", style="green"))
    return 0
