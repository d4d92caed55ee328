"""Views: which backbones a board shows (`--filter key=value`) and how rows are grouped.

Filters choose rows to show; scores are always computed against every backbone in the results, so
a filtered view (say, only CNNs) shows the same z-scores as the full board.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from bob.errors import UsageError

# filter key → the board column it matches (globs, case-insensitive)
FILTER_KEYS: dict[str, str] = {
    "family": "family",
    "method": "method",
    "data": "pretrain_data",
    "size": "size",
    "backbone": "backbone",
    "weights": "weights",
    "standing": "standing",
}
GROUP_KEYS = ("family", "method_class", "pretrain_data", "size")


@dataclass(frozen=True)
class RowFilter:
    key: str
    pattern: str

    @classmethod
    def parse(cls, text: str) -> RowFilter:
        key, sep, pattern = text.partition("=")
        key = key.strip().lower()
        if not sep or not pattern.strip():
            raise UsageError(
                f"--filter takes KEY=GLOB (e.g. family=cnn, method='ssl:*', size=small), got {text!r}."
            )
        if key not in FILTER_KEYS:
            raise UsageError(f"Unknown --filter key {key!r}; use one of: {', '.join(FILTER_KEYS)}.")
        return cls(key, pattern.strip())

    def mask(self, table: pd.DataFrame) -> pd.Series:
        column = table[FILTER_KEYS[self.key]].astype(str).str.lower()
        pattern = self.pattern.lower()
        match: Callable[[str], bool] = lambda v: fnmatch.fnmatchcase(v, pattern)  # noqa: E731
        return column.map(match).astype(bool)


def apply_filters(table: pd.DataFrame, filters: list[RowFilter]) -> pd.DataFrame:
    """The rows matching every filter (filters on the same key are alternatives)."""
    keep = pd.Series(True, index=table.index)
    by_key: dict[str, list[RowFilter]] = {}
    for f in filters:
        by_key.setdefault(f.key, []).append(f)
    for same_key in by_key.values():
        any_of = pd.Series(False, index=table.index)
        for f in same_key:
            any_of |= f.mask(table)
        keep &= any_of
    return table[keep]
