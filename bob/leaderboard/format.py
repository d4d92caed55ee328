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
        else {"incomplete": "†", "unranked": "unranked", "baseline": "rand"}.get(row["standing"], "")
    )


def coverage(row: pd.Series) -> str:
    return f"{int(row['covered'])}/{int(row['n_settings'])}"


LEGEND = (
    "† incomplete: misses some z-scored settings, so its scores average fewer settings and it is not given a "
    "position; unranked: no z-scored setting at all, so nothing to rank it by (its raw scores are listed); "
    "rand: random-init baseline, scored against the pretrained backbones but not part of their mean/std."
)


def raw_cell(row: pd.Series, setting: str) -> str:
    """A setting's raw score beside its z-score: `0.9362 ± 0.0040 [0.925, 0.947] · z +0.52`; the z part
    is left off where the setting is not z-scored, the interval where there is none; `–` without a result."""
    mean = row.get(f"value:{setting}")
    if _missing(mean):
        return "–"
    std, seeds = row.get(f"std:{setting}"), row.get(f"seeds:{setting}")
    text = mean_std(mean, std, 1 if _missing(seeds) else int(seeds))
    band = interval(row.get(f"value:{setting}_ci_low"), row.get(f"value:{setting}_ci_high"), 4)
    text += f" {band}" if band else ""
    z = row.get(f"z:{setting}")
    return text if _missing(z) else f"{text} · z {num(z, signed=True)}"


def raw_settings(settings: pd.DataFrame) -> list[tuple[str, str]]:
    """(setting, its raw-score column header) for every setting of a board, in the board's order."""
    return [
        (str(r.setting), setting_header(str(r.setting), str(r.main_metric), bool(r.higher_is_better)))
        for r in settings.itertuples()
    ]


RAW_TITLE = "Raw scores per setting"
RAW_LEGEND = (
    "Seed mean of each setting's main metric in its own unit (± std over seeds, [interval] when the run "
    "kept per-sample outputs), then · z and the z-score where the setting is z-scored."
)


def setting_header(setting: str, metric: str, higher_is_better: bool) -> str:
    """A raw-score column's name: the setting, its metric and direction, `knn/x (top1 ↑)`."""
    return f"{setting} ({metric} {'↑' if higher_is_better else '↓'})"


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


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def interval(low: Any, high: Any, digits: int = 2, signed: bool = False) -> str:
    """`[lo, hi]`, or "" when there is no interval."""
    if _missing(low) or _missing(high):
        return ""
    return f"[{num(low, digits, signed)}, {num(high, digits, signed)}]"


def with_interval(row: pd.Series, column: str, digits: int = 2, signed: bool = False) -> str:
    """A score and its interval, `+0.52 [+0.31, +0.70]`; `+0.52 [n/a]` when the board has intervals
    but this score has none (a run without per-sample files); the bare score when intervals are off."""
    value = row.get(column)
    if _missing(value):
        return num(value)
    if f"{column}_ci_low" not in row.index:
        return num(value, digits, signed)
    band = interval(row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high"), digits, signed)
    return f"{num(value, digits, signed)} {band or '[' + NO_INTERVAL + ']'}"


def rank_range(row: pd.Series) -> str:
    """The position and, when known, the range it takes over the resamples: `2 (1–3)`."""
    low, high = row.get("rank_low"), row.get("rank_high")
    base = position(row)
    if not row["position"] or _missing(low) or _missing(high):
        return base
    return f"{base} ({int(low)}–{int(high)})" if low != high else f"{base} ({int(low)})"


NO_INTERVAL = "n/a"
INTERVAL_LEGEND = (
    "[lo, hi]: the score's confidence interval; (a–b) after a position: the positions it takes over the "
    "resamples. Two rows whose intervals overlap can still differ significantly: compare them pairwise "
    "(`bob compare A B`, or tick two rows of the HTML board)."
)
