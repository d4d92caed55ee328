"""`bob compare A B`: a paired comparison of two backbones on every setting both ran (bob/compare.py).

A thin layer: it parses the options, calls `bob.api.compare` (pandas and numpy, imported only
when the command runs, so `bob --help` stays light) and prints a table and a verdict sentence, or
JSON with `--json`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from bob.cli.options import RESULTS_DIR
from bob.console import console, stdout_console

if TYPE_CHECKING:
    from bob.compare import Comparison

Backbone = Annotated[
    str, typer.Argument(metavar="A|B", help="A backbone name, or a board row such as 'NAME [random]'.")
]
Tasks = Annotated[
    list[str] | None,
    typer.Option("--task", "-t", metavar="GLOB", help="Only these tasks or settings (globs, repeatable)."),
]
ResultsDir = Annotated[
    Path, typer.Option("--results-dir", metavar="DIR", help="Where the result JSON files are.")
]
Resamples = Annotated[int, typer.Option(metavar="N", min=50, help="Bootstrap resamples.")]
Seed = Annotated[int, typer.Option(metavar="N", help="Seed of the bootstrap draws.")]
Alpha = Annotated[
    float, typer.Option(metavar="A", help="Family-wise error rate (Holm) and 1 − interval level.")
]
BestOf = Annotated[
    list[str] | None,
    typer.Option("--best-of", metavar="ARG", help="Task arg to take the best value over (repeatable)."),
]
Json = Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")]


def compare(
    a: Backbone,
    b: Backbone,
    task: Tasks = None,
    results_dir: ResultsDir = RESULTS_DIR,
    resamples: Resamples = 1000,
    seed: Seed = 0,
    alpha: Alpha = 0.05,
    best_of: BestOf = None,
    json_: Json = False,
) -> None:
    """Compare two backbones setting by setting: paired differences with intervals, paired tests
    (McNemar for top-1, else paired bootstrap), Holm's correction, and a verdict.

    Example: bob compare torchvision/mobilenet_v2 'torchvision/mobilenet_v2 [random]' -t 'knn/*'
    """
    from bob import api  # the comparison reads result and per-sample files with pandas and numpy

    result = api.compare(
        a,
        b,
        results_dir,
        tasks=task or [],
        resamples=resamples,
        seed=seed,
        alpha=alpha,
        best_of=best_of or [],
    )
    if json_:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print_comparison(result)
    raise typer.Exit(0)


def _num(x: float, digits: int = 4, signed: bool = False) -> str:
    if x is None or math.isnan(x):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.2g}" if x >= 1e-4 else f"{x:.1e}"


def print_comparison(result: Comparison) -> None:
    level = f"{1 - result.alpha:.0%}"
    grid = Table(title=Text(f"A = {result.a}   B = {result.b}"), title_justify="left")
    for name in (
        "setting",
        "metric",
        "A",
        "B",
        "Δ (A − B)",
        f"{level} interval",
        "test",
        "p",
        f"p ({result.correction})",
        "verdict",
    ):
        grid.add_column(
            Text(name), justify="left" if name in {"setting", "metric", "test", "verdict"} else "right"
        )
    for s in result.settings:
        arrow = "↑" if s.higher_is_better else "↓"
        interval = (
            f"[{_num(s.ci_low, signed=True)}, {_num(s.ci_high, signed=True)}]"
            if not math.isnan(s.ci_low)
            else "–"
        )
        grid.add_row(
            Text(s.setting), f"{s.metric} {arrow}", _num(s.a), _num(s.b), _num(s.diff, signed=True), interval,
            s.test or "–", _p(s.p), _p(s.p_holm), Text(s.verdict + (f" ({s.note})" if s.note else "")),
        )  # fmt: skip
    stdout_console().print(grid)
    stdout_console().print(Text(result.verdict))
    console().print(
        Text(
            f"intervals: percentile bootstrap, {result.resamples} paired resamples of the test samples and seeds "
            f"(seed {result.seed}); tests: McNemar (exact) where both sides have one top-1 run on the same test "
            f"samples, else the paired bootstrap; {result.correction}'s correction across the {len(result.settings)} settings.",
            style="dim",
        ),
        highlight=False,
    )
