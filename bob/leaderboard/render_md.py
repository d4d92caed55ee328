"""`leaderboard.md`: the board, its settings, BoB's analyses, failed runs and skipped files.

Every string that came from a result file is escaped: HTML metacharacters become entities and
Markdown's own (`|`, `*`, `_`, brackets, backticks) are backslash-escaped, so a name renders as text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bob.leaderboard import format as fmt
from bob.leaderboard.aggregate import Board
from bob.leaderboard.analyses import SUMMARIES, group_summary, params_correlation, task_correlation
from bob.leaderboard.figures import pareto_gap
from bob.weights import atomic_write_text

_MD_SPECIAL = re.compile(r"([\\`*_\[\]()|~])")


def esc(text: object) -> str:
    """Text safe inside a Markdown table cell."""
    s = html.escape(str(text), quote=True)
    return _MD_SPECIAL.sub(r"\\\1", s).replace("\n", " ").replace("\r", " ")


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def board_lines(board: Board, table: pd.DataFrame) -> list[str]:
    suites = board.suites
    header = [
        "#",
        "backbone",
        "family",
        "method",
        "params",
        "overall z",
        *map(esc, suites),
        "mean rank",
        "settings",
    ]
    rows = [
        [
            fmt.rank_range(r),
            esc(r["backbone_key"]),
            esc(r["family"]),
            esc(r["method"]),
            fmt.params(r["params"]),
            fmt.with_interval(r, "overall", signed=True),
            *(fmt.with_interval(r, f"suite:{s}", signed=True) for s in suites),
            fmt.num(r["mean_rank"], 1),
            fmt.coverage(r),
        ]
        for _, r in table.iterrows()
    ]
    note = board.unranked_note(table)
    return _table(header, rows) + ([esc(note), ""] if note else [])


def raw_lines(board: Board, table: pd.DataFrame) -> list[str]:
    """Every row's raw score per setting, beside its z-score where the setting has one."""
    raw = fmt.raw_settings(board.settings)
    if not raw:
        return []
    lines = [f"## {fmt.RAW_TITLE}", "", esc(fmt.RAW_LEGEND), ""]
    return lines + _table(
        ["#", "backbone", *(esc(h) for _, h in raw)],
        (
            [fmt.position(r), esc(r["backbone_key"]), *(fmt.raw_cell(r, s) for s, _ in raw)]
            for _, r in table.iterrows()
        ),
    )


def interval_lines(board: Board) -> list[str]:
    """How sure the ranking is: the method, neighbours told apart, and what has no interval."""
    iv = board.intervals
    if iv is None:
        return []
    lines = ["## How sure is the ranking?", "", esc(iv.describe()), ""]
    told, pairs = iv.distinguishable
    if pairs:
        lines += [f"{told} of {pairs} adjacent pairs of ranked backbones are distinguishable at {iv.confidence:.0%} "
                  "(the interval of their paired overall-score difference excludes 0).", ""]  # fmt: skip
        lines += _table(
            ["positions", "backbones", "Δ overall", "interval", "distinguishable"],
            (
                [
                    f"{r['position']}–{r['position'] + 1}",
                    f"{esc(r['a'])} vs {esc(r['b'])}",
                    fmt.num(r["diff"], signed=True),
                    fmt.interval(r["ci_low"], r["ci_high"], signed=True),
                    "yes" if r["distinguishable"] else "no",
                ]
                for _, r in iv.adjacent.iterrows()
            ),
        )
    lines += [f"- {esc(note)}" for note in iv.notes]
    lines += _runs_without(board)
    return lines


def _runs_without(board: Board) -> list[str]:
    iv = board.intervals
    if iv is None or not iv.runs_without:
        return []
    runs = board.runs.set_index("id")
    reasons, listed = iv.missing()
    lines = ["", f"{len(iv.runs_without)} run(s) have no interval ({fmt.NO_INTERVAL} on the board):", ""]
    lines += [f"- {count} × {esc(why)}" for why, count in reasons.items()] + [""]
    more = len(iv.runs_without) - len(listed)
    lines += _table(
        ["backbone", "setting", "seed", "why"],
        (
            [
                esc(runs.at[i, "backbone_key"]),
                esc(runs.at[i, "setting"]),
                str(runs.at[i, "seed"]),
                esc(iv.runs_without[i]),
            ]
            for i in listed
        ),
    )
    return lines + (
        [f"… and {more} more: the `samples` column of leaderboard_long.csv lists every run.", ""]
        if more
        else []
    )


