"""The dg protocol: every domain split once, a model per source domain, the source × target matrix."""

from __future__ import annotations

from typing import Any

import numpy as np

from bob.context import RunContext
from bob.progress import progress_bar
from bob.samples import SampleSet, make_samples
from bob.task import TaskOutput
from bob.tasks.common.samples import save_samples
from bob.tasks.dg import Dg
from bob.tasks.dg.data import Domains, load_domains
from bob.tasks.dg.matrix import summarise_matrix
from bob.tasks.dg.train import finetune_source, linear_source


def run(task: Dg, ctx: RunContext) -> TaskOutput:
    args = task.args
    domains, sources = load_domains(ctx, args.sources, args.holdout_fraction)
    names = list(domains.splits)
    train_on = finetune_source if args.mode == "finetune" else linear_source
    matrix: dict[str, dict[str, float]] = {}
    per_source: dict[str, dict[str, Any]] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    with progress_bar(f"dg on {ctx.dataset}", len(sources), "sources") as bar:
        for source in sources:
            matrix[source], per_source[source], preds[source] = train_on(ctx, args, domains, source)
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
    output = TaskOutput(summarise_matrix(matrix), protocol)
    return save_samples(ctx, output, matrix_samples(domains, preds))


def matrix_samples(domains: Domains, preds: dict[str, dict[str, np.ndarray]]) -> SampleSet:
    """The per-image file of `top1_target`: units are the images of every domain (stratified by
    domain); each off-diagonal cell (source, target) holds the source model's prediction on every
    image of the target, and weighs 1 / (sources × the source's targets), as the summary averages."""
    names = list(domains.splits)
    offsets = np.cumsum([0] + [len(domains.splits[d]) for d in names])
    pred, label, unit, cell, coef, cells = [], [], [], [], [], []
    for source, row in preds.items():
        for target, p in row.items():
            start = offsets[names.index(target)]
            pred.append(p)
            label.append(domains.splits[target].labels)
            unit.append(np.arange(start, start + len(p)))
            cell.append(np.full(len(p), len(cells)))
            coef.append(1.0 / (len(preds) * len(row)))
            cells.append(f"{source}->{target}")
    stratum = np.concatenate([np.full(len(domains.splits[d]), i) for i, d in enumerate(names)])
    arrays = {
        "pred": np.concatenate(pred).astype(np.int32),
        "label": np.concatenate(label).astype(np.int32),
        "unit": np.concatenate(unit).astype(np.int32),
        "cell": np.concatenate(cell).astype(np.int32),
        "stratum": stratum.astype(np.int16),
    }
    truth = tuple(domains.splits[d].labels for d in names)
    params = {"n_units": int(offsets[-1]), "coef": coef, "cells": cells}
    return make_samples("top1", "top1_target", arrays, units="image", truth=truth, params=params)
