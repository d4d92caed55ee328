"""`bob ls backbones|tasks|datasets [PATTERN]`: the API's listings (`bob.listing`) as tables or JSON.

The listings are imported from `bob.listing` (which `bob.api` re-exports), not through `bob.api`:
each loads only its own registry, so listing backbones loads neither numpy nor the suites, and none
of them loads torch."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from bob.console import stdout_console
from bob.errors import UsageError

MAX_ROWS = 200


def ls(
    kind: Annotated[str, typer.Argument(help="backbones | tasks | datasets")],
    pattern: Annotated[
        str | None, typer.Argument(help="Glob pattern, e.g. 'timm/vit_*' or 'resnet*'.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="Do not truncate long listings.")] = False,
    args: Annotated[
        bool, typer.Option("--args", help="With `ls tasks`: also list each suite's task args.")
    ] = False,
    family: Annotated[
        str | None, typer.Option(help="Backbones of one family: cnn, vit, hierarchical, hybrid, diffusion.")
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="Pretraining method glob, e.g. 'ssl:*' or supervised.")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Pretraining data glob, e.g. 'IN-21k*' or 'LAION*'.")
    ] = None,
    group: Annotated[str | None, typer.Option(help="Catalog group: bob, seed-papers or newer.")] = None,
    max_params: Annotated[
        str | None, typer.Option(help="Fewer parameters than this, e.g. 30M (BoB's 'small').")
    ] = None,
    available: Annotated[
        bool,
        typer.Option(
            "--available",
            help="Only backbones whose pretrained weights are on this machine (BOB_WEIGHTS_PATH, the "
            "torch hub cache, the Hugging Face cache); searches every namespace.",
        ),
    ] = False,
) -> None:
    """List what exists: backbones, tasks or datasets (never imports torch).

    Example: bob ls backbones --method 'ssl:*' --max-params 30M
    """
    filters = {"family": family, "method": method, "data": data, "group": group, "max_params": max_params}
    filters["available"] = available or None
    list_kind(kind, pattern, as_json=as_json, show_all=show_all, show_args=args, filters=filters)


def list_kind(
    kind: str,
    pattern: str | None,
    as_json: bool,
    show_all: bool,
    show_args: bool = False,
    filters: dict[str, str | bool | None] | None = None,
) -> None:
    """Print one listing as a table (or JSON), with the namespace notes and task-arg tables."""
    from bob import listing  # the registries: never needed by `bob --help`

    listing.check_kind(kind)
    active = {key: value for key, value in (filters or {}).items() if value}
    if active and kind != "backbones":
        raise UsageError(
            "--family, --method, --data, --group, --max-params and --available filter backbones only."
        )
    rows = listing.rows(kind, pattern, **active)
    if as_json:
        print(json.dumps(rows, indent=1, default=str))
        return
    _print_rows(kind, pattern, rows, show_all)
    if kind == "backbones" and active.get("available") and not rows:
        stdout_console().print(
            "no pretrained weights found on this machine: put files on BOB_WEIGHTS_PATH, or run a "
            "backbone once online to fill the torch hub / Hugging Face cache",
            highlight=False,
        )
    if kind == "backbones" and pattern is None and not active:
        for ns in listing.backbone_namespaces():
            stdout_console().print(
                f"{ns['prefix']}/…  {ns['architectures']} architectures, {ns['tags']} pretrained tags "
                f"({ns['prefix']} {ns['version']}): {ns['description']}. "
                f"Try: bob ls backbones '{ns['prefix']}/resnet*'",
                highlight=False,
            )
    if show_args and kind == "tasks" and rows:
        for suite in dict.fromkeys(r["name"].split("/", 1)[0] for r in rows):
            stdout_console().print(_args_table(suite, listing.list_task_args(suite)))


def _print_rows(kind: str, pattern: str | None, rows: list[dict[str, Any]], show_all: bool) -> None:
    out = stdout_console()
    if not rows and pattern:
        out.print(f"no {kind} match '{pattern}'", markup=False, highlight=False)
    if not rows:
        return
    shown = rows if show_all else rows[:MAX_ROWS]
    table = Table(title=f"{kind} ({len(rows)})", title_justify="left")
    for col in shown[0]:
        table.add_column(col, overflow="fold")
    for row in shown:
        table.add_row(*(Text(_cell(k, v)) for k, v in row.items()))
    out.print(table)
    if len(rows) > len(shown):
        out.print(f"… {len(rows) - len(shown)} more; narrow the pattern or pass --all")


def _args_table(suite: str, args: list[dict[str, str]]) -> Table:
    table = Table(title=f"task args of {suite} (--task-arg KEY=VALUE)", title_justify="left")
    for col in ("arg", "default", "meaning"):
        table.add_column(col)
    for arg in args:
        # Text, not str: help texts hold brackets ("[/<pretrained>]") that rich would read as markup.
        table.add_row(Text(arg["arg"]), Text(arg["default"]), Text(arg["meaning"]))
    return table


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
