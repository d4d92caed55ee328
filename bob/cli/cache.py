"""`bob cache list|size|prune`: look after the feature cache and the geometry cache (`bob.cache_admin`).

Exit codes as everywhere: 0 done (entries a running sweep uses are skipped, and said so), 1 the file
system refused to remove an entry, 2 bad input (an unknown kind, a malformed size or duration, a
folder that does not exist, a prune without a criterion).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from bob.cache_admin import KINDS, Selection, list_entries, parse_duration, parse_size, roots, summarize
from bob.cache_admin import prune as run_prune
from bob.cli.options import CacheDir
from bob.console import stdout_console
from bob.preflight import format_bytes

app = typer.Typer(
    name="cache",
    help="List, size and prune the feature cache and the geometry cache (decoded pixels).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

GeometryDir = Annotated[
    Path | None,
    typer.Option(
        "--geometry-dir",
        metavar="DIR",
        help="Geometry cache of decoded pixels (default: $BOB_CACHE_DIR/pixels or ~/.cache/bob/pixels).",
    ),
]
Kind = Annotated[
    list[str] | None,
    typer.Option("--kind", metavar="KIND", help="features or pixels (repeatable; default both)."),
]
Backbone = Annotated[
    list[str] | None,
    typer.Option(
        "--backbone",
        "-b",
        metavar="GLOB",
        help="Feature entries of matching backbones, e.g. 'timm/vit_*' (repeatable). Pixel entries "
        "belong to no backbone and never match.",
    ),
]
Dataset = Annotated[
    list[str] | None,
    typer.Option("--dataset", "-d", metavar="GLOB", help="Entries of matching datasets (repeatable)."),
]
OlderThan = Annotated[
    str | None,
    typer.Option("--older-than", metavar="AGE", help="Entries not used for AGE: 90m, 12h, 30d, 2w."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _selection(
    kind: list[str] | None, backbone: list[str] | None, dataset: list[str] | None, older: str | None
):
    return Selection(
        kinds=tuple(kind) if kind else KINDS,
        backbones=tuple(backbone or ()),
        datasets=tuple(dataset or ()),
        older_than_s=parse_duration(older) if older is not None else None,
    )


def _age(t: float) -> str:
    s = max(0.0, time.time() - t)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s / n:.0f}{unit} ago"
    return "just now"


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def _size(n: int) -> str:
    return format_bytes(n)


@app.command(name="list")
def list_(
    kind: Kind = None,
    backbone: Backbone = None,
    dataset: Dataset = None,
    older_than: OlderThan = None,
    cache_dir: CacheDir = None,
    geometry_dir: GeometryDir = None,
    as_json: AsJson = False,
) -> None:
    """Every cache entry: kind, key, backbone, dataset and split, size, age, last use, state.

    State is ok, in-use (a running sweep holds its lock), partial (a write a killed process left) or
    incomplete (no completion marker). Example: bob cache list --backbone 'timm/*' --older-than 30d
    """

    paths = roots(cache_dir, geometry_dir)
    entries = list_entries(paths, _selection(kind, backbone, dataset, older_than))
    if as_json:
        print(json.dumps([e.to_dict() for e in entries], indent=1))
        return
    out = stdout_console()
    if not entries:
        where = ", ".join(f"{k}: {p}" for k, p in paths.items())
        out.print(f"no cache entries match ({where})", highlight=False, markup=False)
        return
    total = sum(e.size_bytes for e in entries)
    table = Table(title=f"cache entries ({len(entries)}, {_size(total)})", title_justify="left")
    for col, justify in (
        ("kind", "left"),
        ("key", "left"),
        ("backbone", "left"),
        ("dataset", "left"),
        ("split", "left"),
        ("size", "right"),
        ("created", "right"),
        ("last used", "right"),
        ("state", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for e in entries:
        state = f"{e.state} ({e.holder})" if e.holder else e.state
        table.add_row(
            *(
                Text(v)
                for v in (
                    e.kind,
                    e.key[:12],
                    e.backbone or ("any" if e.kind == "pixels" else ""),
                    e.dataset,
                    e.split,
                    _size(e.size_bytes),
                    _age(e.created),
                    _age(e.last_used),
                    state,
                )
            )
        )
    out.print(table)


@app.command()
def size(
    by: Annotated[str, typer.Option("--by", metavar="KEY", help="kind, backbone or dataset.")] = "kind",
    kind: Kind = None,
    cache_dir: CacheDir = None,
    geometry_dir: GeometryDir = None,
    as_json: AsJson = False,
) -> None:
    """Disk used by the caches, per kind, backbone or dataset, and what the disk has free.

    Example: bob cache size --by backbone
    """

    paths = roots(cache_dir, geometry_dir)
    selection = _selection(kind, None, None, None)
    entries = list_entries(paths, selection)
    rows = summarize(entries, by)
    total = sum(e.size_bytes for e in entries)
    free: dict[str, int | None] = {}
    for k in selection.kinds:
        existing = next((p for p in (paths[k], *paths[k].parents) if p.exists()), None)
        free[k] = shutil.disk_usage(existing).free if existing is not None else None
    if as_json:
        print(
            json.dumps(
                {
                    "by": by,
                    "groups": rows,
                    "total_bytes": total,
                    "roots": {k: str(paths[k]) for k in free},
                    "disk_free_bytes": free,
                },
                indent=1,
            )
        )
        return
    out = stdout_console()
    table = Table(title=f"cache size by {by}: {_size(total)} in {len(entries)} entries", title_justify="left")
    table.add_column(by, overflow="fold")
    table.add_column("entries", justify="right")
    table.add_column("size", justify="right")
    table.add_column("in use", justify="right")
    for row in rows:
        table.add_row(Text(str(row[by])), str(row["entries"]), _size(row["size_bytes"]), str(row["in_use"]))
    out.print(table)
    for k in selection.kinds:
        left = f", {_size(free[k])} free on its disk" if free[k] is not None else ""
        out.print(f"{k}: {paths[k]}{left}", highlight=False, markup=False)


@app.command()
def prune(
    older_than: OlderThan = None,
    backbone: Backbone = None,
    dataset: Dataset = None,
    max_size: Annotated[
        str | None,
        typer.Option(
            "--max-size",
            metavar="SIZE",
            help="Remove the least recently used entries until the caches hold at most SIZE (500M, 20G).",
        ),
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Remove every entry that is not in use.")] = False,
    kind: Kind = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")
    ] = False,
    cache_dir: CacheDir = None,
    geometry_dir: GeometryDir = None,
    as_json: AsJson = False,
) -> None:
    """Remove cache entries by age, backbone, dataset or a size budget; never one a running sweep uses.

    Filters combine (all must match); --max-size then removes the least recently used of them until
    the caches fit. A removed feature set is extracted again when a run needs it.
    Example: bob cache prune --older-than 30d --dry-run
    """

    paths = roots(cache_dir, geometry_dir)
    selection = _selection(kind, backbone, dataset, older_than)
    budget = parse_size(max_size) if max_size is not None else None
    report = run_prune(paths, selection, max_size=budget, everything=everything, dry_run=dry_run)
    if as_json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        _print_report(report)
    if report.failed:
        raise typer.Exit(1)


def _print_report(report: Any) -> None:
    out = stdout_console()
    verb = "would remove" if report.dry_run else "removed"
    if report.removed:
        table = Table(title=f"{verb} {_entries(len(report.removed))}", title_justify="left")
        for col in ("kind", "key", "backbone", "dataset", "split", "size", "last used", "state"):
            table.add_column(
                col, overflow="fold", justify="right" if col in ("size", "last used") else "left"
            )
        for e in report.removed:
            table.add_row(
                *(
                    Text(v)
                    for v in (
                        e.kind,
                        e.key[:12],
                        e.backbone,
                        e.dataset,
                        e.split,
                        _size(e.size_bytes),
                        _age(e.last_used),
                        e.state,
                    )
                )
            )
        out.print(table)
    for e in report.skipped_in_use:
        who = f" by {e.holder}" if e.holder else ""
        out.print(f"kept {e.kind} {e.key[:12]}: in use{who}", highlight=False, markup=False)
    for e, why in report.failed:
        out.print(f"could not remove {e.path}: {why}", highlight=False, markup=False)
    out.print(
        f"{verb} {_entries(len(report.removed))} ({_size(report.freed_bytes)}); the caches hold "
        f"{_size(report.kept_bytes)}" + (" (dry run: nothing was removed)" if report.dry_run else ""),
        highlight=False,
        markup=False,
    )
