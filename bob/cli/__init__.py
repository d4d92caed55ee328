"""The `bob` command line: a thin layer over the Python API (`bob.api`), one module per command.

Exit codes: 0 every run ok (or already done), 1 a run failed, 2 bad usage or bad input found before
anything ran, for every command. Tracebacks are shown only with --debug; every error bob raises on
purpose is one clear paragraph, and a file-system fault nobody foresaw is one line with its path.
Each command imports `bob.api` when it runs, so `bob --help` loads typer and rich and nothing else.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.text import Text

from bob import __version__
from bob.cli import cache, check, compare, leaderboard, ls, run, sweep
from bob.cli.options import STATE
from bob.console import console
from bob.errors import BobError
from bob.preflight import os_error_cause

app = typer.Typer(
    name="bob",
    help="bob: benchmark pretrained vision backbones on a battery of task suites.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"bob {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    STATE["debug"] = debug
    from rich.logging import RichHandler  # rich's traceback machinery: not for `bob --help`

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console(), show_path=debug, rich_tracebacks=debug)],
    )
    logging.getLogger("bob").setLevel(logging.DEBUG if debug else logging.INFO)


# In the order `bob --help` lists them.
app.command(name="run")(run.run)
app.command(name="check")(check.check)
app.command(name="ls")(ls.ls)
app.command(name="leaderboard")(leaderboard.leaderboard)
app.command(name="compare")(compare.compare)
app.command(name="sweep")(sweep.sweep)
app.add_typer(cache.app, name="cache")


# Commands whose own `--quiet` / `-q` option `bob --quiet CMD ...` is moved to.
_QUIET_COMMANDS = {"run", "sweep"}


def placed_flags(argv: list[str]) -> list[str]:
    """`--debug` and `--quiet` where the user put them: `bob run --debug ...` means `bob --debug run
    ...` (--debug is an option of `bob` itself), and `bob --quiet run ...` means `bob run --quiet ...`
    (--quiet belongs to the commands with progress bars). Nothing after a `--` separator moves."""
    end = argv.index("--") if "--" in argv else len(argv)
    head, tail = argv[:end], argv[end:]
    command = next((i for i, arg in enumerate(head) if not arg.startswith("-")), None)
    if command is None:
        return argv
    before, name, after = head[:command], head[command], head[command + 1 :]
    debug = [a for a in after if a == "--debug"]
    quiet = [a for a in before if a in ("--quiet", "-q")] if name in _QUIET_COMMANDS else []
    before = [a for a in before if a not in quiet] + debug[:1]
    after = [a for a in after if a != "--debug"] + quiet[:1]
    return [*before, name, *after, *tail]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: BobErrors become one paragraph and their exit code. `argv` (the
    arguments after `bob`) defaults to the command line; tests pass their own."""
    argv = placed_flags(sys.argv[1:] if argv is None else list(argv))
    try:
        code = app(args=argv, prog_name="bob", standalone_mode=False)  # returns the code of a typer.Exit
    except BobError as err:
        if STATE["debug"]:
            console().print_exception()
        console().print(Text.assemble(("error: ", "bold red"), str(err)), highlight=False)
        sys.exit(err.exit_code)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        console().print("interrupted; finished runs are saved, the interrupted one left nothing behind")
        sys.exit(130)
    except OSError as err:
        # A file-system fault bob did not foresee: one line naming the path and the cause (the
        # traceback with --debug), exit 1, since it may have happened after runs started.
        if STATE["debug"]:
            console().print_exception()
        where = f"{err.filename}: " if err.filename else ""
        console().print(
            Text.assemble(("error: ", "bold red"), f"{where}{os_error_cause(err)}"), highlight=False
        )
        sys.exit(1)
    except Exception as err:
        # Usage errors of the command-line parser (unknown option, missing value) show themselves and
        # carry exit code 2. typer vendors click, so they are recognised by shape, not by class.
        if callable(getattr(err, "show", None)) and isinstance(getattr(err, "exit_code", None), int):
            err.show()
            sys.exit(err.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)