def settings_lines(board: Board) -> list[str]:
    rows = [
        [
            esc(s["setting"]),
            esc(s["suite"]),
            esc(s["main_metric"]) + (" ↑" if s["higher_is_better"] else " ↓"),
            str(s["n_backbones"]),
            fmt.num(s["mean"], 4),
            fmt.num(s["std"], 4),
            esc(s["note"]) or "z-scored",
        ]
        for _, s in board.settings.iterrows()
    ]
    return _table(["setting", board.group_label, "metric", "backbones", "mean", "std", "z-scores"], rows)


def preset_lines(board: Board) -> list[str]:
    """The preset's summary, every choice it reconstructed, and what it left off or added."""
    heading, choices, notes = board.preset_text()
    if not heading:
        return []
    lines = [f"## {esc(heading)}", "", "Reconstructed choices (BoB published no aggregation code):", ""]
    return [*lines, *(f"- {esc(c)}" for c in choices), "", *(f"- {esc(n)}" for n in notes), ""]


def analyses_lines(board: Board, table: pd.DataFrame) -> list[str]:
    lines = ["## Overall z-score vs parameter count (Spearman)", ""]
    corr = params_correlation(board, table)
    lines += _table(
        ["family", "n", "ρ", "p"],
        (
            [esc(r["family"]), str(r["n"]), fmt.num(r["spearman_rho"]), fmt.num(r["p_value"], 3)]
            for _, r in corr.iterrows()
        ),
    )
    for by, title in SUMMARIES.items():
        summary = group_summary(board, by, table)
        lines += [f"## {title}", ""]
        lines += _table([by, *fmt.SUMMARY_HEADER], fmt.summary_rows(summary, by, esc))
    matrix = task_correlation(board)
    if matrix.shape[0] > 1:
        lines += ["## Task × task Spearman correlation", ""]
        cols = list(matrix.columns)
        lines += _table(
            ["", *map(esc, cols)],
            ([esc(i), *(fmt.num(matrix.loc[i, c]) for c in cols)] for i in matrix.index),
        )
    return lines


def efficiency_lines(board: Board) -> list[str]:
    eff = board.efficiency
    if eff.empty:
        return []
    cols = [c for c in eff.columns if c not in ("backbone_key", "params")]
    lines = ["## Efficiency (not part of the z-scores)", ""]
    return lines + _table(
        ["backbone", "params", *map(esc, cols)],
        (
            [esc(r["backbone_key"]), fmt.params(r["params"]), *(fmt.num(r[c], 4) for c in cols)]
            for _, r in eff.iterrows()
        ),
    )


def pareto_lines(board: Board, table: pd.DataFrame) -> list[str]:
    frame = board.pareto(table)
    if frame.empty:
        why = pareto_gap(board, table)
        return ["## Accuracy vs MACs", "", esc(why), ""] if why and not board.efficiency.empty else []
    y, task = frame["y_column"].iloc[0], frame["cost_task"].iloc[0]
    lines = [f"## Accuracy vs MACs: Pareto front ({esc(y)} vs GMACs of {esc(task)})", ""]
    return lines + _table(
        ["backbone", "GMACs", esc(y), "on the front"],
        (
            [esc(r["backbone_key"]), fmt.num(r["gmacs"], 3), fmt.num(r["y"], 4), "yes" if r["pareto"] else ""]
            for _, r in frame.iterrows()
        ),
    )


def problems_lines(board: Board) -> list[str]:
    lines: list[str] = []
    if len(board.failed):
        lines += ["## Failed runs (not averaged in)", ""]
        lines += _table(
            ["backbone", "setting", "seed", "error", "file"],
            (
                [esc(r["backbone_key"]), esc(r["setting"]), str(r["seed"]), esc(r["error"]), esc(r["path"])]
                for _, r in board.failed.iterrows()
            ),
        )
    if board.skipped:
        lines += ["## Skipped files", ""]
        lines += _table(["file", "reason"], ([esc(s.path), esc(s.reason)] for s in board.skipped))
    return lines


def write_markdown(board: Board, table: pd.DataFrame, out_dir: Path, title: str) -> Path:
    lines = [f"# {esc(title)}", "", f"Convention: {esc(board.options.convention())}", "", esc(fmt.LEGEND), ""]
    if board.intervals is not None:
        lines += [esc(fmt.INTERVAL_LEGEND), ""]
    lines += preset_lines(board)
    lines += board_lines(board, table)
    lines += raw_lines(board, table)
    lines += interval_lines(board)
    lines += efficiency_lines(board)
    lines += pareto_lines(board, table)
    lines += ["## Settings", "", *settings_lines(board)]
    lines += analyses_lines(board, table)
    lines += problems_lines(board)
    path = out_dir / "leaderboard.md"
    atomic_write_text(path, "\n".join(lines) + "\n", "leaderboard Markdown")
    return path
