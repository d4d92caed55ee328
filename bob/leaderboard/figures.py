"""The board's plotly figures: z-score heatmap (backbones × suites), overall z vs parameter count
coloured by family, the task × task correlation heatmap and, when efficiency results measured MACs,
accuracy vs GMACs with the Pareto front. plotly.js is embedded once, inline (or, with `cdn`, loaded
from plotly's CDN). A plot with nothing to show (no z-scores yet, no MACs) is replaced by one line
that says why, never drawn as empty axes.

Figures are plain plotly figure dicts (no graph_objects validation: the board builds them itself and
this keeps building a board fast); labels are HTML-escaped because plotly reads tags inside them.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from bob.leaderboard.aggregate import Board
from bob.leaderboard.analyses import MIN_POINTS

PLOT_IDS = ("plot-suite-heatmap", "plot-params", "plot-task-corr")
PARETO_PLOT_ID = "plot-pareto"  # drawn only when efficiency results carry MACs
INTERVALS_PLOT_ID = "plot-overall-intervals"  # drawn only when the board has intervals


def _e(text: object) -> str:
    # plotly decodes &lt; &gt; &amp; in labels but not &quot;; quotes are harmless once no tag can open.
    return html.escape(str(text), quote=False)


def _values(frame: pd.DataFrame) -> list[list[float | None]]:
    return [[None if pd.isna(v) else round(float(v), 4) for v in row] for row in frame.to_numpy()]


def suite_heatmap(board: Board, table: pd.DataFrame) -> dict[str, Any]:
    cols = [f"suite:{s}" for s in board.suites]
    z = table.set_index("backbone_key")[cols] if cols else pd.DataFrame(index=table["backbone_key"])
    height = max(320, 22 * len(z) + 160)
    return {
        "data": [
            {
                "type": "heatmap",
                "z": _values(z),
                "x": [_e(s) for s in board.suites],
                "y": [_e(k) for k in z.index],
                "colorscale": "RdBu",
                "zmid": 0,
                "colorbar": {"title": {"text": "z"}},
                "hovertemplate": "%{y}<br>%{x}: z = %{z:+.2f}<extra></extra>",
            }
        ],
        "layout": {
            "title": {"text": f"Per-{board.group_label} z-score"},
            "height": height,
            "yaxis": {"autorange": "reversed", "automargin": True},
            "xaxis": {"automargin": True},
        },
    }


def _error_bars(group: pd.DataFrame, column: str) -> dict[str, Any] | None:
    """plotly error bars from `<column>_ci_low/high` (None without intervals; 0 where a row has none)."""
    if f"{column}_ci_low" not in group:
        return None
    mid, low, high = (group[c].astype(float) for c in (column, f"{column}_ci_low", f"{column}_ci_high"))
    return {
        "type": "data",
        "symmetric": False,
        "array": [round(float(v), 4) for v in (high - mid).fillna(0.0)],
        "arrayminus": [round(float(v), 4) for v in (mid - low).fillna(0.0)],
        "thickness": 1,
    }


def params_scatter(table: pd.DataFrame) -> dict[str, Any]:
    rows = table[table["params"].notna() & table["overall"].notna()]
    traces = []
    for family, group in rows.groupby("family", sort=True):
        trace = {
            "type": "scatter",
            "mode": "markers",
            "name": _e(family),
            "x": [float(v) for v in group["params"]],
            "y": [round(float(v), 4) for v in group["overall"]],
            "text": [_e(k) for k in group["backbone_key"]],
            "marker": {"size": 10, "symbol": ["x" if r else "circle" for r in group["is_random"]]},
            "hovertemplate": "%{text}<br>params %{x:.3s}<br>overall z %{y:+.2f}<extra></extra>",
        }
        bars = _error_bars(group, "overall")
        if bars is not None:
            trace["error_y"] = bars
        traces.append(trace)
    return {
        "data": traces,
        "layout": {
            "title": {"text": "Overall z-score vs parameter count (× = random init)"},
            "xaxis": {"type": "log", "title": {"text": "parameters"}},
            "yaxis": {"title": {"text": "overall z"}},
            "height": 480,
        },
    }


def overall_intervals(table: pd.DataFrame) -> dict[str, Any]:
    """Each backbone's overall score with its interval, in board order (a forest plot)."""
    rows = table[table["overall"].notna()]
    bars = _error_bars(rows, "overall")
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "markers",
                "x": [round(float(v), 4) for v in rows["overall"]],
                "y": [_e(k) for k in rows["backbone_key"]],
                "error_x": bars,
                "marker": {"size": 8, "symbol": ["x" if r else "circle" for r in rows["is_random"]]},
                "hovertemplate": "%{y}<br>overall z %{x:+.2f}<extra></extra>",
            }
        ],
        "layout": {
            "title": {"text": "Overall z-score with its interval (× = random init)"},
            "height": max(320, 22 * len(rows) + 160),
            "yaxis": {"autorange": "reversed", "automargin": True, "type": "category"},
            "xaxis": {"title": {"text": "overall z"}, "zeroline": True},
        },
    }


