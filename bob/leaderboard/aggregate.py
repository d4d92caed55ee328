"""The long table → BoB-style board: settings, seed means, z-scores, per-suite and overall scores, ranks.

Conventions (printed with every board and documented in docs/leaderboard.md):

- A *setting* is a task name plus the task args that vary between the runs of that task in the
  results dir (so four detection learning rates are four settings), or with `best_of` those args are
  collapsed: each backbone keeps its best value over them ("best of grid").
- A cell (backbone × setting) is the mean over seeds of the main metric; lower-is-better metrics are
  negated into a *score* so that higher is always better.
- z = (score − μ_s) / σ_s, μ_s and σ_s (population std, ddof = 0, as `scipy.stats.zscore`) over the
  reference backbones of the setting: every pretrained backbone with a result in it (random-init
  baselines are scored against that reference but do not move it). A setting with fewer than
  `min_backbones` reference backbones, or no spread, is not z-scored and is marked.
- Per-suite score = mean z over the suite's settings the backbone covers; overall = mean over suites
  (each suite weighs the same) or, with weighting="setting", the mean over all its z-scored settings.
- Rank in a setting = 1 + number of reference backbones strictly better + half the ties; mean rank
  over the covered settings. A backbone that misses z-scored settings is flagged `incomplete`; one
  with no z-scored setting at all is `unranked` (listed with its raw scores, without a position).
- With a preset (presets.py, e.g. `bob`), the runs are regrouped first: the board's groups are the
  preset's task types instead of the suites, its best-of args apply per suite, and its extra metrics
  become settings of their own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bob.errors import UsageError
from bob.leaderboard.load import LoadedResults
from bob.leaderboard.pareto_view import check_y, pareto_frame
from bob.leaderboard.presets import describe, get_preset, regroup, task_args_best_of

if TYPE_CHECKING:
    from bob.leaderboard.intervals import Intervals

WEIGHTINGS = ("suite", "setting")
MIN_RESAMPLES = 50
MERGE_KEYS = ["task", "task_version", "task_args", "main_metric", "higher_is_better"]
SMALL_PARAMS = 30e6  # BoB's "small" backbones have fewer than 30M parameters
BACKBONE_COLUMNS = [
    "backbone",
    "weights",
    "backbone_args",
    "family",
    "method",
    "pretrain_data",
    "params",
    "is_random",
]


@dataclass(frozen=True)
class BoardOptions:
    weighting: str = "suite"
    best_of: tuple[str, ...] = ()
    min_backbones: int = 3
    suites: tuple[str, ...] = ()
    # Suites that measure cost, not quality (#7's efficiency results): shown beside the board, never z-scored.
    efficiency_suites: tuple[str, ...] = ("efficiency",)
    # The accuracy-vs-MACs Pareto view: the board column on y (`overall` falls back to a raw score
    # while nothing is z-scored: see `Board.pareto_y`), the efficiency setting whose GMACs are x.
    pareto_y: str = "overall"
    pareto_cost: str = ""
    # Confidence intervals from the runs' per-sample files (bob/leaderboard/intervals.py).
    intervals: bool = True
    resamples: int = 1000
    confidence: float = 0.95
    bootstrap_seed: int = 0
    # A named aggregation (bob.leaderboard.presets): "" is the default board.
    preset: str = ""

    def __post_init__(self) -> None:
        get_preset(self.preset)  # an unknown name is a usage error here, before any file is read
        if self.weighting not in WEIGHTINGS:
            raise UsageError(f"--weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}.")
        if self.min_backbones < 2:
            raise UsageError(
                f"--min-backbones must be at least 2 (a z-score needs a spread), got {self.min_backbones}."
            )
        if self.resamples < MIN_RESAMPLES:
            raise UsageError(
                f"--resamples must be at least {MIN_RESAMPLES} (percentile intervals need a tail), got {self.resamples}."
            )
        if not 0.5 <= self.confidence < 1:
            raise UsageError(f"--confidence must be in [0.5, 1), e.g. 0.95; got {self.confidence}.")

    def convention(self) -> str:
        preset = get_preset(self.preset)
        group = "task-type" if preset else "suite"
        overall = (
            f"overall = mean of the {group} scores (each {group.replace('-', ' ')} weighs the same)"
            if preset and self.weighting == "suite"
            else "overall = mean of the per-suite scores (each suite weighs the same)"
            if self.weighting == "suite"
            else "overall = mean z over all z-scored settings (each setting weighs the same)"
        )
        best = f"; best of grid over {', '.join(self.best_of)}" if self.best_of else ""
        if preset:
            best += "".join(f"; best of grid over {', '.join(a)} in {s}" for s, a in preset.best_of)
            best += f"; {describe(preset)}"
        intervals = (
            f" [lo, hi]: {self.confidence:.0%} percentile-bootstrap interval ({self.resamples} paired resamples of "
            f"test samples and seeds, seed {self.bootstrap_seed}); (a–b): the range of a rank."
            if self.intervals
            else " No intervals (turned off)."
        )
        return (
            "z = (score − mean) / std (ddof=0) per task setting over pretrained backbones with a result "
            f"(settings with < {self.min_backbones} are not z-scored); lower-is-better metrics negated; "
            f"seeds averaged first; {group} score = mean z over its settings; {overall}{best}.{intervals}"
        )


@dataclass
class Board:
    options: BoardOptions
    runs: pd.DataFrame  # long table of ok runs (efficiency ones included), with `setting`
    failed: pd.DataFrame
    settings: pd.DataFrame  # one row per setting
    cells: pd.DataFrame  # one row per backbone × setting
    table: pd.DataFrame  # one row per backbone: the board
    suites: list[str] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)
    efficiency: pd.DataFrame = field(default_factory=pd.DataFrame)  # backbone × efficiency setting
    intervals: Intervals | None = None  # set by the build when intervals are on
    preset_notes: list[str] = field(default_factory=list)  # what a preset left off or added

    @property
    def group_label(self) -> str:
        """What the board averages over before the overall score: suites, or a preset's task types."""
        return "task type" if self.options.preset else "suite"

    def preset_text(self) -> tuple[str, list[str], list[str]]:
        """(heading, the preset's reconstructed choices, what it left off or added); empty without one."""
        preset = get_preset(self.options.preset)
        if preset is None:
            return "", [], []
        return f"Preset {preset.name}: {preset.summary}", list(preset.choices), list(self.preset_notes)

    @property
    def pareto_y(self) -> str:
        """The Pareto view's accuracy column: `options.pareto_y`, except that `overall` while no row has
        an overall score (nothing z-scored yet) becomes the raw score (`value:<setting>`) of the setting
        most backbones ran (ties: the first in sorted order), so such a board still plots accuracy vs MACs."""
        if self.options.pareto_y != "overall":
            return self.options.pareto_y
        if self.table["overall"].notna().any() or self.settings.empty:
            return "overall"
        most = self.settings.sort_values("setting").sort_values("n_backbones", ascending=False, kind="stable")
        return f"value:{most['setting'].iloc[0]}"

    def pareto(self, table: pd.DataFrame) -> pd.DataFrame:
        """GMACs vs `pareto_y` for the backbones of `table`, with the Pareto front marked."""
        eff_runs = self.runs[self.runs["suite"].isin(self.options.efficiency_suites)]
        return pareto_frame(table, eff_runs, self.settings, self.pareto_y, self.options.pareto_cost)

    def unranked_note(self, table: pd.DataFrame) -> str:
        """One line on why the rows of `table` without a position have none; "" when every row has one
        (or is a random-init baseline)."""
        unranked = int((table["standing"] == "unranked").sum())
        if not unranked:
            return ""
        most = int(self.settings["n_reference"].max()) if len(self.settings) else 0
        need = self.options.min_backbones
        scored = int(self.settings["zscored"].sum()) if len(self.settings) else 0
        why = (
            f"no setting has results from {need} or more pretrained backbones (the most is {most})"
            if not scored
            else f"none of the {scored} z-scored setting(s) is among its results"
        )
        return (
            f"{unranked} row(s) unranked: a position needs a z-score, and a setting is z-scored only when at "
            f"least {need} pretrained backbones (--min-backbones) have a result in it; {why}. "
            "Their raw scores are listed per setting."
        )


