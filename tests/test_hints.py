"""Every command an error message suggests exists: the `bob ...` hints in the source's message
strings, and the hints the registries build at run time, run against the real command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bob.backbones.catalog import BACKBONES
from bob.data import DATASETS
from bob.errors import UsageError
from bob.suites import SUITES, parse_task_name
from tests.cli_harness import HINT, assert_hint_exists

SOURCE_DIRS = ("bob", "backbones", "tasks")
ROOT = Path(__file__).resolve().parents[1]


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module and of its classes and functions (prose, not messages)."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            found.add(id(first.value))
    return found


def _message_texts(path: Path) -> list[str]:
    """The string literals of a module that are not docstrings; f-strings with `{}` for each value."""
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree)
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            texts.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
            skip.update(id(v) for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            texts.append(node.value)
    return texts


def source_hints() -> list[tuple[str, str]]:
    """(file, hint) for every `bob ...` command in backticks in a message string of the source."""
    out = []
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for text in _message_texts(path):
                out += [(str(path.relative_to(ROOT)), hint) for hint in HINT.findall(text)]
    return out


def test_every_command_a_message_suggests_exists(capsys) -> None:
    hints = source_hints()
    assert len(hints) >= 10, "the scan found the hints"
    checked = 0
    for where, hint in hints:
        if "{}" in hint.split()[0] or (hint.startswith("ls ") and "{}" in hint.split()[1]):
            continue  # a command built at run time: the registries' hints are checked below
        try:
            assert_hint_exists(hint.replace("{}", "X"), capsys)
        except AssertionError as err:
            raise AssertionError(f"{where}: {err}") from None
        checked += 1
    assert checked >= 10


def test_every_registry_hint_names_an_existing_listing(capsys) -> None:
    lookups = [
        lambda: BACKBONES.get("zzz/nothing"),
        lambda: BACKBONES.get("nothing"),
        lambda: DATASETS.get("nothing"),
        lambda: SUITES.get("nothing"),
        lambda: parse_task_name("nothing/nothing"),
    ]
    for lookup in lookups:
        with pytest.raises(UsageError) as err:
            lookup()
        hints = HINT.findall(str(err.value))
        assert hints, f"no command suggested in: {err.value}"
        for hint in hints:
            assert_hint_exists(hint, capsys)