def corr_heatmap(matrix: pd.DataFrame) -> dict[str, Any]:
    labels = [_e(c) for c in matrix.columns]
    size = max(360, 24 * len(labels) + 200)
    return {
        "data": [
            {
                "type": "heatmap",
                "z": _values(matrix),
                "x": labels,
                "y": labels,
                "zmin": -1,
                "zmax": 1,
                "colorscale": "RdBu",
                "colorbar": {"title": {"text": "ρ"}},
                "hovertemplate": "%{y}<br>%{x}<br>ρ = %{z:.2f}<extra></extra>",
            }
        ],
        "layout": {
            "title": {"text": "Task × task Spearman correlation"},
            "height": size,
            "xaxis": {"automargin": True},
            "yaxis": {"automargin": True, "autorange": "reversed"},
        },
    }


def pareto_scatter(frame: pd.DataFrame) -> dict[str, Any]:
    """GMACs (log x) vs the chosen accuracy column; the front as a line, its members ringed."""
    y_label, cost_task = str(frame["y_column"].iloc[0]), str(frame["cost_task"].iloc[0])
    if y_label.startswith("value:"):  # a raw score, e.g. while nothing is z-scored
        y_label = f"{y_label.removeprefix('value:')} (raw score)"
    front = frame[frame["pareto"]].sort_values("gmacs")
    traces = []
    for family, group in frame.groupby("family", sort=True):
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": _e(family),
                "x": [float(v) for v in group["gmacs"]],
                "y": [round(float(v), 4) for v in group["y"]],
                "text": [
                    _e(k) + (" (Pareto front)" if p else "")
                    for k, p in zip(group["backbone_key"], group["pareto"], strict=True)
                ],
                "marker": {"size": 10, "symbol": ["x" if r else "circle" for r in group["is_random"]]},
                "hovertemplate": "%{text}<br>%{x:.3g} GMACs<br>%{y:.4g}<extra></extra>",
            }
        )
    traces.append(
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "Pareto front",
            "x": [float(v) for v in front["gmacs"]],
            "y": [round(float(v), 4) for v in front["y"]],
            "text": [_e(k) for k in front["backbone_key"]],
            "line": {"shape": "hv", "color": "black", "dash": "dot"},
            "marker": {"size": 16, "symbol": "circle-open", "color": "black", "line": {"width": 2}},
            "hovertemplate": "%{text}<br>on the front<extra></extra>",
        }
    )
    return {
        "data": traces,
        "layout": {
            "title": {
                "text": _e(
                    f"{y_label} vs GMACs per image ({cost_task}); ringed = Pareto front, × = random init"
                )
            },
            "xaxis": {"type": "log", "title": {"text": _e(f"GMACs per image ({cost_task})")}},
            "yaxis": {"title": {"text": _e(y_label)}},
            "height": 480,
        },
    }


PLOTLY_MODES = ("inline", "cdn")


def _no_z(board: Board) -> str:
    """Why nothing is z-scored yet, or "" when something is."""
    settings = board.settings
    if len(settings) and settings["zscored"].any():
        return ""
    most = int(settings["n_reference"].max()) if len(settings) else 0
    return (
        f"no setting is z-scored yet: each needs results from at least {board.options.min_backbones} "
        f"pretrained backbones (the most any setting has is {most})"
    )


