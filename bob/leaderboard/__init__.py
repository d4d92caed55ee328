"""`bob leaderboard`: a pure function of the result files → CSV, Markdown and one self-contained HTML page.

    from bob.leaderboard import build_leaderboard, BoardOptions
    out = build_leaderboard("results/raw", "results", BoardOptions(weighting="suite"))
    out.board.table  # one row per backbone

Never imports torch: it reads JSON with pandas, numpy and scipy, and draws with plotly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bob.errors import UsageError
from bob.leaderboard.aggregate import Board, BoardOptions, build_board
from bob.leaderboard.analyses import group_summary
from bob.leaderboard.figures import PLOTLY_MODES
from bob.leaderboard.intervals import compute_intervals
from bob.leaderboard.load import LoadedResults, load_results
from bob.leaderboard.render_csv import write_csv
from bob.leaderboard.render_html import write_html
from bob.leaderboard.render_md import write_markdown
from bob.leaderboard.replicates import default_bootstrap_cache
from bob.leaderboard.views import GROUP_KEYS, RowFilter, apply_filters
from bob.preflight import Target, require_writable_dirs, storage_error

FORMATS = ("csv", "md", "html")
__all__ = [
    "PLOTLY_MODES",
    "Board",
    "BoardOptions",
    "BuildOutput",
    "RowFilter",
    "build_leaderboard",
    "load_results",
]


@dataclass
class BuildOutput:
    board: Board
    table: pd.DataFrame  # the rows shown (after --filter)
    paths: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    summary: pd.DataFrame | None = None  # by `group_by` (family, method class, …), when asked for


def _require_results(results_dir: Path, loaded: LoadedResults) -> None:
    if not results_dir.is_dir():
        raise UsageError(
            f"Results dir {results_dir} does not exist. Run `bob run ...` first, or pass --results-dir DIR."
        )
    if loaded.files_seen == 0:
        raise UsageError(
            f"Results dir {results_dir} holds no result files (*.json). Run `bob run ...` first."
        )
    if loaded.runs.empty:
        raise UsageError(
            f"Results dir {results_dir} holds {loaded.files_seen} file(s) but no successful run to rank "
            f"({len(loaded.failed)} failed, {len(loaded.skipped)} unreadable, "
            f"{len(loaded.not_applicable)} skipped as not applicable)."
        )


def build_leaderboard(
    results_dir: Path | str,
    out_dir: Path | str,
    options: BoardOptions | None = None,
    filters: list[RowFilter] | None = None,
    formats: tuple[str, ...] = FORMATS,
    title: str = "bob leaderboard",
    group_by: str | None = None,
    plotly: str = "inline",
) -> BuildOutput:
    """Load, score, and write the requested formats to `out_dir`; timings per step in `seconds`.
    `group_by` (one of GROUP_KEYS) adds the overall score per group of the rows shown (`summary`);
    `plotly` (one of PLOTLY_MODES) is how the HTML page gets plotly.js: `inline` or from its `cdn`."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UsageError(f"Unknown output format(s) {', '.join(bad)}; use {', '.join(FORMATS)}.")
    if plotly not in PLOTLY_MODES:
        raise UsageError(f"--plotly takes one of {', '.join(PLOTLY_MODES)}, got {plotly!r}.")
    if group_by is not None and group_by not in GROUP_KEYS:
        raise UsageError(f"--group-by takes one of {', '.join(GROUP_KEYS)}, got {group_by!r}.")
    # The output folder is checked before the results are read: a file or a read-only folder named
    # by --out is one line and exit 2, not a traceback after the board is built.
    require_writable_dirs([Target(out_dir, "Leaderboard output folder", "--out")])
    t0 = time.perf_counter()
    loaded = load_results(results_dir)
    _require_results(results_dir, loaded)
    seconds = {"load": time.perf_counter() - t0}
    t = time.perf_counter()
    board = build_board(loaded, options)
    seconds["aggregate"] = time.perf_counter() - t
    if board.options.intervals:
        t = time.perf_counter()
        board.intervals = compute_intervals(board, results_dir, default_bootstrap_cache())
        seconds["intervals"] = time.perf_counter() - t
    table = apply_filters(board.table, filters or [])
    out_dir.mkdir(parents=True, exist_ok=True)
    output = BuildOutput(board, table, seconds=seconds)
    writers = {
        "csv": lambda: write_csv(board, table, out_dir),
        "md": lambda: [write_markdown(board, table, out_dir, title)],
        "html": lambda: [write_html(board, table, out_dir, results_dir, title, plotly)],
    }
    for fmt in formats:
        _timed_write(output, fmt, out_dir, writers[fmt])
    if group_by is not None:
        output.summary = group_summary(board, group_by, table)
    return output


def _timed_write(output: BuildOutput, fmt: str, out_dir: Path, writer: Callable[[], list[Path]]) -> None:
    t = time.perf_counter()
    try:
        output.paths += writer()
    except OSError as err:  # the disk filled or the folder changed under us while writing
        raise storage_error(f"the leaderboard's {fmt} file in", out_dir, err) from err
    output.seconds[fmt] = time.perf_counter() - t
