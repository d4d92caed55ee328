"""`bob leaderboard`'s body: build the board with `bob.api.leaderboard`, then print its notes, top
rows, efficiency view and group summary.

Imported by the command only once it runs: the API's leaderboard and the cell formatting bring
pandas, which `bob --help` never needs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from bob import api
from bob.console import console, stdout_console
from bob.leaderboard import format as fmt

if TYPE_CHECKING:
    import pandas as pd

    from bob.leaderboard import BuildOutput
    from bob.leaderboard.aggregate import Board

MAX_RAW_SETTINGS = 4
MAX_EFFICIENCY_COLUMNS = 6
MAX_RAW_BACKBONES = (
    6  # columns of the terminal's raw-score table when the settings are too many to sit beside the board
)


def run_leaderboard(results_dir: Path, out: Path, top: int, plotly: str = "inline", **options: Any) -> None:
    """Build the board (`options` are bob.api.leaderboard's) and print its first `top` rows; `plotly`
    (inline or cdn) is how the HTML page gets plotly.js."""
    print_board(api.leaderboard(results_dir, out, plotly=plotly, **options), top)


def print_board(output: BuildOutput, top: int) -> None:
    """Everything `bob leaderboard` prints: notes on stderr, tables on stdout, the written files."""
    board = output.board
    err = console()
    for skipped in board.skipped:
        err.print(Text.assemble(("skipped ", "yellow"), skipped.path, ": ", skipped.reason), highlight=False)
    err.print(Text(f"convention: {board.options.convention()}", style="dim"), highlight=False)
    heading, _, notes = board.preset_text()
    if heading:
        err.print(
            Text(f"{heading} Every reconstructed choice is listed in leaderboard.md/.html.", style="dim")
        )
    for note in notes:
        err.print(Text(note, style="yellow"), highlight=False)
    for setting in board.settings.itertuples():
        if setting.note:
            err.print(Text(f"{setting.setting}: {setting.note}", style="yellow"), highlight=False)
    out = stdout_console()
    out.print(board_table(board, output.table, top))
    note = board.unranked_note(output.table)
    if note:
        err.print(Text(note, style="yellow"), highlight=False)
    if len(board.settings) > MAX_RAW_SETTINGS:
        out.print(raw_table(board, output.table, top))
    if not board.efficiency.empty:
        out.print(efficiency_table(board.efficiency))
    if output.summary is not None:
        out.print(Text(output.summary.to_string(index=False)))
    if board.intervals is not None:
        print_intervals(board)
    if len(board.failed):
        err.print(f"{len(board.failed)} failed run(s) are listed separately and not averaged in.")
    err.print(fmt.LEGEND, style="dim", highlight=False)
    err.print("wrote " + ", ".join(str(p) for p in output.paths), highlight=False, markup=False)


def print_intervals(board: Board) -> None:
    """How the intervals were made, how many adjacent positions they separate, and what has none."""
    err, intervals = console(), board.intervals
    assert intervals is not None
    err.print(Text(intervals.describe(), style="dim"), highlight=False)
    separated, pairs = intervals.distinguishable
    if pairs:
        err.print(
            f"{separated} of {pairs} adjacent positions differ at this level (leaderboard.md lists them)."
        )
    for note in intervals.notes:
        err.print(Text(note, style="yellow"), highlight=False)
    reasons, first = intervals.missing()
    for why, count in reasons.items():
        err.print(Text(f"no interval for {count} run(s): {why}", style="yellow"), highlight=False)
    if first:
        err.print(Text("e.g. " + ", ".join(first), style="dim"), highlight=False)


def board_table(board: Board, table: pd.DataFrame, top: int) -> Table:
    """The first `top` rows: position, backbone, overall and per-suite z, mean rank, coverage."""
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
        suites_z = [fmt.with_interval(r, f"suite:{s}", signed=True) for s in board.suites]
        raw_values = [fmt.num(r.get(f"value:{s}"), 4) for s in raw]
        grid.add_row(
            fmt.rank_range(r), Text(str(r["backbone_key"])), Text(str(r["family"])), Text(str(r["method"])),
            fmt.params(r["params"]), fmt.with_interval(r, "overall", signed=True), *suites_z,
            fmt.num(r["mean_rank"], 1), fmt.coverage(r), *raw_values,
        )  # fmt: skip
    return grid


def raw_table(board: Board, table: pd.DataFrame, top: int) -> Table:
    """Raw scores of a board too wide for them beside the z-scores: one row per setting, one column per
    backbone of the first few rows (leaderboard.md and .csv have every row)."""
    rows = table.head(min(top, MAX_RAW_BACKBONES))
    more = len(table) - len(rows)
    grid = Table(
        title="raw scores per setting (seed mean of the main metric)",
        title_justify="left",
        caption=f"{more} more row(s) in leaderboard.md and leaderboard.csv (value:<setting>)"
        if more > 0
        else None,
    )
    grid.add_column(Text("setting"), justify="left")
    for _, r in rows.iterrows():
        grid.add_column(Text(f"{fmt.position(r)} {r['backbone_key']}"), justify="right")
    for setting, header in fmt.raw_settings(board.settings):
        grid.add_row(Text(header), *(fmt.num(r.get(f"value:{setting}"), 4) for _, r in rows.iterrows()))
    return grid


def efficiency_table(eff: pd.DataFrame) -> Table:
    """The efficiency view's first columns (each setting's main metric, then its GMACs …)."""
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
