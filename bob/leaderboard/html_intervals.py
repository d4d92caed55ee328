"""The HTML board's interval sections: how sure the ranking is, and the two-row comparison panel.

Every string from a result file is HTML-escaped here; the comparison panel's data is JSON in a
non-executed script element (compare_view.py) and its script builds the result table with
`textContent` only, never from HTML strings.
"""

from __future__ import annotations

import html

import pandas as pd

from bob.leaderboard import format as fmt
from bob.leaderboard.aggregate import Board
from bob.leaderboard.compare_view import compare_payload, payload_script


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(header: list[str], rows: list[list[str]], table_id: str) -> str:
    heads = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>'


def _adjacent(board: Board) -> str:
    iv = board.intervals
    told, pairs = iv.distinguishable  # type: ignore[union-attr]
    if not pairs:
        return ""
    rows = [
        [
            esc(f"{r['position']}–{r['position'] + 1}"),
            f"{esc(r['a'])} vs {esc(r['b'])}",
            esc(fmt.num(r["diff"], signed=True)),
            esc(fmt.interval(r["ci_low"], r["ci_high"], signed=True)),
            "yes" if r["distinguishable"] else "no",
        ]
        for _, r in iv.adjacent.iterrows()  # type: ignore[union-attr]
    ]
    return (
        f"<p>{told} of {pairs} adjacent pairs of ranked backbones are distinguishable at "
        f"{iv.confidence:.0%} (the interval of their paired overall-score difference excludes 0).</p>"  # type: ignore[union-attr]
        + _table(["positions", "backbones", "Δ overall", "interval", "distinguishable"], rows, "adjacent")
    )


def _missing(board: Board) -> str:
    iv = board.intervals
    if iv is None or not iv.runs_without:
        return ""
    runs = board.runs.set_index("id")
    reasons, listed = iv.missing()
    rows = [
        [
            esc(runs.at[i, "backbone_key"]),
            esc(runs.at[i, "setting"]),
            esc(runs.at[i, "seed"]),
            esc(iv.runs_without[i]),
        ]
        for i in listed
    ]
    parts = [
        f"<p>{len(iv.runs_without)} run(s) have no interval ({fmt.NO_INTERVAL} on the board):</p>",
        "<ul>" + "".join(f"<li>{count} × {esc(why)}</li>" for why, count in reasons.items()) + "</ul>",
        _table(["backbone", "setting", "seed", "why"], rows, "no-samples"),
    ]
    if len(iv.runs_without) > len(listed):
        more = len(iv.runs_without) - len(listed)
        parts.append(
            f"<p>… and {more} more: the <code>samples</code> column of leaderboard_long.csv lists every run.</p>"
        )
    return "".join(parts)


def interval_section(board: Board) -> str:
    """The method, the neighbours told apart, the notes, and the runs without an interval."""
    iv = board.intervals
    if iv is None:
        return ""
    notes = "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in iv.notes) + "</ul>" if iv.notes else ""
    return (
        f"<h2>How sure is the ranking?</h2><p>{esc(iv.describe())}</p>"
        + _adjacent(board)
        + notes
        + _missing(board)
    )


def compare_section(board: Board, table: pd.DataFrame) -> str:
    """The panel that compares the two ticked rows, and the replicates it reads."""
    payload = compare_payload(board, table)
    if payload is None:
        return ""
    return (
        '<section id="compare"><h2>Compare two backbones</h2>'
        "<p>Tick two rows of the board (last column). Per setting both ran: the difference A − B with its "
        f"{board.intervals.confidence:.0%} interval from the same paired resamples as the board, the paired-bootstrap "  # type: ignore[union-attr]
        "p-value and Holm's correction across the settings; then the overall-score difference. McNemar's "
        "test for top-1 needs the per-sample files: <code>bob compare A B</code>.</p>"
        '<div id="compare-out"><p>No two rows ticked.</p></div></section>' + payload_script(payload)
    )
