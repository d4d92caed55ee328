"""`bob check`: run the checks and print one row per check."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from bob.check import check_backbone
from bob.console import stdout_console
from bob.spec import parse_backbone_args
from bob.task import parse_assignments

_STYLE = {"pass": ("PASS", "green"), "fail": ("FAIL", "bold red"), "skip": ("skip", "yellow")}


def run_check(
    backbone: str, weights: str, backbone_args: list[str], image_size: int, suites: str = "*"
) -> int:
    args = parse_backbone_args(parse_assignments(backbone_args, "--backbone-arg"))
    results = check_backbone(backbone, weights, args, image_size, suites=suites)
    table = Table(title=f"bob check {backbone} [{weights}]", title_justify="left")
    for col in ("check", "result", "detail", "time"):
        table.add_column(col, overflow="fold")
    for r in results:
        label, style = _STYLE[r.status]
        table.add_row(r.name, Text(label, style=style), Text(r.detail), f"{r.seconds:.1f}s")
    out = stdout_console()
    out.print(table)
    failed = [r.name for r in results if r.status == "fail"]
    if failed:
        out.print(
            Text(f"FAILED: {', '.join(failed)}. Fix these before submitting results.", style="bold red")
        )
        return 1
    out.print(Text("All checks passed: this backbone can join the benchmark.", style="green"))
    return 0
