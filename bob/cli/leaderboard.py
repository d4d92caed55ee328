"""`bob leaderboard`: the command's options; `bob.cli.board` builds the board through `bob.api.leaderboard`
and prints its top to the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ResultFiles = Annotated[
    Path, typer.Option("--results-dir", metavar="DIR", help="Where the result JSON files are.")
]
Out = Annotated[Path, typer.Option("--out", metavar="DIR", help="Where leaderboard.{csv,md,html} go.")]
Suites = Annotated[
    list[str] | None, typer.Option("--suite", metavar="SUITE", help="Score only these suites (repeatable).")
]
Filters = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        metavar="KEY=GLOB",
        help="Show only matching backbones: family, method, data, size, backbone, weights (repeatable).",
    ),
]
Weighting = Annotated[
    str,
    typer.Option(
        metavar="suite|setting",
        help="Overall score: mean over suites (each weighs the same) or over settings.",
    ),
]
BestOf = Annotated[
    list[str] | None,
    typer.Option(
        "--best-of", metavar="ARG", help="Task arg to take the best value over, e.g. lr (repeatable)."
    ),
]
MinBackbones = Annotated[
    int, typer.Option(metavar="N", help="Fewest pretrained backbones a setting needs to be z-scored.")
]
EfficiencySuites = Annotated[
    list[str] | None,
    typer.Option(
        "--efficiency-suite",
        metavar="SUITE",
        help="Suites shown beside the board, never z-scored (repeatable; default: efficiency).",
    ),
]
ParetoY = Annotated[
    str,
    typer.Option(
        metavar="COLUMN",
        help="Accuracy axis of the accuracy-vs-MACs Pareto view: overall, suite:SUITE, z:SETTING or "
        "value:SETTING.",
    ),
]
ParetoCost = Annotated[
    str,
    typer.Option(
        metavar="SETTING",
        help="Efficiency setting whose GMACs are the Pareto view's cost, e.g. efficiency/224 "
        "(default: the one that measured the most backbones).",
    ),
]
Top = Annotated[int, typer.Option(metavar="N", min=1, help="Rows printed to the terminal.")]
Intervals = Annotated[
    bool,
    typer.Option(
        "--intervals/--no-intervals",
        help="Bootstrap intervals on every score and rank from the runs' per-sample files.",
    ),
]
Resamples = Annotated[int, typer.Option(metavar="N", min=50, help="Bootstrap resamples of the intervals.")]
Confidence = Annotated[float, typer.Option(metavar="LEVEL", help="Interval level, e.g. 0.95.")]
BootstrapSeed = Annotated[int, typer.Option(metavar="N", help="Seed of the bootstrap draws.")]
Preset = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="A named aggregation: bob = BoB's ranking as far as it can be reconstructed (task types of "
        "equal weight, best detection lr, mask AP, Sim10k under OOD; see docs/leaderboard.md).",
    ),
]
Plotly = Annotated[
    str,
    typer.Option(
        metavar="inline|cdn",
        help="How leaderboard.html gets plotly.js: inline (embedded, about 5 MB, works offline) or cdn "
        "(a script tag to plotly's CDN: a page of about 40 KB that needs a network for its plots).",
    ),
]
GroupBy = Annotated[
    str | None,
    typer.Option(metavar="KEY", help="Also print a summary by family, method_class, pretrain_data or size."),
]


def leaderboard(
    results_dir: ResultFiles = Path("results/raw"),
    out: Out = Path("results"),
    suite: Suites = None,
    filter_: Filters = None,
    weighting: Weighting = "suite",
    best_of: BestOf = None,
    min_backbones: MinBackbones = 3,
    efficiency_suite: EfficiencySuites = None,
    pareto_y: ParetoY = "overall",
    pareto_cost: ParetoCost = "",
    top: Top = 20,
    group_by: GroupBy = None,
    intervals: Intervals = True,
    resamples: Resamples = 1000,
    confidence: Confidence = 0.95,
    bootstrap_seed: BootstrapSeed = 0,
    preset: Preset = None,
    plotly: Plotly = "inline",
) -> None:
    """Rank backbones by BoB z-scores from the result files; write CSV, Markdown and HTML.

    Example: bob leaderboard --results-dir results/raw --out results --filter family=vit
    Example: bob leaderboard --preset bob
    Example: bob leaderboard --plotly cdn   (a small page that loads plotly.js from its CDN)
    """
    from bob.cli import board  # pandas, scipy and plotly: never needed by `bob --help`

    board.run_leaderboard(
        results_dir, out, suites=suite or [], filters=filter_ or [], weighting=weighting,
        best_of=best_of or [], min_backbones=min_backbones,
        efficiency_suites=efficiency_suite or ["efficiency"], pareto_y=pareto_y, pareto_cost=pareto_cost,
        group_by=group_by, top=top, intervals=intervals, resamples=resamples, confidence=confidence,
        bootstrap_seed=bootstrap_seed, preset=preset, plotly=plotly,
    )  # fmt: skip
    raise typer.Exit(0)
