"""`leaderboard.csv` (one row per backbone) and `leaderboard_long.csv` (one row per run); with
efficiency results also `leaderboard_efficiency.csv` and, when they carry MACs,
`leaderboard_pareto.csv` (GMACs, the chosen accuracy column and a `pareto` flag per backbone)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bob.leaderboard.aggregate import Board

LONG_ORDER = [
    "status",
    "backbone_key",
    "setting",
    "suite",
    "task",
    "seed",
    "value",
    "main_metric",
    "higher_is_better",
]


def wide_frame(board: Board, table: pd.DataFrame) -> pd.DataFrame:
    head = [
        "position", "backbone_key", "backbone", "weights", "backbone_args", "family", "method", "pretrain_data",
        "params", "size", "standing", "overall", "mean_rank", "covered", "n_settings", "n_runs",
    ]  # fmt: skip
    rest = [c for c in table.columns if c.startswith(("suite:", "z:", "value:", "std:", "seeds:"))]
    return table[head + rest]


def long_frame(board: Board) -> pd.DataFrame:
    frame = pd.concat([board.runs, board.failed], ignore_index=True)
    rest = [c for c in frame.columns if c not in LONG_ORDER and c != "task_args"]
    return frame[[*LONG_ORDER, "task_args", *rest]]


def write_csv(board: Board, table: pd.DataFrame, out_dir: Path) -> list[Path]:
    wide, long = out_dir / "leaderboard.csv", out_dir / "leaderboard_long.csv"
    wide_frame(board, table).to_csv(wide, index=False, float_format="%.6g")
    long_frame(board).to_csv(long, index=False, float_format="%.6g")
    paths = [wide, long]
    if not board.efficiency.empty:
        paths.append(out_dir / "leaderboard_efficiency.csv")
        board.efficiency.to_csv(paths[-1], index=False, float_format="%.6g")
    pareto = board.pareto(table)
    if len(pareto):
        paths.append(out_dir / "leaderboard_pareto.csv")
        pareto.to_csv(paths[-1], index=False, float_format="%.6g")
    return paths