def _setting_labels(frame: pd.DataFrame, options: BoardOptions) -> pd.DataFrame:
    """Map each (task, task_version, task_args) to its setting label and its full (un-collapsed) label."""
    combos = frame[MERGE_KEYS].drop_duplicates()
    preset = get_preset(options.preset)
    out = []
    for task, group in combos.groupby("task", sort=True):
        best_of = task_args_best_of(str(task), preset, options.best_of)
        # Version and main metric are part of a setting's identity: runs that disagree on them are
        # not comparable, so they become separate settings rather than one mixed column.
        parsed = [
            {**json.loads(a), "@version": v, "@metric": m if h else f"-{m}"}
            for a, v, m, h in zip(
                group["task_args"],
                group["task_version"],
                group["main_metric"],
                group["higher_is_better"],
                strict=True,
            )
        ]
        keys = sorted({k for p in parsed for k in p})
        varying = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in parsed}) > 1]
        for (_, row), p in zip(group.iterrows(), parsed, strict=True):

            def label(ks: list[str], p: dict[str, Any] = p, task: str = str(task)) -> str:
                parts = [f"{k.lstrip('@')}={_fmt(p.get(k))}" for k in ks]
                return f"{task} [{', '.join(parts)}]" if parts else task

            out.append(
                {
                    **{k: row[k] for k in MERGE_KEYS},
                    "setting": label([k for k in varying if k not in best_of]),
                    "setting_full": label(varying),
                }
            )
    return pd.DataFrame(out, columns=[*MERGE_KEYS, "setting", "setting_full"])


