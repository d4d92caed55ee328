"""`leaderboard.html`: one self-contained page (no CDN, works offline) with a sortable, filterable
board, each row's raw scores per setting, plotly figures (plotly.js embedded once; `--plotly cdn`
loads it from plotly's CDN instead, for a far smaller file) and every backbone's runs.

Safety: every string from a result file or the user goes through `html.escape` before it reaches the
page, including plot labels (plotly reads a few HTML tags in labels, so they get entities too); the
table is rendered on the server, and the page's own script only reorders and hides existing rows.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bob.leaderboard import format as fmt
from bob.leaderboard.aggregate import Board
from bob.leaderboard.analyses import SUMMARIES, group_summary, params_correlation, task_correlation
from bob.leaderboard.figures import figures_html
from bob.leaderboard.html_intervals import compare_section, interval_section
from bob.weights import atomic_write_text

_ASSETS = Path(__file__).with_name("assets")


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num_attr(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{float(x):.6g}"


def _cell(text: str, sort: Any = None, cls: str = "") -> str:
    attrs = f' data-sort="{esc(_num_attr(sort))}"' if sort is not None else ""
    attrs += f' class="{cls}"' if cls else ""
    return f"<td{attrs}>{text}</td>"


def board_table(board: Board, table: pd.DataFrame, anchors: dict[str, str]) -> str:
    suites = board.suites
    head = [
        "#",
        "backbone",
        "family",
        "method",
        "pretraining data",
        "params",
        "overall z",
        *suites,
        "mean rank",
        "settings",
    ]
    compare = board.intervals is not None and board.intervals.any
    if compare:
        head.append("compare")
    numeric = {0, 5, 6, *range(7, 7 + len(suites)), 7 + len(suites), 8 + len(suites)}
    ths = "".join(
        f'<th data-col="{i}" data-type="{"num" if i in numeric else "text"}" tabindex="0">{esc(h)}</th>'
        for i, h in enumerate(head)
    )
    rows = []
    for i, (_, r) in enumerate(table.iterrows()):
        key = r["backbone_key"]
        cells = [
            _cell(esc(fmt.rank_range(r)), r["position"] or np.nan),
            f'<td><a href="#{anchors[key]}">{esc(key)}</a></td>',
            _cell(esc(r["family"])),
            _cell(esc(r["method"])),
            _cell(esc(r["pretrain_data"])),
            _cell(esc(fmt.params(r["params"])), r["params"]),
            _cell(esc(fmt.with_interval(r, "overall", signed=True)), r["overall"]),
            *(
                _cell(esc(fmt.with_interval(r, f"suite:{s}", signed=True)), r.get(f"suite:{s}"))
                for s in suites
            ),
            _cell(esc(fmt.num(r["mean_rank"], 1)), r["mean_rank"]),
            _cell(esc(fmt.coverage(r)), r["covered"]),
        ]
        if compare:
            cells.append(f'<td><input type="checkbox" class="cmp" data-row="{i}" aria-label="compare"></td>')
        rows.append(f'<tr class="{esc(r["standing"])}">{"".join(cells)}</tr>')
    note = board.unranked_note(table)
    return (
        '<input id="board-filter" type="search" placeholder="filter rows (any text, e.g. vit, ssl:, random)">'
        f' <span id="board-count">{len(rows)} backbones</span>'
        f'<table id="board" class="sortable"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        + (f'<p class="unranked-note">{esc(note)}</p>' if note else "")
    )


def raw_table(board: Board, table: pd.DataFrame) -> str:
    """Every shown row's raw score per setting (seed mean in the metric's unit), beside its z-score."""
    raw = fmt.raw_settings(board.settings)
    if not raw:
        return ""
    heads = "".join(f"<th>{esc(h)}</th>" for h in ("#", "backbone", *(h for _, h in raw)))
    rows = "".join(
        f'<tr class="{esc(r["standing"])}"><td>{esc(fmt.position(r))}</td><td>{esc(r["backbone_key"])}</td>'
        + "".join(_cell(esc(fmt.raw_cell(r, s)), r.get(f"value:{s}")) for s, _ in raw)
        + "</tr>"
        for _, r in table.iterrows()
    )
    return (
        f'<h2>{esc(fmt.RAW_TITLE)}</h2><p class="legend">{esc(fmt.RAW_LEGEND)}</p>'
        f'<table id="raw"><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody></table>'
    )


def _simple_table(header: list[str], rows: list[list[str]], table_id: str = "") -> str:
    ident = f' id="{table_id}"' if table_id else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    heads = "".join(f"<th>{esc(h)}</th>" for h in header)
    return f"<table{ident}><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>"


def settings_table(board: Board) -> str:
    rows = [
        [
            esc(s["setting"]),
            esc(s["suite"]),
            esc(s["main_metric"]) + (" ↑" if s["higher_is_better"] else " ↓ (negated)"),
            str(s["n_backbones"]),
            esc(fmt.num(s["mean"], 4)),
            esc(fmt.num(s["std"], 4)),
            esc(s["note"] or "z-scored"),
        ]
        for _, s in board.settings.iterrows()
    ]
    return _simple_table(
        ["setting", board.group_label, "metric", "backbones", "mean", "std", "z-scores"], rows, "settings"
    )


def preset_html(board: Board) -> str:
    """The preset's summary, every choice it reconstructed, and what it left off or added."""
    heading, choices, notes = board.preset_text()
    if not heading:
        return ""
    items = "".join(f"<li>{esc(c)}</li>" for c in choices)
    extra = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return (
        f'<section id="preset"><h2>{esc(heading)}</h2>'
        "<p>Reconstructed choices (BoB published no aggregation code):</p>"
        f"<ul>{items}</ul>" + (f"<ul>{extra}</ul>" if extra else "") + "</section>"
    )


