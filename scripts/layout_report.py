"""Report the shape of bob's source: import cycles, function-level imports, `Any` parameters in tasks/,
and the file- and function-length distributions.

    python scripts/layout_report.py          # a readable report
    python scripts/layout_report.py --json   # the same numbers as JSON

It reads the source with `ast` only (nothing is imported), so it runs on any checkout. The module
names follow the installed layout: `backbones/x.py` is `bob.backbones.x`, `tasks/x/y.py` is
`bob.tasks.x.y`.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"bob": "bob", "backbones": "bob.backbones", "tasks": "bob.tasks"}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the installed package `bob`, by dotted name."""
    out: dict[str, Path] = {}
    for folder, package in SOURCES.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, bool, bool]]:
    """(imported bob module, inside a function, under `if TYPE_CHECKING`) for each import statement."""
    tree = ast.parse(path.read_text())
    out: list[tuple[str, bool, bool]] = []

    def target(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            func = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            typed = type_only or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found = target(alias.name)
                    if found:
                        out.append((found, in_function, type_only))
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, child, path.name == "__init__.py")
                for alias in child.names:
                    found = target(f"{base}.{alias.name}") or target(base)
                    if found:
                        out.append((found, in_function, type_only))
            visit(child, func, typed)

    visit(tree, False, False)
    return out


def import_graph(root: Path = ROOT, typing_only: bool = False) -> dict[str, set[str]]:
    """Imports between bob's modules, function-level ones included (a cycle through a function is a
    cycle all the same); `typing_only` adds the `if TYPE_CHECKING:` imports too."""
    files = module_files(root)
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        graph[module] = {
            m for m, _, typed in imports_of(module, path, known) if (typing_only or not typed) and m != module
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def any_parameters(root: Path = ROOT) -> list[str]:
    """Function parameters in tasks/ annotated exactly `Any`."""
    found = []
    for path in sorted((root / "tasks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                    if arg.annotation is not None and ast.unparse(arg.annotation) == "Any":
                        found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}({arg.arg})")
    return found


def lengths(root: Path = ROOT) -> tuple[list[int], list[tuple[int, str]]]:
    """Line counts of every source file and of every function (with its location)."""
    files, functions = [], []
    for path in module_files(root).values():
        text = path.read_text()
        files.append(len(text.splitlines()))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((size, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    return files, functions


def distribution(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {"n": len(ordered), "median": statistics.median(ordered), "p90": p90, "max": ordered[-1]}


def report(root: Path = ROOT) -> dict[str, object]:
    files = module_files(root)
    known = set(files)
    in_function = [
        (module, target)
        for module, path in files.items()
        for target, in_func, _ in imports_of(module, path, known)
        if in_func and target != module
    ]
    file_lengths, function_lengths = lengths(root)
    found_cycles = cycles(import_graph(root))
    typing_cycles = cycles(import_graph(root, typing_only=True))
    all_imports = sum(len(imports_of(m, p, known)) for m, p in files.items())
    return {
        "modules": len(files),
        "import_cycles": len(found_cycles),
        "modules_in_cycles": sum(len(c) for c in found_cycles),
        "cycles": found_cycles,
        "cycles_with_typing_imports": typing_cycles,
        "function_level_imports": len(in_function),
        "function_level_import_share": round(len(in_function) / max(1, all_imports), 3),
        "function_level_imports_by_module": sorted({f"{m} -> {t}" for m, t in in_function}),
        "any_parameters_in_tasks": any_parameters(root),
        "file_lines": distribution(file_lengths),
        "function_lines": distribution([n for n, _ in function_lengths]),
        "longest_functions": [f"{n} {where}" for n, where in sorted(function_lengths, reverse=True)[:8]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to read (default: this one)")
    args = parser.parse_args()
    data = report(args.root)
    if args.json:
        print(json.dumps(data, indent=1))
        return
    print(f"modules: {data['modules']}")
    print(f"import cycles: {data['import_cycles']} ({data['modules_in_cycles']} modules)")
    for cycle in data["cycles"]:  # type: ignore[union-attr]
        print(f"  {' <-> '.join(cycle)}")
    typing = data["cycles_with_typing_imports"]
    print(f"cycles counting `if TYPE_CHECKING` imports too: {len(typing)}")  # type: ignore[arg-type]
    for cycle in typing:  # type: ignore[union-attr]
        print(f"  {' <-> '.join(cycle)}")
    print(
        f"function-level imports of bob's own modules: {data['function_level_imports']} "
        f"({data['function_level_import_share']:.0%} of all imports of bob modules)"
    )
    print(f"`Any` parameters in tasks/: {len(data['any_parameters_in_tasks'])}")  # type: ignore[arg-type]
    for key in ("file_lines", "function_lines"):
        d = data[key]
        print(f"{key.replace('_', ' ')}: n={d['n']} median={d['median']} p90={d['p90']} max={d['max']}")  # type: ignore[index]
    print("longest functions:")
    for line in data["longest_functions"]:  # type: ignore[union-attr]
        print(f"  {line}")


if __name__ == "__main__":
    main()
