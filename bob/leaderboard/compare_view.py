"""The data behind the HTML board's "compare two backbones" panel: every shown backbone's bootstrap
replicates (each setting's score, and the overall score), embedded in the page as JSON. The JSON
holds numbers only: row i is the board's i-th row and setting j the settings table's j-th row, whose
names the page's script reads from those (escaped) tables, so no string from a result file is
repeated inside a script element.

Replicates of one cell are paired with those of any other cell of the same setting (the same test
resample), so the page takes the difference of two rows resample by resample, exactly as
`bob compare` does (bob/compare.py): percentile interval, two-sided bootstrap p-value, Holm's
correction across settings. To keep the page small each replicate vector is stored as 16-bit
integers between its minimum and maximum (error below 1/65,534 of the cell's own spread; the
value 65,535 marks a resample where the metric is undefined), base64-encoded.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pandas as pd

from bob.leaderboard.aggregate import Board

LEVELS = 65534  # quantisation steps; LEVELS + 1 marks NaN


def quantise(values: np.ndarray) -> dict[str, Any]:
    """{"b64": uint16 little-endian codes, "lo": min, "step": (max − min) / LEVELS}."""
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if len(finite) else 0.0
    hi = float(finite.max()) if len(finite) else 0.0
    step = (hi - lo) / LEVELS if hi > lo else 1.0
    codes = np.where(np.isfinite(values), np.rint((np.nan_to_num(values, nan=lo) - lo) / step), LEVELS + 1)
    raw = codes.astype("<u2").tobytes()
    return {"b64": base64.b64encode(raw).decode("ascii"), "lo": lo, "step": step}


def dequantise(payload: dict[str, Any]) -> np.ndarray:
    codes = np.frombuffer(base64.b64decode(payload["b64"]), dtype="<u2").astype(np.float64)
    return np.where(codes > LEVELS, np.nan, payload["lo"] + codes * payload["step"])


def compare_payload(board: Board, table: pd.DataFrame) -> dict[str, Any] | None:
    """The panel's data for the rows of `table`, or None without intervals."""
    iv = board.intervals
    if iv is None or not iv.any:
        return None
    settings = board.settings
    index = {s: i for i, s in enumerate(settings["setting"])}
    points = board.cells.set_index(["backbone_key", "setting"])["mean"].to_dict()
    rows = []
    for key, overall in zip(table["backbone_key"], table["overall"], strict=True):
        cells = {
            str(index[setting]): {
                **quantise(iv.cells[(key, setting)]),
                "point": float(points[(key, setting)]),
            }
            for setting in settings["setting"]
            if (key, setting) in iv.cells
        }
        row: dict[str, Any] = {"cells": cells}
        if key in iv.overall and pd.notna(overall):
            row["overall"] = {**quantise(iv.overall[key]), "point": float(overall)}
        rows.append(row)
    return {
        "resamples": iv.resamples,
        "confidence": iv.confidence,
        "settings": [{"higher": bool(h)} for h in settings["higher_is_better"]],
        "rows": rows,
    }


def payload_script(payload: dict[str, Any] | None) -> str:
    """The JSON in a non-executed script element; `<`, `>` and `&` escaped so no text closes it."""
    if payload is None:
        return ""
    text = json.dumps(payload, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="replicates">{text}</script>'