def analyses_html(board: Board, table: pd.DataFrame) -> str:
    corr = params_correlation(board, table)
    parts = [
        "<h3>Overall z-score vs parameter count (Spearman)</h3>",
        _simple_table(
            ["family", "n", "ρ", "p"],
            [
                [esc(r["family"]), str(r["n"]), fmt.num(r["spearman_rho"]), fmt.num(r["p_value"], 3)]
                for _, r in corr.iterrows()
            ],
        ),
    ]
    for by, title in SUMMARIES.items():
        summary = group_summary(board, by, table)
        parts.append(f"<h3>{esc(title)}</h3>")
        parts.append(_simple_table([by, *fmt.SUMMARY_HEADER], fmt.summary_rows(summary, by, esc)))
    return "".join(parts)


def _run_rows(board: Board, anchors: dict[str, str], link_base: str) -> dict[str, list[str]]:
    """Per backbone, one table row per run (ok and failed) with its interval or why it has none.

    Built from plain column lists, not DataFrame rows: this is the page's largest part (one row per run).
    """
    frame = pd.concat([board.runs, board.failed], ignore_index=True)
    frame = frame[frame["backbone_key"].isin(anchors)].sort_values(["backbone_key", "setting", "seed"])
    for column, empty in (("value_ci_low", np.nan), ("value_ci_high", np.nan), ("samples", "")):
        frame[column] = frame[column].fillna(empty) if column in frame else empty
    names = ("backbone_key", "setting", "seed", "status", "value", "main_metric", "error", "path", "id")
    rows: dict[str, list[str]] = {}
    columns = zip(
        *(frame[c].tolist() for c in (*names, "value_ci_low", "value_ci_high", "samples")), strict=True
    )
    for key, setting, seed, status, value, metric, error, path, run_id, lo, hi, note in columns:
        band = fmt.interval(lo, hi, 4) or (note if note not in ("", "ok") else "")
        rows.setdefault(key, []).append(
            f"<tr><td>{esc(setting)}</td><td>{seed}</td><td>{esc(status)}</td>"
            f"<td>{fmt.num(value, 4)} {esc(metric)}</td><td>{esc(band)}</td><td>{esc(error)}</td>"
            f'<td><a href="{esc(link_base + path)}">{esc(run_id)}</a></td></tr>'
        )
    return rows


def _cell_rows(board: Board) -> dict[str, list[str]]:
    """Per backbone, one row per setting: seed mean ± std, its interval, seeds, z with its interval, rank."""
    cells = board.cells.sort_values(["backbone_key", "setting"])
    for c in ("value_ci_low", "value_ci_high", "z_ci_low", "z_ci_high"):
        cells[c] = cells.get(c, np.nan)
    names = ["backbone_key", "setting", "mean", "std", "n_seeds", "z", "rank"]
    names += ["value_ci_low", "value_ci_high", "z_ci_low", "z_ci_high"]
    rows: dict[str, list[str]] = {}
    for key, setting, mean, std, n, z, rank, v_lo, v_hi, z_lo, z_hi in cells[names].itertuples(index=False):
        rows.setdefault(key, []).append(
            f"<tr><td>{esc(setting)}</td><td>{esc(fmt.mean_std(mean, std, n))}</td>"
            f"<td>{esc(fmt.interval(v_lo, v_hi, 4))}</td><td>{n}</td>"
            f"<td>{fmt.num(z, signed=True)} {esc(fmt.interval(z_lo, z_hi, signed=True))}</td>"
            f"<td>{fmt.num(rank, 1)}</td></tr>"
        )
    return rows


