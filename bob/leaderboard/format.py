"""Cell formatting shared by the terminal, Markdown and HTML renderings."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd


def params(n: Any) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return ""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def num(x: Any, digits: int = 2, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def mean_std(mean: float, std: float, n: int) -> str:
    return num(mean, 4) if n < 2 or pd.isna(std) else f"{num(mean, 4)} ± {num(std, 4)}"


def position(row: pd.Series) -> str:
    return (
        str(int(row["position"]))
        if row["position"]
        else {"incomplete": "†", "baseline": "rand"}.get(row["standing"], "")
    )


def coverage(row: pd.Series) -> str:
    return f"{int(row['covered'])}/{int(row['n_settings'])}"


LEGEND = (
    "† incomplete: misses some z-scored settings, so its scores average fewer settings and it is not given a "
    "position; rand: random-init baseline, scored against the pretrained backbones but not part of their mean/std."
)


SUMMARY_HEADER = ("backbones", "mean overall z", "std", "best")


def summary_rows(summary: pd.DataFrame, by: str, esc: Callable[[object], str]) -> list[list[str]]:
    """The cells of a group summary (family, method, …), escaped for the output format by `esc`."""
    return [
        [
            esc(r[by]),
            str(r["backbones"]),
            num(r["mean_overall"], signed=True),
            num(r["std_overall"]),
            esc(r["best"]),
        ]
        for _, r in summary.iterrows()
    ]
