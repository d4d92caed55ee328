"""The dg protocol: every domain split once, a model per source domain, the source × target matrix."""

from __future__ import annotations

from typing import Any

from bob.context import RunContext
from bob.progress import progress_bar
from bob.task import TaskOutput
from bob.tasks.dg import Dg
from bob.tasks.dg.data import load_domains
from bob.tasks.dg.matrix import summarise_matrix
from bob.tasks.dg.train import finetune_source, linear_source


def run(task: Dg, ctx: RunContext) -> TaskOutput:
    args = task.args
    domains, sources = load_domains(ctx, args.sources, args.holdout_fraction)
    names = list(domains.splits)
    train_on = finetune_source if args.mode == "finetune" else linear_source
    matrix: dict[str, dict[str, float]] = {}
    per_source: dict[str, dict[str, Any]] = {}
    with progress_bar(f"dg on {ctx.dataset}", len(sources), "sources") as bar:
        for source in sources:
            matrix[source], per_source[source] = train_on(ctx, args, domains, source)
            bar.advance(1)
    protocol: dict[str, Any] = {
        "mode": args.mode,
        "domains": names,
        "sources": sources,
        "matrix": matrix,
        "matrix_layout": "matrix[source][target] = top-1; diagonal = the source's held-out part",
        "targets_scored_on": "the whole target domain (Dassl's 'all'); the source on its held-out part",
        "averaging": "mean over targets per source, then mean over sources",
        "holdout_fraction": args.holdout_fraction,
        "split": f"stratified per domain and class, seed {ctx.seed} (no official split files)",
        "num_images": {d: len(s) for d, s in domains.splits.items()},
        "num_train": {d: len(domains.parts[d][0]) for d in names},
        "num_held_out": {d: len(domains.parts[d][1]) for d in names},
        "per_source": per_source,
    }
    return TaskOutput(summarise_matrix(matrix), protocol)
