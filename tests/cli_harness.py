"""Running `bob` in this process for tests, and the file set-ups of the bad-input corpus.

`invoke(argv, capsys)` is `bob ARGV` through `bob.cli.main`, returning the exit code and all output;
`assert_hint_exists` checks that a command a message suggests (`bob ...` in backticks) exists with
the options it names. The set-up helpers write what a case needs into the folder it runs in.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.leaderboard_results import write_result

TINY = "timm/test_resnet"
Setup = Callable[[Path, pytest.MonkeyPatch], None]
REPO = Path(__file__).resolve().parents[1]


def bob_run_on_cpu(
    tmp: Path,
    backbone: str,
    tasks: Sequence[str],
    task_args: Sequence[str] = (),
    *flags: str,
    env: dict[str, str] | None = None,
    launcher: Sequence[str] | None = None,
) -> subprocess.CompletedProcess:
    """`bob run -b BACKBONE -w random -t TASKS -a ... --device cpu` in a subprocess (how a launched
    data-parallel run must be tested: its ranks are processes), results under `tmp/results`, the
    feature cache under `tmp/cache`; collectives time out after 60 s, never a hung test. `launcher`
    replaces `python -m` (e.g. torch's elastic launcher)."""
    command = [*(launcher or [sys.executable, "-m"]), "bob.cli", "run", "-b", backbone, "-w", "random"]
    command += ["-t", ",".join(tasks), *(f"-a{a}" for a in task_args), "--device", "cpu", "--quiet"]
    command += ["--results-dir", str(tmp / "results"), "--cache-dir", str(tmp / "cache"), *flags]
    full_env = {**os.environ, "BOB_DDP_TIMEOUT_S": "60", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=full_env)


def files(**contents: str) -> Setup:
    """Write these files (name -> text) into the case's folder."""

    def setup(tmp: Path, _: pytest.MonkeyPatch) -> None:
        for name, text in contents.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    return setup


def sweep(body: str) -> Setup:
    return files(**{"s.yaml": body})


def grid(backbones: str = f"[{TINY}]", tasks: str = "[knn/shapes-mini]", extra: str = "") -> str:
    return f"name: t\n{extra}grids:\n  - backbones: {backbones}\n    weights: [random]\n    tasks: {tasks}\n"


def results(status: str = "ok") -> Setup:
    def setup(tmp: Path, _: pytest.MonkeyPatch) -> None:
        for i, name in enumerate(("cnn-a", "vit-b", "vit-c")):
            write_result(tmp / "raw", name, "knn/digits", 0.5 + i / 10, status=status)

    return setup


def read_only(name: str) -> Setup:
    """`name` refuses writes as a read-only mount would (tests may run as root, which chmod cannot stop)."""

    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import bob.preflight

        (tmp / name).mkdir()
        real = os.access
        monkeypatch.setattr(
            bob.preflight.os, "access", lambda p, mode: False if Path(p) == tmp / name else real(p, mode)
        )
        monkeypatch.setattr(bob.preflight, "_read_only", lambda p: Path(p) == tmp / name)

    return setup


def full_disk(name: str) -> Setup:
    """`name` lives on a disk with no space left (the pre-flight check reads the free space)."""

    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import bob.preflight

        real = bob.preflight.free_bytes
        monkeypatch.setattr(
            bob.preflight, "free_bytes", lambda p: 0 if Path(p).absolute() == tmp / name else real(p)
        )

    return setup


def damaged_result(raw: Path) -> None:
    from bob.results import ResultStore
    from bob.spec import make_spec

    path = ResultStore(raw).path_for(make_spec(TINY, "knn/digits", "random"))
    path.parent.mkdir(parents=True)
    path.write_text("{")


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under root."""
    out: dict[str, bytes | None] = {}
    for path in root.rglob("*"):
        out[str(path.relative_to(root))] = path.read_bytes() if path.is_file() else None
    return out


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`bob ARGV` in this process: its exit code and everything it printed."""
    from bob.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    captured = capsys.readouterr()
    code = exit_.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), captured.out + captured.err


HINT = re.compile(r"`bob ([^`]*)`")
_HELP: dict[str, str] = {}


def assert_hint_exists(hint: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A suggested `bob CMD ...` names an existing command, and each --option it uses is that command's."""
    words = shlex.split(hint.replace("...", ""))
    if not words or words[0].startswith("-"):
        return  # `bob --help`
    command = words[0]
    if command not in _HELP:
        code, text = invoke([command, "--help"], capsys)
        assert code == 0, f"the hint `bob {hint}` names no command"
        _HELP[command] = text
    for option in (w.split("=")[0] for w in words[1:] if w.startswith("--")):
        assert option in _HELP[command], f"the hint `bob {hint}` uses {option}, which `bob {command}` lacks"
    if command == "ls":
        kind = next((w for w in words[1:] if not w.startswith("-")), None)
        assert kind in (None, "backbones", "tasks", "datasets"), f"the hint `bob {hint}` lists no such kind"
