"""The sweep file: a YAML grid of backbones × weights × tasks × seeds, validated with precise errors.

    name: bob-smoke                      # required
    description: ...                     # optional
    defaults:                            # optional, inherited by every grid
      weights: [pretrained]
      seeds: [0]
      task_args: {detection: {epochs: 1}}   # per suite (or "*" for every suite)
    grids:                               # required, at least one
      - name: pretrained                 # optional label used in messages
        backbones:                       # names, globs over the catalog, or catalog filters
          - torchvision/mobilenet_v2
          - {group: bob}
          - {family: vit, method: "ssl:*", max_params: 30M}
        weights: [pretrained, random]
        seeds: [0, 1]
        tasks:
          - linear-probe/cifar100
          - {task: detection/coco2017, grid: {mode: [frozen, finetune], lr: [8e-5, 1e-4, 2e-4, 3e-4]}}
          - {tasks: [retrieval/roxford5k, retrieval/rparis6k], args: {pool: cls}}
    exclude:                             # optional; globs over backbone, task, weights; exact seed/args
      - {backbone: "sd/*", task: "retrieval/*"}
    max_runs: 20000                      # optional; a sweep that would start more runs asks for --yes

Every problem is reported as `FILE: KEY.PATH: what was expected, what was found` before anything runs:
the parser notes a problem and goes on with the next element, so a file with three mistakes names all
three (`SweepSpec.problems`); expansion adds its own and raises them together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bob.errors import UsageError
from bob.registry import suggest

TOP_KEYS = {"name", "description", "defaults", "grids", "exclude", "max_runs"}
# A sweep that would start more runs than this asks for --yes, unless its file sets `max_runs`.
DEFAULT_MAX_RUNS = 10_000
MAX_PROBLEMS_SHOWN = 30
DEFAULT_KEYS = {"weights", "seeds", "task_args"}
GRID_KEYS = {"name", "backbones", "weights", "seeds", "tasks", "backbone_args"}
TASK_KEYS = {"task", "tasks", "args", "grid", "weights", "seeds"}
FILTER_KEYS = {"name", "family", "method", "data", "group", "max_params"}
EXCLUDE_KEYS = {"backbone", "task", "weights", "seed", "args"}


class SweepSpecError(UsageError):
    """A sweep file that does not follow the schema; the message names the file and the key path."""


def raise_problems(source: str, problems: list[str] | tuple[str, ...]) -> None:
    """Every problem found in a sweep file, as one SweepSpecError (nothing when there are none)."""
    unique = list(dict.fromkeys(problems))
    if not unique:
        return
    if len(unique) == 1:
        raise SweepSpecError(unique[0])
    shown = unique[:MAX_PROBLEMS_SHOWN]
    more = len(unique) - len(shown)
    lines = "\n".join(f"  - {p}" for p in shown) + (f"\n  ... and {more} more" if more else "")
    raise SweepSpecError(f"{len(unique)} problems in sweep file {source}:\n{lines}")


@dataclass(frozen=True)
class BackboneSelector:
    """A backbone name, or a filter over the curated catalog (every key must match)."""

    name: str | None = None
    filters: dict[str, str] = field(default_factory=dict)
    where: str = ""


@dataclass(frozen=True)
class TaskEntry:
    tasks: tuple[str, ...]
    args: dict[str, Any]
    grid: dict[str, tuple[Any, ...]]
    weights: tuple[str, ...] | None
    seeds: tuple[int, ...] | None
    where: str


@dataclass(frozen=True)
class Grid:
    name: str
    backbones: tuple[BackboneSelector, ...]
    weights: tuple[str, ...]
    seeds: tuple[int, ...]
    tasks: tuple[TaskEntry, ...]
    backbone_args: dict[str, Any]
    where: str


@dataclass(frozen=True)
class ExcludeRule:
    backbone: str | None = None
    task: str | None = None
    weights: str | None = None
    seed: int | None = None
    args: dict[str, Any] = field(default_factory=dict)
    where: str = ""


@dataclass(frozen=True)
class SweepSpec:
    name: str
    description: str
    grids: tuple[Grid, ...]
    exclude: tuple[ExcludeRule, ...]
    task_args: dict[str, dict[str, Any]]
    source: str
    max_runs: int | None = None  # the file's own size limit (`bob sweep` asks for --yes above it)
    problems: tuple[str, ...] = ()  # schema problems; expansion reports them with its own


# ----------------------------------------------------------------------------------------- checks


class _Checker:
    """Type checks that know the file and the key path of the value they look at.

    `fail` returns the error of a value that makes its element unusable (the caller raises it and
    `guard` records it); `note` records a problem that leaves the element usable (an unknown key)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> SweepSpecError:
        return SweepSpecError(f"{self.source}: {where}: {message}")

    def note(self, where: str, message: str) -> None:
        self.problems.append(f"{self.source}: {where}: {message}")

    def guard(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)`, or None with its problem recorded: the next element is checked all the same."""
        try:
            return fn(*args)
        except SweepSpecError as err:
            self.problems.append(str(err))
            return None

    def each(self, items: list, where: str, fn: Any, *args: Any) -> tuple:
        """`fn(self, item, where[i], *args)` for every item; the usable results, in order."""
        out = (self.guard(fn, self, item, f"{where}[{i}]", *args) for i, item in enumerate(items))
        return tuple(x for x in out if x is not None)

    def mapping(self, value: Any, where: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping with keys {sorted(allowed)}, got {_kind(value)}.")
        for key in value:
            if key not in allowed:
                close = suggest(str(key), allowed, 3)
                hint = f" Did you mean: {', '.join(close)}?" if close else ""
                self.note(
                    f"{where}.{key}", f"unknown key.{hint} Allowed keys here: {', '.join(sorted(allowed))}."
                )
        missing = sorted(required - set(value))
        if missing:
            raise self.fail(where, f"missing required key(s) {', '.join(missing)}.")
        return {k: v for k, v in value.items() if k in allowed}

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"expected a non-empty string, got {_kind(value)}.")
        return value.strip()

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        items = self.nonempty_list(value, where, scalar_ok=True)
        return tuple(self.string(v, f"{where}[{i}]") for i, v in enumerate(items))

    def ints(self, value: Any, where: str) -> tuple[int, ...]:
        items = self.nonempty_list(value, where, scalar_ok=True)
        out = []
        for i, v in enumerate(items):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise self.fail(f"{where}[{i}]", f"expected a non-negative integer seed, got {_kind(v)}.")
            out.append(v)
        return _unique(out, where, self)

    def nonempty_list(self, value: Any, where: str, scalar_ok: bool = False) -> list:
        if scalar_ok and not isinstance(value, (list, dict)) and value is not None:
            value = [value]
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}.")
        if not value:
            raise self.fail(
                where, "is empty: an empty list makes an empty grid. Remove the key or add items."
            )
        return value

    def args(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping of task args, got {_kind(value)}.")
        for key, v in value.items():
            if not isinstance(v, (str, int, float, bool, list)) and v is not None:
                raise self.fail(f"{where}.{key}", f"expected a scalar or a list, got {_kind(v)}.")
        return dict(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    return f"{type(value).__name__} {value!r}"


def _unique(items: list, where: str, check: _Checker) -> tuple:
    seen = set()
    for i, item in enumerate(items):
        if item in seen:
            raise check.fail(f"{where}[{i}]", f"{item!r} is listed twice (a duplicate run).")
        seen.add(item)
    return tuple(items)


# ----------------------------------------------------------------------------------------- parsing


def load_sweep(path: Path | str) -> SweepSpec:
    """Read and validate a sweep file (names are checked later, by expansion)."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise SweepSpecError(f"Sweep file {path} is a folder; name a YAML file, e.g. sweeps/quickstart.yaml.")
    if not path.is_file():
        raise SweepSpecError(f"Sweep file {path} does not exist. The shipped grids live in sweeps/.")
    try:
        data = yaml.safe_load(path.read_bytes())
    except yaml.YAMLError as err:
        raise SweepSpecError(f"{path}: not valid YAML ({err}).") from None
    except OSError as err:
        raise SweepSpecError(f"Sweep file {path} cannot be read ({err.strerror or err}).") from None
    return parse_sweep(data, str(path))


def parse_sweep(data: Any, source: str = "<sweep>") -> SweepSpec:
    """The sweep as data, with every schema problem in `problems` (expansion raises them all); only a
    file that is not a mapping at all raises here."""
    check = _Checker(source)
    top = check.mapping(data, "(top level)", TOP_KEYS)
    if "name" not in top:
        check.note("(top level)", "missing required key(s) name.")
    if "grids" not in top:
        check.note("(top level)", "missing required key(s) grids.")
    defaults = check.guard(check.mapping, top.get("defaults", {}) or {}, "defaults", DEFAULT_KEYS) or {}
    weights = check.guard(check.strings, defaults.get("weights", ["pretrained"]), "defaults.weights")
    seeds = check.guard(check.ints, defaults.get("seeds", [0]), "defaults.seeds")
    task_args = check.guard(_suite_args, check, defaults.get("task_args", {})) or {}
    grids = (check.guard(check.nonempty_list, top["grids"], "grids") or []) if "grids" in top else []
    parsed = check.each(grids, "grids", _grid, weights or ("pretrained",), seeds or (0,))
    rules = top.get("exclude", []) or []
    if not isinstance(rules, list):
        check.note("exclude", f"expected a list of rules, got {_kind(rules)}.")
        rules = []
    exclude = check.each(rules, "exclude", _exclude)
    description = top.get("description", "")
    if not isinstance(description, str):
        check.note("description", f"expected a string, got {_kind(description)}.")
    name = check.guard(check.string, top.get("name", "unnamed"), "name") or ""
    max_runs = check.guard(_max_runs, check, top.get("max_runs"))
    return SweepSpec(
        name, str(description), parsed, exclude, task_args, source, max_runs, tuple(check.problems)
    )


def _max_runs(check: _Checker, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise check.fail("max_runs", f"expected a positive integer (a run count), got {_kind(value)}.")
    return value


def _suite_args(check: _Checker, value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise check.fail("defaults.task_args", f"expected a mapping suite -> args, got {_kind(value)}.")
    out = {}
    for suite, args in value.items():
        parsed = check.guard(check.args, args, f"defaults.task_args.{suite}")
        if parsed is not None:
            out[str(suite)] = parsed
    return out


def _grid(check: _Checker, value: Any, where: str, weights: tuple, seeds: tuple) -> Grid | None:
    g = check.mapping(value, where, GRID_KEYS, {"backbones", "tasks"})
    backbones = check.nonempty_list(g["backbones"], f"{where}.backbones")
    selectors = check.each(backbones, f"{where}.backbones", _selector)
    tasks = check.nonempty_list(g["tasks"], f"{where}.tasks")
    entries = check.each(tasks, f"{where}.tasks", _task_entry)
    if not selectors or not entries:
        return None  # every selector or task entry had a problem, each recorded already
    return Grid(
        name=check.string(g.get("name", where), f"{where}.name"),
        backbones=selectors,
        weights=check.strings(g["weights"], f"{where}.weights") if "weights" in g else weights,
        seeds=check.ints(g["seeds"], f"{where}.seeds") if "seeds" in g else seeds,
        tasks=entries,
        backbone_args=check.args(g.get("backbone_args", {}), f"{where}.backbone_args"),
        where=where,
    )


def _selector(check: _Checker, value: Any, where: str) -> BackboneSelector:
    if isinstance(value, str):
        return BackboneSelector(name=check.string(value, where), where=where)
    f = check.mapping(value, where, FILTER_KEYS)
    if not f:
        raise check.fail(where, f"an empty filter selects nothing; use one of {sorted(FILTER_KEYS)}.")
    return BackboneSelector(
        filters={k: check.string(str(v), f"{where}.{k}") for k, v in f.items()}, where=where
    )


def _task_entry(check: _Checker, value: Any, where: str) -> TaskEntry:
    if isinstance(value, str):
        return TaskEntry((check.string(value, where),), {}, {}, None, None, where)
    t = check.mapping(value, where, TASK_KEYS)
    if ("task" in t) == ("tasks" in t):
        raise check.fail(where, "expected exactly one of `task` (a name) or `tasks` (a list of names).")
    names = (
        (check.string(t["task"], f"{where}.task"),)
        if "task" in t
        else check.strings(t["tasks"], f"{where}.tasks")
    )
    _unique(list(names), f"{where}.tasks", check)
    args = check.args(t.get("args", {}), f"{where}.args")
    raw_grid = check.args(t.get("grid", {}), f"{where}.grid")
    grid = {}
    for key, values in raw_grid.items():
        items = check.nonempty_list(values, f"{where}.grid.{key}", scalar_ok=True)
        if key in args:
            raise check.fail(f"{where}.grid.{key}", f"'{key}' is set in both args and grid; keep one.")
        grid[key] = _unique(items, f"{where}.grid.{key}", check)
    return TaskEntry(
        tasks=names,
        args=args,
        grid=grid,
        weights=check.strings(t["weights"], f"{where}.weights") if "weights" in t else None,
        seeds=check.ints(t["seeds"], f"{where}.seeds") if "seeds" in t else None,
        where=where,
    )


def _exclude(check: _Checker, value: Any, where: str) -> ExcludeRule:
    r = check.mapping(value, where, EXCLUDE_KEYS)
    if not r:
        raise check.fail(where, f"an empty rule would exclude every run; use keys {sorted(EXCLUDE_KEYS)}.")
    seed = r.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise check.fail(f"{where}.seed", f"expected an integer, got {_kind(seed)}.")
    return ExcludeRule(
        backbone=check.string(r["backbone"], f"{where}.backbone") if "backbone" in r else None,
        task=check.string(r["task"], f"{where}.task") if "task" in r else None,
        weights=check.string(r["weights"], f"{where}.weights") if "weights" in r else None,
        seed=seed,
        args=check.args(r.get("args", {}), f"{where}.args"),
        where=where,
    )
