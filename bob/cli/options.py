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

GpusPerRun = Annotated[
    int,
    typer.Option(
        "--gpus-per-run",
        metavar="N",
        min=1,
        help="Train each run data-parallel on N devices (one process per device, torch's elastic launcher; "
        "N CPU processes with gloo without CUDA). Fine-tuning suites only; not part of the run id.",
    ),
]

Nodes = Annotated[
    int,
    typer.Option(
        "--nodes",
        metavar="M",
        min=1,
        help="With --gpus-per-run N: the run spans M nodes, N ranks on each. Run the same command on "
        "every node with --rdzv-endpoint, or once under `srun -N M --ntasks-per-node N`.",
    ),
]
RdzvEndpoint = Annotated[
    str | None,
    typer.Option(
        "--rdzv-endpoint",
        metavar="HOST:PORT",
        help="With --nodes M: where the nodes' launchers meet (torchrun's c10d rendezvous), a free port "
        "on one of them that every node reaches.",
    ),
]

Pipeline = Annotated[
    str,
    typer.Option(
        "--pipeline",
        metavar="pil|tensor",
        help="Image pipeline: pil (PIL decode and resize, the reference) or tensor (torchvision.io decode, "
        "uint8 tensor resize). Not pil: a backbone arg of the run (its own run id).",
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        "--precision",
        metavar="fp32|bf16|fp16",
        help="Precision of the extraction forward (autocast); fp16 needs a GPU. Not fp32: a backbone arg "
        "of the run (its own run id).",
    ),
]
ChannelsLast = Annotated[
    bool,
    typer.Option(
        "--channels-last", help="Extract with channels_last inputs and weights (a backbone arg of the run)."
    ),
]
GeometryCache = Annotated[
    Path | None,
    typer.Option(
        "--geometry-cache",
        metavar="DIR",
        help="Store decoded pixels in DIR once per (split, eval geometry) and let every backbone with that "
        "geometry read them instead of decoding again. Features are unchanged.",
    ),
]
Limit = Annotated[
    int | None,
    typer.Option(
        "--limit",
        metavar="N",
        min=1,
        help="At most N samples per split for a quick run: a seeded draw, stratified by label where "
        "samples have one class (the task arg limit=N, part of the run id).",
    ),
]
Trackers = Annotated[
    list[str] | None,
    typer.Option(
        "--tracker",
        metavar="mlflow|wandb",
        help="Also log every run to an experiment tracker (repeatable; $BOB_TRACKERS adds to it): "
        "mlflow ($MLFLOW_TRACKING_URI, default ./mlruns) or wandb ($WANDB_PROJECT, default bob). "
        "See docs/trackers.md.",
    ),
]
