"""BoB's analyses on a board: score vs size per family, task × task correlations, group summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bob.leaderboard.aggregate import Board

MIN_POINTS = 3  # fewer points than this give no correlation


def spearman(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    """Spearman ρ and its two-sided p-value, as `scipy.stats.spearmanr` computes them (Pearson on
    average ranks; t-distribution with n − 2 dof), without importing scipy.stats (seconds at start-up)."""
    from scipy.special import stdtr

    rho = float(x.rank().corr(y.rank()))
    n = len(x)
    if abs(rho) >= 1.0:
        return rho, 0.0
    t = rho * math.sqrt((n - 2) / (1.0 - rho * rho))
    return rho, float(2 * stdtr(n - 2, -abs(t)))


def params_correlation(board: Board, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Spearman ρ of overall z-score with parameter count, for all pretrained backbones of `table`
    (a filtered view; default: the whole board) and per family."""
    table = board.table if table is None else table
    table = table[~table["is_random"] & table["overall"].notna() & table["params"].notna()]
    groups = [("all", table), *((str(f), g) for f, g in table.groupby("family", sort=True))]
    rows = []
    for family, group in groups:
        rho = p = np.nan
        if len(group) >= MIN_POINTS and group["params"].nunique() > 1 and group["overall"].nunique() > 1:
            rho, p = spearman(group["params"], group["overall"])
        rows.append({"family": family, "n": len(group), "spearman_rho": rho, "p_value": p})
    return pd.DataFrame(rows, columns=["family", "n", "spearman_rho", "p_value"])


def task_correlation(board: Board) -> pd.DataFrame:
    """Spearman ρ between every pair of z-scored settings, over the pretrained backbones both cover."""
    scored = board.settings.loc[board.settings["zscored"], "setting"]
    cells = board.cells[board.cells["setting"].isin(scored)]
    random = set(board.table.loc[board.table["is_random"], "backbone_key"])
    cells = cells[~cells["backbone_key"].isin(random)]
    wide = cells.pivot(index="backbone_key", columns="setting", values="score")
    return wide.corr(method="spearman", min_periods=MIN_POINTS)


def method_class(method: str) -> str:
    """`ssl:dino` → `ssl`; supervised, vision-language, generative and random stay as they are."""
    return method.split(":", 1)[0]


def group_summary(board: Board, by: str, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Overall score per group (family, method class, pretraining data or size) of the pretrained
    backbones of `table` (a filtered view of the board; default: the whole board)."""
    table = board.table if table is None else table
    table = table[~table["is_random"]].copy()
    if by == "method_class":
        table["method_class"] = table["method"].map(method_class)
    rows = []
    for key, group in table.groupby(by, sort=True):
        scored = group[group["overall"].notna()].sort_values("overall", ascending=False)
        rows.append(
            {
                by: key,
                "backbones": len(group),
                "mean_overall": scored["overall"].mean() if len(scored) else np.nan,
                "std_overall": scored["overall"].std() if len(scored) > 1 else np.nan,
                "best": scored["backbone_key"].iloc[0] if len(scored) else "",
            }
        )
    out = pd.DataFrame(rows, columns=[by, "backbones", "mean_overall", "std_overall", "best"])
    return out.sort_values("mean_overall", ascending=False, na_position="last").reset_index(drop=True)


SUMMARIES = {
    "family": "CNN vs ViT vs hierarchical vs hybrid (by family)",
    "method_class": "supervised vs SSL vs vision-language (by pretraining method)",
    "pretrain_data": "by pretraining data",
    "size": "by size (small: < 30M parameters)",
}
