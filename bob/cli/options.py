"""Options that several commands share, as `Annotated` types, so each reads the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# Set by the app callback (`bob --debug ...`): tracebacks of failed runs and of bob's own errors.
STATE = {"debug": False}

BackboneArgs = Annotated[
    list[str] | None,
    typer.Option(
        "--backbone-arg", metavar="KEY=VALUE", help="Backbone constructor argument KEY=VALUE (repeatable)."
    ),
]
ResultsDir = Annotated[Path, typer.Option("--results-dir", metavar="DIR", help="Where result JSON files go.")]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        metavar="DIR",
        help="Feature cache (default: $BOB_CACHE_DIR/features or ~/.cache/bob/features).",
    ),
]
Device = Annotated[str, typer.Option("--device", metavar="DEVICE", help="auto | cpu | cuda | cuda:N | mps.")]
BatchSize = Annotated[
    int, typer.Option("--batch-size", metavar="N", min=1, help="Feature-extraction batch size.")
]
NumWorkers = Annotated[
    int | None,
    typer.Option(
        "--num-workers",
        metavar="N",
        min=0,
        help="Data-loader workers (default: half the cores, none on 2 or fewer).",
    ),
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Re-run and replace results that already exist.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Samples = Annotated[
    bool,
    typer.Option(
        "--samples/--no-samples",
        help="Store each run's per-sample outputs beside its result (the leaderboard's intervals need them).",
    ),
]

RESULTS_DIR = Path("results/raw")
