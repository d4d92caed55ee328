"""The board's plotly figures: z-score heatmap (backbones × suites), overall z vs parameter count
coloured by family, and the task × task correlation heatmap. plotly.js is embedded once, inline.

Figures are plain plotly figure dicts (no graph_objects validation: the board builds them itself and
this keeps building a board fast); labels are HTML-escaped because plotly reads tags inside them.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from bob.leaderboard.aggregate import Board

PLOT_IDS = ("plot-suite-heatmap", "plot-params", "plot-task-corr")


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
            "title": {"text": "Per-suite z-score"},
            "height": height,
            "yaxis": {"autorange": "reversed", "automargin": True},
            "xaxis": {"automargin": True},
        },
    }


def params_scatter(table: pd.DataFrame) -> dict[str, Any]:
    rows = table[table["params"].notna() & table["overall"].notna()]
    traces = []
    for family, group in rows.groupby("family", sort=True):
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": _e(family),
                "x": [float(v) for v in group["params"]],
                "y": [round(float(v), 4) for v in group["overall"]],
                "text": [_e(k) for k in group["backbone_key"]],
                "marker": {"size": 10, "symbol": ["x" if r else "circle" for r in group["is_random"]]},
                "hovertemplate": "%{text}<br>params %{x:.3s}<br>overall z %{y:+.2f}<extra></extra>",
            }
        )
    return {
        "data": traces,
        "layout": {
            "title": {"text": "Overall z-score vs parameter count (× = random init)"},
            "xaxis": {"type": "log", "title": {"text": "parameters"}},
            "yaxis": {"title": {"text": "overall z"}},
            "height": 480,
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


def figures_html(board: Board, table: pd.DataFrame, matrix: pd.DataFrame) -> str:
    import plotly.io as pio

    figures = [suite_heatmap(board, table), params_scatter(table), corr_heatmap(matrix)]
    parts = []
    for i, (div_id, fig) in enumerate(zip(PLOT_IDS, figures, strict=True)):
        parts.append(
            pio.to_html(
                fig,
                include_plotlyjs=i == 0,
                full_html=False,
                validate=False,
                div_id=div_id,
                config={"displaylogo": False},
            )
        )
    return '<div class="plots">' + "".join(f'<div class="plot">{p}</div>' for p in parts) + "</div>"
