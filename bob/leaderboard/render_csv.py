"""`leaderboard.csv` (one row per backbone) and `leaderboard_long.csv` (one row per run); with
efficiency results also `leaderboard_efficiency.csv` and, when they carry MACs,
`leaderboard_pareto.csv` (GMACs, the chosen accuracy column and a `pareto` flag per backbone).

With intervals, every score column is followed by its `<column>_ci_low` / `<column>_ci_high`, the
position by `rank_low` / `rank_high`, and each run's `value` by its own interval and `samples` (ok, or
why the run has none).

Text cells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a
carriage return; OWASP's CSV-injection list) get a leading `'`, header names included; numbers are
never touched. Result files name backbones and tasks, so their text reaches these cells.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bob.leaderboard.aggregate import Board
from bob.leaderboard.replicates import RECORD_COLUMN
from bob.weights import atomic_write_text

LONG_ORDER = [
    "status",
    "backbone_key",
    "setting",
    "suite",
    "task",
    "seed",
    "value",
    "value_ci_low",
    "value_ci_high",
    "main_metric",
    "higher_is_better",
]
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CI_SUFFIXES = ("_ci_low", "_ci_high")


def neutralise_text(value: object) -> object:
    """`'` before a string a spreadsheet would evaluate; anything that is not a string as it is."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) else value


def neutralise(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its text cells and column names neutralised; numeric columns are left alone."""
    out = frame.rename(columns=lambda c: neutralise_text(str(c)))
    for column in [c for c, dtype in out.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)]:
        out[column] = out[column].map(neutralise_text)
    return out


def _with_intervals(columns: list[str], available: set[str]) -> list[str]:
    """Each column followed by its interval columns, when the board has them."""
    return [x for c in columns for x in (c, *(c + s for s in CI_SUFFIXES)) if x in available]


def wide_frame(board: Board, table: pd.DataFrame) -> pd.DataFrame:
    head = [
        "position", "rank_low", "rank_high", "backbone_key", "backbone", "weights", "backbone_args", "family",
        "method", "pretrain_data", "params", "size", "standing", "overall", "mean_rank", "covered",
        "n_settings", "n_runs",
    ]  # fmt: skip
    rest = [
        c
        for c in table.columns
        if c.startswith(("suite:", "z:", "value:", "std:", "seeds:")) and not c.endswith(CI_SUFFIXES)
    ]
    return table[_with_intervals(head + rest, set(table.columns))]


def long_frame(board: Board) -> pd.DataFrame:
    frame = pd.concat([board.runs, board.failed], ignore_index=True).drop(
        columns=[RECORD_COLUMN], errors="ignore"
    )
    order = [c for c in LONG_ORDER if c in frame.columns]
    rest = [c for c in frame.columns if c not in order and c != "task_args"]
    return frame[[*order, "task_args", *rest]]


def _write(frame: pd.DataFrame, path: Path) -> Path:
    atomic_write_text(path, neutralise(frame).to_csv(index=False, float_format="%.6g"), "leaderboard CSV")
    return path


def write_csv(board: Board, table: pd.DataFrame, out_dir: Path) -> list[Path]:
    paths = [
        _write(wide_frame(board, table), out_dir / "leaderboard.csv"),
        _write(long_frame(board), out_dir / "leaderboard_long.csv"),
    ]
    if not board.efficiency.empty:
        paths.append(_write(board.efficiency, out_dir / "leaderboard_efficiency.csv"))
    pareto = board.pareto(table)
    if len(pareto):
        paths.append(_write(pareto, out_dir / "leaderboard_pareto.csv"))
    return paths
