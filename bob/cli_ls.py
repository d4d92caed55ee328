"""`bob ls backbones|tasks|datasets [PATTERN]`: listings that never import torch."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from bob.console import stdout_console
from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest

MAX_ROWS = 200


def _params(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def _cell(key: str, value: Any) -> str:
    if key == "params":
        return _params(value)
    if value is None:  # e.g. the class count of a dataset without classes (IQA scores, detection scenes)
        return "—"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


@dataclass
class BackboneFilter:
    """`bob ls backbones` filters: exact family, glob on method and data, catalog group, size cap."""

    family: str | None = None
    method: str | None = None
    data: str | None = None
    group: str | None = None
    max_params: str | None = None

    def active(self) -> bool:
        return any(vars(self).values())

    def keep(self, row: dict[str, Any]) -> bool:
        if self.family and row.get("family") != self.family:
            return False
        for key in ("method", "data"):
            pattern = getattr(self, key)
            if pattern and not fnmatch.fnmatchcase(str(row.get(key) or "").lower(), pattern.lower()):
                return False
        if self.group and self.group not in row.get("groups", ()):
            return False
        limit = parse_count(self.max_params) if self.max_params else None
        return limit is None or (row.get("params") is not None and row["params"] < limit)


def parse_count(text: str) -> int:
    """`30M`, `1.5B`, `800K` or a plain integer."""
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(text[-1:].upper(), 1)
    try:
        return int(float(text[:-1] if scale != 1 else text) * scale)
    except ValueError:
        raise UsageError(f"--max-params takes a count such as 30M, 1.5B or 25000000, got '{text}'.") from None


def _backbones(
    pattern: str | None, filters: BackboneFilter | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    from bob.backbones.catalog import BACKBONES, describe, load_index

    notes = []
    if filters is not None and filters.active():
        names = BACKBONES.names(pattern) if pattern else BACKBONES.names()
        return [row for row in map(describe, names) if filters.keep(row)], notes
    if pattern is None:
        rows = [describe(name) for name in BACKBONES.names(namespaces=False)]
        for prefix, ns in BACKBONES.namespaces.items():
            index = load_index(prefix)
            n_arch = len(index["architectures"])
            n_tags = sum(len(a["tags"]) for a in index["architectures"].values())
            notes.append(
                f"{prefix}/…  {n_arch} architectures, {n_tags} pretrained tags ({prefix} {index['version']}): "
                f"{ns.description}. Try: bob ls backbones '{prefix}/resnet*'"
            )
        return rows, notes
    return [describe(name) for name in BACKBONES.names(pattern)], notes


def _tasks(pattern: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    from bob.suites import SUITES, task_names

    rows = []
    for name in task_names(pattern):
        suite = SUITES.get(name.split("/", 1)[0])
        rows.append({"name": name, "main_metric": suite.main_metric, "description": suite.description})
    return rows, []


def _datasets(pattern: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    from bob.data import DATASETS

    rows = []
    for name in DATASETS.names(pattern):  # source and license: `bob ls datasets --json`
        info = DATASETS.get(name).meta["info"]
        rows.append(
            {
                "name": name,
                "kind": info.kind,
                "classes": info.num_classes,
                "splits": ",".join(info.splits),
                "image_size": info.image_size or "backbone's",
            }
        )
    return rows, []


LISTERS: dict[str, Callable[[str | None], tuple[list[dict[str, Any]], list[str]]]] = {
    "backbones": _backbones,
    "tasks": _tasks,
    "datasets": _datasets,
}


def _suite_args_tables(rows: list[dict[str, Any]]) -> list[Table]:
    from bob.suites import task_class
    from bob.task import describe_args

    tables = []
    for suite in dict.fromkeys(r["name"].split("/", 1)[0] for r in rows):
        table = Table(title=f"task args of {suite} (--task-arg KEY=VALUE)", title_justify="left")
        for col in ("arg", "default", "meaning"):
            table.add_column(col)
        for name, default, help_ in describe_args(task_class(suite).Args):
            table.add_row(name, default, help_)
        tables.append(table)
    return tables


def list_kind(
    kind: str,
    pattern: str | None,
    as_json: bool,
    show_all: bool,
    show_args: bool = False,
    filters: BackboneFilter | None = None,
) -> None:
    if kind not in LISTERS:
        raise UnknownNameError(
            "listing", kind, suggest(kind, LISTERS), "Use one of: backbones, tasks, datasets."
        )
    if filters is not None and filters.active() and kind != "backbones":
        raise UsageError("--family, --method, --data, --group and --max-params filter backbones only.")
    rows, notes = _backbones(pattern, filters) if kind == "backbones" else LISTERS[kind](pattern)
    out = stdout_console()
    if as_json:
        print(json.dumps(rows, indent=1, default=str))
        return
    if not rows and pattern:
        out.print(f"no {kind} match '{pattern}'")
    if rows:
        shown = rows if show_all else rows[:MAX_ROWS]
        table = Table(title=f"{kind} ({len(rows)})", title_justify="left")
        for col in shown[0]:
            table.add_column(col, overflow="fold")
        for row in shown:
            table.add_row(*(_cell(k, v) for k, v in row.items()))
        out.print(table)
        if len(rows) > len(shown):
            out.print(f"… {len(rows) - len(shown)} more; narrow the pattern or pass --all")
    for note in notes:
        out.print(note, highlight=False)
    if show_args and kind == "tasks" and rows:
        for table in _suite_args_tables(rows):
            out.print(table)
