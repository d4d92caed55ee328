"""The layout rules of docs/architecture.md, checked on the source (import statements read with `ast`).

- the engine (bob/, backbones/) never imports a suite; suites are found through the registry;
- a suite never imports another suite, and tasks/common/ never imports a suite;
- no import cycles between bob's modules;
- function-level imports of bob's own modules only at the engine's few lazy boundaries (listed here,
  each with its reason); a suite has none: `Task.run` imports its run.py through the registry;
- every suite folder has the anatomy: a torch-free __init__.py with exactly one Task subclass (named
  by the rule), run.py with `run(task, ctx)`; datasets.yaml and the other modules only as needed.
"""

from __future__ import annotations

import ast
import importlib.util
import runpy
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("layout_report", ROOT / "scripts" / "layout_report.py")
layout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(layout)

FILES = layout.module_files(ROOT)
KNOWN = set(FILES)
IMPORTS = {module: layout.imports_of(module, path, KNOWN) for module, path in FILES.items()}
SUITE_FOLDERS = sorted(
    p.name for p in (ROOT / "tasks").iterdir() if (p / "__init__.py").exists() and p.name != "common"
)

# (importing module, imported module): the engine's lazy boundaries, where an import waits until a
# function runs so that `bob --help`, `bob ls` and sweep planning never import torch or pandas.
LAZY_BOUNDARIES: dict[tuple[str, str], str] = {
    ("bob", "bob.api"): "PEP 562: `import bob` stays light; the API loads on first use",
    ("bob.cli.run", "bob.api"): "`bob --help` loads typer and rich only; commands load the API",
    ("bob.cli.check", "bob.api"): "`bob --help` loads typer and rich only; commands load the API",
    ("bob.cli.sweep", "bob.api"): "`bob --help` loads typer and rich only; commands load the API",
    ("bob.cli.leaderboard", "bob.cli.board"): "the command's body builds and prints the board: pandas",
    ("bob.cli.ls", "bob.listing"): "`bob --help` loads typer and rich only; `bob ls` loads the listings",
    ("bob.listing", "bob.backbones.catalog"): "each listing loads only its own registry (`bob ls` speed)",
    ("bob.listing", "bob.suites"): "each listing loads only its own registry; suites bring numpy",
    ("bob.listing", "bob.data"): "each listing loads only its own registry; datasets bring numpy",
    ("bob.api", "bob.leaderboard"): "pandas, scipy, plotly: only to build a board, never for ls or sweeps",
    ("bob.cli.compare", "bob.api"): "`bob --help` loads typer and rich only; commands load the API",
    ("bob.api", "bob.compare"): "the comparison reads result and per-sample files: pandas, numpy",
    ("bob.api", "bob.check"): "the contract checks run the model (torch): `check`, a sweep's own backbones",
    ("bob.runner", "bob.context"): "the run context imports torch (backbone, extraction); planning does not",
}


def _suite_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["bob", "tasks"] else None


def test_the_engine_never_imports_a_suite():
    found = [
        f"{m} imports {t}"
        for m, imports in IMPORTS.items()
        if not m.startswith("bob.tasks")
        for t, *_ in imports
        if t.startswith("bob.tasks")
    ]
    assert found == []


def test_a_suite_never_imports_another_suite_and_common_imports_none():
    found = []
    for module, imports in IMPORTS.items():
        own = _suite_of(module)
        if own is None:
            continue
        for target, *_ in imports:
            other = _suite_of(target)
            if other is not None and other not in ("common", own):
                found.append(f"{module} imports {target}")
    assert found == []


def test_there_are_no_import_cycles():
    graph = {m: {t for t, _, typed in imports if not typed and t != m} for m, imports in IMPORTS.items()}
    assert layout.cycles(graph) == []


def test_function_level_imports_of_bob_modules_sit_only_at_the_lazy_boundaries():
    found = sorted(
        {(m, t) for m, imports in IMPORTS.items() for t, in_func, _ in imports if in_func and t != m}
        - set(LAZY_BOUNDARIES)
    )
    assert found == []


@pytest.mark.parametrize("folder", SUITE_FOLDERS)
def test_every_suite_folder_has_the_anatomy(folder):
    from bob.suites import TASKS_PACKAGE, suite_folders

    assert folder in suite_folders()
    run = ROOT / "tasks" / folder / "run.py"
    assert run.exists(), f"tasks/{folder}/ has no run.py"
    functions = {n.name for n in ast.parse(run.read_text()).body if isinstance(n, ast.FunctionDef)}
    assert "run" in functions, f"tasks/{folder}/run.py defines no run(task, ctx)"
    code = (
        "import sys, importlib\n"
        f"module = importlib.import_module('{TASKS_PACKAGE}.{folder}')\n"
        "heavy = [m for m in ('torch', 'torchvision', 'timm', 'sklearn', 'scipy', 'pandas') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, f"tasks/{folder}/__init__.py imports heavy modules: {proc.stdout}"


def test_suite_classes_follow_the_naming_rule_and_declare_their_metadata():
    from bob.suites import SUITES

    for cls in SUITES.classes():
        assert cls.__name__ == cls.class_name()
        assert cls.Args.__name__ == f"{cls.class_name()}Args" and cls.Args.__module__ == cls.__module__
        assert cls.__module__ == f"bob.tasks.{cls.suite.replace('-', '_')}"
        assert cls.version and cls.main_metric and cls.description and cls.task_types


def test_setup_finds_every_package_folder():
    """A wheel ships what setup.py lists: every folder with an __init__.py, under its installed name."""
    with mock.patch("setuptools.setup"):  # find the packages, build nothing
        listed = set(runpy.run_path(str(ROOT / "setup.py"))["packages"]())
    on_disk = set()
    for folder, name in (("bob", "bob"), ("backbones", "bob.backbones"), ("tasks", "bob.tasks")):
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([name, *rel.parts]))
    assert on_disk == listed