def pareto_gap(board: Board, table: pd.DataFrame) -> str:
    """Why the accuracy-vs-MACs plot has nothing to draw, or "" when it has."""
    if len(board.pareto(table)):
        return ""
    if board.efficiency.empty:
        return (
            "No accuracy-vs-MACs plot: there are no efficiency results "
            "(e.g. `bob run --task efficiency/224` on the same backbones)."
        )
    if not any(c.endswith("(gmacs)") for c in board.efficiency.columns):
        return "No accuracy-vs-MACs plot: the efficiency results measured no GMACs."
    return (
        f"No accuracy-vs-MACs plot: no backbone shown has both GMACs and a value of {board.pareto_y} "
        "(efficiency results count for the same backbone name and backbone args)."
    )


def _gaps(board: Board, table: pd.DataFrame, matrix: pd.DataFrame) -> dict[str, str]:
    """For each plot, why it has nothing to show ("" when it has something)."""
    no_z = _no_z(board)
    cols = [f"suite:{s}" for s in board.suites]
    heat = "" if cols and table[cols].notna().to_numpy().any() else no_z or "no row shown has a suite score"
    params = table["params"].notna() & table["overall"].notna()
    scatter = "" if params.any() else no_z or "no row shown has both an overall score and a parameter count"
    n_scored = int(board.settings["zscored"].sum()) if len(board.settings) else 0
    pairs = matrix.to_numpy()[~np.eye(matrix.shape[0], dtype=bool)]  # the diagonal is 1 by definition
    corr = (
        ""
        if np.isfinite(pairs).any()
        else no_z
        or f"it needs two z-scored settings that at least {MIN_POINTS} pretrained backbones share "
        f"({n_scored} z-scored)"
    )
    return {
        "plot-suite-heatmap": heat and f"No per-{board.group_label} z-score heatmap: {heat}.",
        "plot-params": scatter and f"No overall-z vs parameters plot: {scatter}.",
        "plot-task-corr": corr and f"No task × task correlation: {corr}.",
    }


def figures_html(board: Board, table: pd.DataFrame, matrix: pd.DataFrame, plotly: str = "inline") -> str:
    """Every plot of the board as plotly divs; a plot with nothing to show is one line saying why.
    `plotly`: `inline` embeds plotly.js once (the page works offline), `cdn` loads it from plotly's CDN.
    A board with nothing to plot carries no plotly.js at all."""
    import plotly.io as pio

    gaps = _gaps(board, table, matrix)
    drawn: list[tuple[str, dict[str, Any]]] = []
    notes: list[tuple[str, str]] = []
    for div_id, build in zip(
        PLOT_IDS,
        (lambda: suite_heatmap(board, table), lambda: params_scatter(table), lambda: corr_heatmap(matrix)),
        strict=True,
    ):
        if gaps[div_id]:
            notes.append((div_id, gaps[div_id]))
        else:
            drawn.append((div_id, build()))
    pareto = board.pareto(table)
    if len(pareto):
        drawn.append((PARETO_PLOT_ID, pareto_scatter(pareto)))
    else:
        notes.append((PARETO_PLOT_ID, pareto_gap(board, table)))
    if board.intervals is not None:
        if table.get("overall_ci_low", pd.Series(dtype=float)).notna().any():
            drawn.append((INTERVALS_PLOT_ID, overall_intervals(table)))
        else:
            why = _no_z(board) or "no row shown has an overall-score interval"
            notes.append((INTERVALS_PLOT_ID, f"No overall-score interval plot: {why}."))
    parts = [
        pio.to_html(
            fig,
            include_plotlyjs=(plotly if plotly == "cdn" else True) if i == 0 else False,
            full_html=False,
            validate=False,
            div_id=div_id,
            config={"displaylogo": False},
        )
        for i, (div_id, fig) in enumerate(drawn)
    ]
    lines = "".join(
        f'<p class="plot-note" data-plot="{html.escape(div_id)}">{html.escape(text)}</p>'
        for div_id, text in notes
    )
    return lines + '<div class="plots">' + "".join(f'<div class="plot">{p}</div>' for p in parts) + "</div>"
