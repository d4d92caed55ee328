"""Confidence intervals on every number of the board, by a paired, seeded percentile bootstrap.

Every resample b redraws the test units of every setting (the same draw for every run on that test
set, so backbones are compared on one and the same resampled test set) and the seeds of every cell,
then recomputes the board from the runs' per-sample files: raw scores, z-scores (against the
reference backbones' scores *in that resample*), suite scores, overall scores and ranks. The interval
of a number is the [α/2, 1 − α/2] percentiles of its B values (percentile bootstrap, not BCa: BCa's
jackknife would re-evaluate COCO AP once per test image). Point estimates stay those of the board.

Where a run has no usable per-sample file the board says so instead of showing an interval, and the
gap propagates: a setting whose reference backbones are not all resampled has no z intervals; a
backbone whose scores rest on such a setting has no suite or overall interval; rank ranges need
every ranked backbone's overall score resampled.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bob.leaderboard.aggregate import Board
from bob.leaderboard.replicate_store import ReplicateStore
from bob.leaderboard.replicates import (
    cell_candidates,
    cell_replicates,
    load_run_samples,
    run_replicates,
)

METHOD = "percentile bootstrap"
MAX_LISTED = 20  # runs without an interval listed by name in the Markdown and HTML
ADJACENT_COLUMNS = ["position", "a", "b", "diff", "ci_low", "ci_high", "distinguishable"]
Cell = tuple[str, str]  # (backbone key, setting)


@dataclass
class Intervals:
    """What the intervals rest on; the interval columns themselves are added to the board's tables."""

    resamples: int
    confidence: float
    seed: int
    runs_with_samples: int = 0
    runs_without: dict[str, str] = field(default_factory=dict)  # run id → reason
    notes: list[str] = field(default_factory=list)
    cells: dict[Cell, np.ndarray] = field(default_factory=dict)  # score units (higher is better)
    overall: dict[str, np.ndarray] = field(default_factory=dict)  # backbone → overall-score replicates
    adjacent: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ADJACENT_COLUMNS))
    seconds: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"{self.confidence:.0%} intervals: {METHOD}, {self.resamples} resamples (seed {self.seed}) of the "
            "test samples (the same resample for every backbone on a test set: paired) and of each cell's "
            "seeds; z-scores, suite and overall scores and ranks recomputed in every resample."
        )

    def missing(self, limit: int = MAX_LISTED) -> tuple[dict[str, int], list[str]]:
        """Why runs have no interval, with counts, and the first `limit` such run ids (the long CSV's
        `samples` column lists every one)."""
        reasons: dict[str, int] = {}
        for why in self.runs_without.values():
            reasons[why] = reasons.get(why, 0) + 1
        return reasons, list(self.runs_without)[:limit]

    @property
    def any(self) -> bool:
        """Whether any cell of the board has replicates (else there is nothing to draw or compare)."""
        return bool(self.cells)

    @property
    def distinguishable(self) -> tuple[int, int]:
        """(adjacent ranked pairs whose overall-score difference has an interval excluding 0, pairs)."""
        return int(self.adjacent["distinguishable"].astype(bool).sum()), len(self.adjacent)


def bounds(reps: np.ndarray | None, confidence: float) -> tuple[float, float]:
    """The percentile interval of the finite replicates (NaN where there are none)."""
    if reps is None:
        return np.nan, np.nan
    finite = reps[np.isfinite(reps)]
    if len(finite) == 0:
        return np.nan, np.nan
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _add(frame: pd.DataFrame, columns: dict[str, list[float] | np.ndarray]) -> pd.DataFrame:
    new = pd.DataFrame(columns, index=frame.index)
    return pd.concat([frame.drop(columns=[c for c in new.columns if c in frame.columns]), new], axis=1)


def _run_columns(board: Board, status: dict[str, str], reps: dict[str, np.ndarray], level: float) -> None:
    pairs = [bounds(reps.get(i), level) for i in board.runs["id"]]
    board.runs = _add(
        board.runs,
        {
            "value_ci_low": [p[0] for p in pairs],
            "value_ci_high": [p[1] for p in pairs],
            "samples": [status.get(i, "") for i in board.runs["id"]],
        },
    )


def _cell_columns(board: Board, reps: dict[str, np.ndarray], out: Intervals) -> None:
    """Per cell its replicates (score units) and value interval (metric units), or why not."""
    candidates = cell_candidates(board.runs)
    low, high, notes = [], [], []
    for key, hib in zip(
        zip(board.cells["backbone_key"], board.cells["setting"], strict=True),
        board.cells["higher_is_better"],
        strict=True,
    ):
        cell, note = cell_replicates(candidates[key], bool(hib), key[0], reps, out.resamples, out.seed)
        notes.append("" if cell is not None else note)
        if cell is not None:
            out.cells[key] = cell
        a, b = bounds(None if cell is None else (cell if hib else -cell), out.confidence)
        low.append(a)
        high.append(b)
    board.cells = _add(board.cells, {"value_ci_low": low, "value_ci_high": high, "ci_note": notes})