def _fmt(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _with_settings(frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    return frame.merge(labels, on=MERGE_KEYS, how="left")


def _cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Seeds → mean ± std per backbone × full setting, then best of grid per backbone × setting."""
    keys = ["backbone_key", "setting", "setting_full", "suite", "task", "main_metric", "higher_is_better"]
    grouped = runs.groupby(keys, sort=False)["value"]
    cells = grouped.agg(mean="mean", std="std", n_seeds="count").reset_index()
    cells["score"] = np.where(cells["higher_is_better"], cells["mean"], -cells["mean"])
    cells = cells.sort_values("score", ascending=False, kind="stable")
    cells = cells.drop_duplicates(["backbone_key", "setting"], keep="first")
    return cells.rename(columns={"setting_full": "chosen"}).reset_index(drop=True)


def _zscore(
    cells: pd.DataFrame, reference: pd.Series, min_backbones: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    cells = cells.copy()
    cells["z"], cells["rank"] = np.nan, np.nan
    rows = []
    for setting, idx in cells.groupby("setting", sort=True).groups.items():
        part = cells.loc[idx]
        ref = part.loc[reference.loc[idx].to_numpy(), "score"].to_numpy()
        mu, sd = (float(ref.mean()), float(ref.std(ddof=0))) if len(ref) else (math.nan, math.nan)
        note = ""
        if len(ref) < min_backbones:
            note = f"not z-scored: {len(ref)} pretrained backbone(s) < {min_backbones}"
        elif not sd > 0:
            note = "not z-scored: every backbone has the same score"
        else:
            score = part["score"].to_numpy()
            cells.loc[idx, "z"] = (score - mu) / sd
            better = (ref[None, :] > score[:, None]).sum(axis=1)
            ties = (ref[None, :] == score[:, None]).sum(axis=1) - reference.loc[idx].to_numpy()
            cells.loc[idx, "rank"] = 1 + better + 0.5 * ties
        first = part.iloc[0]
        sign = 1.0 if first["higher_is_better"] else -1.0
        rows.append(
            {
                "setting": setting,
                "suite": first["suite"],
                "task": first["task"],
                "main_metric": first["main_metric"],
                "higher_is_better": bool(first["higher_is_better"]),
                "n_backbones": len(part),
                "n_reference": len(ref),
                "mean": sign * mu,  # in the metric's own units (not negated)
                "std": sd,
                "zscored": not note,
                "note": note,
            }
        )
    columns = ["setting", "suite", "task", "main_metric", "higher_is_better", "n_backbones", "n_reference"]
    return cells, pd.DataFrame(rows, columns=[*columns, "mean", "std", "zscored", "note"])


def _backbone_table(
    runs: pd.DataFrame, cells: pd.DataFrame, settings: pd.DataFrame, weighting: str
) -> pd.DataFrame:
    meta = runs.groupby("backbone_key", sort=False)[BACKBONE_COLUMNS].first()
    scored = cells[cells["z"].notna()]
    per_suite = scored.groupby(["backbone_key", "suite"])["z"].mean().unstack("suite")
    table = meta.join(per_suite.add_prefix("suite:"))
    if weighting == "suite":
        table["overall"] = per_suite.mean(axis=1)
    else:
        table["overall"] = scored.groupby("backbone_key")["z"].mean()
    table["mean_rank"] = scored.groupby("backbone_key")["rank"].mean()
    n_total = int(settings["zscored"].sum()) if len(settings) else 0
    table["covered"] = scored.groupby("backbone_key")["z"].count().reindex(table.index).fillna(0).astype(int)
    table["n_settings"] = n_total
    # A preset's extra-metric rows share their run's file: count files, not rows.
    table["n_runs"] = runs.drop_duplicates("path").groupby("backbone_key").size()
    table["size"] = np.where(
        table["params"].isna(), "unknown", np.where(table["params"] < SMALL_PARAMS, "small", "large")
    )
    # A position needs at least one z-score: a row without any (no setting reached `min_backbones`
    # pretrained backbones) is listed unranked, never `#1` of nothing.
    table["standing"] = np.select(
        [table["is_random"], table["covered"] == 0, table["covered"] < n_total],
        ["baseline", "unranked", "incomplete"],
        "ranked",
    )
    for kind, col in (("z", "z"), ("value", "mean"), ("std", "std"), ("seeds", "n_seeds")):
        wide = cells.pivot(index="backbone_key", columns="setting", values=col)
        table = table.join(wide.add_prefix(f"{kind}:"))
    order = {"ranked": 0, "incomplete": 1, "unranked": 2, "baseline": 3}
    table = table.assign(_o=table["standing"].map(order), _s=-table["overall"].fillna(-np.inf))
    table = table.sort_values(["_o", "_s", "mean_rank"], kind="stable").drop(columns=["_o", "_s"])
    table.insert(0, "position", np.where(table["standing"] == "ranked", np.arange(1, len(table) + 1), 0))
    return table.reset_index()


# The cost metrics an efficiency view shows beside each setting's main metric, when results carry them.
COST_METRICS = (
    "gmacs",
    "latency_ms",
    "latency_p90_ms",
    "throughput_img_s",
    "train_step_ms",
    "peak_mem_mb",
    "train_peak_mem_mb",
    "energy_j_per_img",
)


def _efficiency(runs: pd.DataFrame) -> pd.DataFrame:
    """Seed means of each efficiency setting's main metric, then of the cost metrics its results carry,
    one row per backbone (columns `<setting> (<metric>)`)."""
    if runs.empty:
        return pd.DataFrame()
    cells = runs.groupby(["backbone_key", "setting", "main_metric"], sort=True)["value"].mean().reset_index()
    cells["column"] = cells["setting"] + " (" + cells["main_metric"] + ")"
    frames = [cells[["backbone_key", "setting", "column", "value"]].assign(order=-1)]
    for order, metric in enumerate(COST_METRICS):
        column = f"metric:{metric}"
        if column not in runs.columns:
            continue
        extra = runs[runs[column].notna() & (runs["main_metric"] != metric)]
        extra = extra.groupby(["backbone_key", "setting"], sort=True)[column].mean().reset_index()
        extra = extra.rename(columns={column: "value"})
        frames.append(extra.assign(column=extra["setting"] + f" ({metric})", order=order))
    long = pd.concat(frames, ignore_index=True)
    order = long.drop_duplicates("column").sort_values(["setting", "order"], kind="stable")["column"]
    wide = long.pivot(index="backbone_key", columns="column", values="value")[list(order)]
    wide.columns.name = None
    params = runs.groupby("backbone_key")["params"].first()
    return wide.join(params).reset_index()


def build_board(loaded: LoadedResults, options: BoardOptions | None = None) -> Board:
    """The board of every ok run in `loaded` (optionally only `options.suites`)."""
    options = options or BoardOptions()
    runs, failed = loaded.runs, loaded.failed
    if options.suites:
        known = set(runs["suite"]) | set(failed["suite"])
        unknown = [s for s in options.suites if s not in known]
        if unknown:
            raise UsageError(
                f"No results for suite(s) {', '.join(unknown)}; the results have: {', '.join(sorted(known)) or 'none'}."
            )
        runs, failed = runs[runs["suite"].isin(options.suites)], failed[failed["suite"].isin(options.suites)]
    preset, notes = get_preset(options.preset), []
    if preset is not None:  # efficiency results stay beside the board, as on the default one
        cost, cost_failed = (
            runs["suite"].isin(options.efficiency_suites),
            failed["suite"].isin(options.efficiency_suites),
        )
        regrouped = regroup(preset, runs[~cost], failed[~cost_failed])
        runs = pd.concat([regrouped.runs, runs[cost]], ignore_index=True)
        failed = pd.concat([regrouped.failed, failed[cost_failed]], ignore_index=True)
        notes = regrouped.notes
    labels = _setting_labels(pd.concat([runs, failed]), options)
    runs, failed = _with_settings(runs, labels), _with_settings(failed, labels)
    is_cost = runs["suite"].isin(options.efficiency_suites)
    efficiency, scored = _efficiency(runs[is_cost]), runs[~is_cost]
    if preset is not None and scored.empty:
        raise UsageError(
            f"No run to score under preset {options.preset!r}: "
            + ("; ".join(notes) or "the results hold none of its tasks")
            + "."
        )
    cells = _cells(scored)
    meta = scored.groupby("backbone_key")["is_random"].first()
    reference = ~cells["backbone_key"].map(meta).astype(bool)
    cells, settings = _zscore(cells, reference, options.min_backbones)
    table = _backbone_table(scored, cells, settings, options.weighting)
    check_y(table, options.pareto_y)
    return Board(
        options=options,
        runs=runs,
        failed=failed,
        settings=settings,
        cells=cells,
        table=table,
        suites=sorted(settings.loc[settings["zscored"], "suite"].unique()) if len(settings) else [],
        skipped=loaded.skipped,
        efficiency=efficiency,
        preset_notes=notes,
    )