def runs_html(board: Board, table: pd.DataFrame, anchors: dict[str, str], link_base: str) -> str:
    """One section per shown backbone: its cells (with intervals), then its runs, each linking to its
    result file."""
    per_run, per_cell = _run_rows(board, anchors, link_base), _cell_rows(board)
    cell_head = "".join(
        f"<th>{h}</th>"
        for h in ("setting", "mean ± std over seeds", "interval", "seeds", "z [interval]", "rank")
    )
    head = "".join(
        f"<th>{h}</th>" for h in ("setting", "seed", "status", "value", "interval", "error", "result file")
    )
    return "".join(
        f'<section class="runs" id="{anchors[key]}"><h3>{esc(key)}</h3>'
        f"<table><thead><tr>{cell_head}</tr></thead><tbody>{''.join(per_cell.get(key, []))}</tbody></table>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(per_run[key])}</tbody></table></section>"
        for key in table["backbone_key"]
        if key in per_run
    )


def efficiency_html(board: Board) -> str:
    eff = board.efficiency
    if eff.empty:
        return ""
    cols = [c for c in eff.columns if c not in ("backbone_key", "params")]
    rows = [
        [esc(r["backbone_key"]), esc(fmt.params(r["params"])), *(esc(fmt.num(r[c], 4)) for c in cols)]
        for _, r in eff.iterrows()
    ]
    return "<h2>Efficiency (not part of the z-scores)</h2>" + _simple_table(
        ["backbone", "params", *cols], rows, "efficiency"
    )


def failed_html(board: Board) -> str:
    if board.failed.empty:
        return "<p>No failed run.</p>"
    rows = [
        [esc(r["backbone_key"]), esc(r["setting"]), esc(r["seed"]), esc(r["error"]), esc(r["path"])]
        for _, r in board.failed.iterrows()
    ]
    return _simple_table(["backbone", "setting", "seed", "error", "file"], rows, "failed")


def problems_html(board: Board) -> str:
    if not board.skipped:
        return "<p>No result file was skipped.</p>"
    rows = [[esc(s.path), esc(s.reason)] for s in board.skipped]
    return _simple_table(["file", "reason"], rows, "skipped")


def write_html(
    board: Board, table: pd.DataFrame, out_dir: Path, results_dir: Path, title: str, plotly: str = "inline"
) -> Path:
    """The page; `plotly` is `inline` (plotly.js embedded: self-contained, works offline) or `cdn`
    (a script tag loads plotly.js from its CDN: a much smaller file that needs a network to plot)."""
    anchors = {key: f"runs-{i}" for i, key in enumerate(table["backbone_key"])}
    link_base = Path(os.path.relpath(results_dir.resolve(), out_dir.resolve())).as_posix() + "/"
    counts = (
        f"{len(board.runs)} ok runs, {len(board.failed)} failed, {len(board.skipped)} skipped files; "
        f"{len(table)} backbones shown; {int(board.settings['zscored'].sum())} of {len(board.settings)} settings z-scored"
    )
    sections = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="convention">Convention: {esc(board.options.convention())}</p>',
        f"<p>{esc(counts)}</p>",
        f'<p class="legend">{esc(fmt.LEGEND)}</p>',
        f'<p class="legend">{esc(fmt.INTERVAL_LEGEND)}</p>' if board.intervals is not None else "",
        preset_html(board),
        "<h2>Board</h2>",
        board_table(board, table, anchors),
        raw_table(board, table),
        compare_section(board, table),
        interval_section(board),
        efficiency_html(board),
        "<h2>Plots</h2>",
        figures_html(board, table, task_correlation(board), plotly),
        "<h2>Settings</h2>",
        settings_table(board),
        "<h2>Analyses</h2>",
        analyses_html(board, table),
        "<h2>Failed runs (not averaged in)</h2>",
        failed_html(board),
        "<h2>Skipped files</h2>",
        problems_html(board),
        "<h2>Runs per backbone</h2>",
        runs_html(board, table, anchors, link_base),
    ]
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{(_ASSETS / 'board.css').read_text()}</style></head><body>"
        + "\n".join(sections)
        + f"<script>{(_ASSETS / 'board.js').read_text()}</script>"
        + (
            f"<script>{(_ASSETS / 'compare.js').read_text()}</script>"
            if board.intervals and board.intervals.any
            else ""
        )
        + "</body></html>"
    )
    path = out_dir / "leaderboard.html"
    atomic_write_text(path, page, "leaderboard page")
    return path
