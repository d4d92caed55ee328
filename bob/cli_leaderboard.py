"""`bob leaderboard`: build the board, write its files, print its top to the terminal."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.table import Table
from rich.text import Text

from bob.console import console, stdout_console

log = logging.getLogger("bob.leaderboard")
MAX_RAW_SETTINGS = 4


def run_leaderboard(
    results_dir: Path,
    out_dir: Path,
    suites: list[str],
    filters: list[str],
    weighting: str,
    best_of: list[str],
    min_backbones: int,
    top: int,
    group_by: str | None,
    efficiency_suites: list[str] | None = None,
    pareto_y: str = "overall",
    pareto_cost: str = "",
) -> int:
    from bob.leaderboard import BoardOptions, RowFilter, build_leaderboard
    from bob.leaderboard import format as fmt
    from bob.leaderboard.views import GROUP_KEYS

    if group_by is not None and group_by not in GROUP_KEYS:
        from bob.errors import UsageError

        raise UsageError(f"--group-by takes one of {', '.join(GROUP_KEYS)}, got {group_by!r}.")
    options = BoardOptions(
        weighting=weighting,
        best_of=tuple(best_of),
        min_backbones=min_backbones,
        suites=tuple(suites),
        efficiency_suites=tuple(efficiency_suites or ("efficiency",)),
        pareto_y=pareto_y,
        pareto_cost=pareto_cost,
    )
    parsed = [RowFilter.parse(f) for f in filters]
    out = build_leaderboard(results_dir, out_dir, options, parsed)
    board, table = out.board, out.table
    err = console()
    for skipped in board.skipped:
        err.print(Text.assemble(("skipped ", "yellow"), skipped.path, ": ", skipped.reason), highlight=False)
    err.print(Text(f"convention: {options.convention()}", style="dim"), highlight=False)
    for setting in board.settings.itertuples():
        if setting.note:
            err.print(Text(f"{setting.setting}: {setting.note}", style="yellow"), highlight=False)

    # Small boards (a quickstart, a first sweep) also show each setting's raw seed-mean: with fewer
    # than three pretrained backbones there are no z-scores to show yet.
    raw = list(board.settings["setting"]) if len(board.settings) <= MAX_RAW_SETTINGS else []
    metric = dict(zip(board.settings["setting"], board.settings["main_metric"], strict=True))
    grid = Table(title=f"bob leaderboard (top {min(top, len(table))} of {len(table)})", title_justify="left")
    head = [
        "#",
        "backbone",
        "family",
        "method",
        "params",
        "overall z",
        *board.suites,
        "mean rank",
        "settings",
    ]
    for name in head + [f"{s} {metric[s]}" for s in raw]:
        # Text, not str: names from result files may hold [brackets] that rich would read as markup.
        grid.add_column(Text(name), justify="left" if name in {"backbone", "family", "method"} else "right")
    for _, r in table.head(top).iterrows():
        suites_z = [fmt.num(r.get(f"suite:{s}"), signed=True) for s in board.suites]
        raw_values = [fmt.num(r.get(f"value:{s}"), 4) for s in raw]
        grid.add_row(
            fmt.position(r), Text(str(r["backbone_key"])), Text(str(r["family"])), Text(str(r["method"])),
            fmt.params(r["params"]), fmt.num(r["overall"], signed=True), *suites_z,
            fmt.num(r["mean_rank"], 1), fmt.coverage(r), *raw_values,
        )  # fmt: skip
    stdout_console().print(grid)
    if not board.efficiency.empty:
        stdout_console().print(_efficiency_table(board.efficiency))
    if group_by:
        from bob.leaderboard.analyses import group_summary

        summary = group_summary(board, group_by, table)
        stdout_console().print(Text(summary.to_string(index=False)))
    if len(board.failed):
        err.print(f"{len(board.failed)} failed run(s) are listed separately and not averaged in.")
    err.print(fmt.LEGEND, style="dim", highlight=False)
    err.print("wrote " + ", ".join(str(p) for p in out.paths), highlight=False)
    return 0


MAX_EFFICIENCY_COLUMNS = 6


def _efficiency_table(eff) -> Table:
    """The efficiency view's first columns (each setting's main metric, then its GMACs …)."""
    from bob.leaderboard import format as fmt

    cols = [c for c in eff.columns if c not in ("backbone_key", "params")]
    shown = cols[:MAX_EFFICIENCY_COLUMNS]
    more = len(cols) - len(shown)
    caption = (
        f"{more} more column{'s' if more > 1 else ''} in leaderboard_efficiency.csv" if more > 0 else None
    )
    grid = Table(title="efficiency (not z-scored)", title_justify="left", caption=caption)
    for name in ["backbone", "params", *shown]:
        grid.add_column(Text(name), justify="left" if name == "backbone" else "right")
    for _, r in eff.iterrows():
        grid.add_row(
            Text(str(r["backbone_key"])),
            fmt.params(r["params"]),
            *(f"{r[c]:.4g}" if r[c] == r[c] else "–" for c in shown),
        )
    return grid
