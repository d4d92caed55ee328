"""The one rich console bob writes to (stderr, so stdout stays clean for tables and JSON)."""

from __future__ import annotations

from functools import cache
from typing import Any

# Piped output and CI logs get a wide fixed width instead of rich's 80-column default, so
# tables of long backbone names do not fold.
_PIPE_WIDTH = 200


@cache
def console() -> Any:
    from rich.console import Console

    c = Console(stderr=True)
    return c if c.is_terminal else Console(stderr=True, width=_PIPE_WIDTH)


@cache
def stdout_console() -> Any:
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=_PIPE_WIDTH)