def _zscores(board: Board, out: Intervals) -> dict[Cell, np.ndarray]:
    """z replicates of the cells of every z-scored setting whose reference cells are all resampled."""
    random = set(board.table.loc[board.table["is_random"], "backbone_key"])
    cells = board.cells
    keys = list(zip(cells["backbone_key"], cells["setting"], strict=True))
    z_reps: dict[Cell, np.ndarray] = {}
    for setting in board.settings.loc[board.settings["zscored"], "setting"]:
        members = [k for k in keys if k[1] == setting]
        reference = [k for k in members if k[0] not in random]
        lacking = [k for k in reference if k not in out.cells]
        if lacking:
            out.notes.append(
                f"{setting}: no z-score intervals; {len(lacking)} reference backbone(s) have no per-sample files"
            )
            continue
        ref = np.stack([out.cells[k] for k in reference])
        mu, sd = ref.mean(axis=0), ref.std(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z_reps.update({k: (out.cells[k] - mu) / sd for k in members if k in out.cells})
    pairs = [bounds(z_reps.get(k), out.confidence) for k in keys]
    board.cells = _add(cells, {"z_ci_low": [p[0] for p in pairs], "z_ci_high": [p[1] for p in pairs]})
    return z_reps


def _mean_or_none(parts: list[np.ndarray | None]) -> np.ndarray | None:
    return np.mean(parts, axis=0) if parts and all(p is not None for p in parts) else None


def _score_columns(board: Board, z_reps: dict[Cell, np.ndarray], out: Intervals) -> None:
    """Suite and overall intervals per backbone, the per-setting value and z columns, rank ranges."""
    scored = board.cells[board.cells["z"].notna()]
    settings_of = scored.groupby(["backbone_key", "suite"], sort=True)["setting"].apply(list)
    columns: dict[str, list[float]] = {}
    suites = [c[len("suite:") :] for c in board.table.columns if c.startswith("suite:")]
    for key in board.table["backbone_key"]:
        per_suite = {
            s: _mean_or_none([z_reps.get((key, t)) for t in settings_of.get((key, s), [])])
            for s in suites
            if (key, s) in settings_of.index
        }
        if board.options.weighting == "suite":
            overall = _mean_or_none(list(per_suite.values()))
        else:
            overall = _mean_or_none([z_reps.get((key, t)) for s in per_suite for t in settings_of[(key, s)]])
        if overall is not None:
            out.overall[key] = overall
        for name, reps in [("overall", overall), *((f"suite:{s}", per_suite.get(s)) for s in suites)]:
            low, high = bounds(reps, out.confidence)
            columns.setdefault(f"{name}_ci_low", []).append(low)
            columns.setdefault(f"{name}_ci_high", []).append(high)
    for kind in ("value", "z"):
        for bound in ("low", "high"):
            wide = board.cells.pivot(index="backbone_key", columns="setting", values=f"{kind}_ci_{bound}")
            for setting in wide.columns:
                columns[f"{kind}:{setting}_ci_{bound}"] = (
                    board.table["backbone_key"].map(wide[setting]).tolist()
                )
    board.table = _add(board.table, columns)
    _ranks(board, out)


def _ranks(board: Board, out: Intervals) -> None:
    """rank_low/rank_high: the range of each ranked backbone's position over the resamples, and the
    paired difference of every two neighbours on the board."""
    table = board.table
    # Positions follow the overall score: without one (no z-scored setting yet) there is nothing to range.
    ranked = table.loc[(table["standing"] == "ranked") & table["overall"].notna(), "backbone_key"].tolist()
    low = high = np.full(len(ranked), np.nan)
    lacking = [k for k in ranked if k not in out.overall]
    if lacking:
        out.notes.append(f"no rank ranges: {len(lacking)} ranked backbone(s) have no overall-score interval")
    elif ranked:
        reps = np.stack([out.overall[k] for k in ranked])  # [backbones, B]
        ranks = 1 + (reps[None, :, :] > reps[:, None, :]).sum(axis=1)  # ties share the better position
        alpha = (1.0 - out.confidence) / 2
        low, high = (
            np.floor(np.quantile(ranks, alpha, axis=1)),
            np.ceil(np.quantile(ranks, 1 - alpha, axis=1)),
        )
        overall = dict(zip(table["backbone_key"], table["overall"], strict=True))
        rows = []
        for pos, (a, b) in enumerate(itertools.pairwise(ranked), start=1):
            lo, hi = bounds(out.overall[a] - out.overall[b], out.confidence)
            rows.append([pos, a, b, overall[a] - overall[b], lo, hi, bool(lo > 0 or hi < 0)])
        out.adjacent = pd.DataFrame(rows, columns=ADJACENT_COLUMNS)
    position = dict(zip(ranked, zip(low, high, strict=True), strict=True))
    board.table = _add(
        table,
        {
            "rank_low": [position.get(k, (np.nan, np.nan))[0] for k in table["backbone_key"]],
            "rank_high": [position.get(k, (np.nan, np.nan))[1] for k in table["backbone_key"]],
        },
    )


def compute_intervals(board: Board, results_dir: Path, cache_dir: Path | None) -> Intervals:
    """Add the interval columns to `board`'s runs, cells and table; return what they rest on."""
    options = board.options
    out = Intervals(options.resamples, options.confidence, options.bootstrap_seed)
    t = time.perf_counter()
    store = ReplicateStore(cache_dir, out.resamples, out.seed)
    # Efficiency runs measure cost, not a test set: they have no samples to resample, and no interval is owed.
    scored = board.runs[~board.runs["suite"].isin(options.efficiency_suites)]
    samples = load_run_samples(scored, results_dir, store)
    out.seconds["read"] = time.perf_counter() - t
    out.runs_with_samples = len(samples.sets) + len(samples.cached)
    out.runs_without = {i: s for i, s in samples.status.items() if s != "ok"}
    t = time.perf_counter()
    reps = run_replicates(samples, out.resamples, out.seed, store)
    out.seconds["resample"] = time.perf_counter() - t
    t = time.perf_counter()
    _run_columns(board, samples.status, reps, out.confidence)
    _cell_columns(board, reps, out)
    z_reps = _zscores(board, out)
    _score_columns(board, z_reps, out)
    out.seconds["combine"] = time.perf_counter() - t
    return out
