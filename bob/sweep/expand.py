"""Expand a validated SweepSpec into runs: selectors to names, task grids to args, excludes applied.

Expansion imports no torch and touches no data or weights: names are checked against the catalogs,
task args against each suite's `Args`. The same file always yields the same RunSpecs in the same
order, hence the same run ids.

It streams. The checks happen once per distinct thing, not once per run: each backbone name and
weights value once, each (task, arg combination) once as a `SpecTemplate` (a `Combo` of the file).
`Expansion.runs()` then yields (combo, backbone, weights, seed) tuples from nested products, so a
10^6-run file is planned without holding 10^6 specs (`bob.sweep.plan.PlanStats`). Every problem is
collected (`Expansion.problems`) and raised together.
"""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bob.backbones.catalog import BACKBONES, FAMILIES, BackboneFilter, describe
from bob.errors import UsageError
from bob.registry import match, suggest
from bob.spec import RunSpec, SpecTemplate, spec_template, validate_backbone_name
from bob.suites import SUITES
from bob.sweep.spec import (
    BackboneSelector,
    ExcludeRule,
    Grid,
    SweepSpec,
    SweepSpecError,
    TaskEntry,
    raise_problems,
)
from bob.weights import WeightsRequest

GLOB_CHARS = set("*?[")
ALL_SEEDS = None  # an exclusion that covers every seed of a (backbone, weights) pair


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep and the place in the file that asked for it."""

    spec: RunSpec
    origin: str


@dataclass
class Combo:
    """One task with one arg combination of a grid entry, and the backbones × weights × seeds it runs
    on. `excluded[(backbone, weights)]` is the set of excluded seeds, or ALL_SEEDS."""

    template: SpecTemplate
    origin: str
    backbones: tuple[str, ...]
    weights: tuple[str, ...]
    seeds: tuple[int, ...]
    excluded: dict[tuple[str, str], set[int] | None] = field(default_factory=dict)

    def runs(self) -> Iterator[tuple[str, str, int]]:
        excluded = self.excluded
        for backbone, weights in itertools.product(self.backbones, self.weights):
            skip = excluded.get((backbone, weights), ())
            if skip is ALL_SEEDS:
                continue
            for seed in self.seeds:
                if seed not in skip:
                    yield backbone, weights, seed


def arg_text(value: Any) -> str:
    """A YAML value as the `KEY=VALUE` text the task-arg parser reads (lists become `a,b`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(arg_text(v) for v in value)
    return str(value)


def select_backbones(selector: BackboneSelector, source: str) -> list[str]:
    """Names a selector stands for; a selector that matches nothing is an error."""
    catalog = BACKBONES.names(namespaces=False)
    if selector.name is not None and not GLOB_CHARS & set(selector.name):
        return [selector.name]  # checked by validate_backbone_name, with did-you-mean
    if selector.name is not None:
        found = match(selector.name, catalog)
        what = f"the pattern '{selector.name}'"
    else:
        f = dict(selector.filters)
        pattern = f.pop("name", None)
        keep = BackboneFilter(**f)
        try:
            found = [n for n in (match(pattern, catalog) if pattern else catalog) if keep.keep(describe(n))]
        except UsageError as err:
            raise SweepSpecError(f"{source}: {selector.where}: {err}") from None
        what = "the filter " + ", ".join(f"{k}={v}" for k, v in selector.filters.items())
    if not found:
        hint = ""
        if "family" in selector.filters:
            close = suggest(selector.filters["family"], FAMILIES, 2)
            hint = f" Families: {', '.join(FAMILIES)}." + (f" Did you mean {close[0]}?" if close else "")
        raise SweepSpecError(
            f"{source}: {selector.where}: {what} matches no catalog backbone.{hint} "
            "Check it with `bob ls backbones` and its --family/--method/--data/--group filters."
        )
    return found


def _rule_matches_combo(rule: ExcludeRule, template: SpecTemplate) -> bool:
    """Whether a rule's task glob and args subset match this task and arg set (backbone, weights and
    seed are matched per run)."""
    if rule.task and not fnmatch.fnmatchcase(template.task, rule.task):
        return False
    return all(arg_text(template.task_args.get(k)) == arg_text(v) for k, v in rule.args.items())


def _exclusions(combo: Combo, rules: tuple[ExcludeRule, ...]) -> dict[tuple[str, str], set[int] | None]:
    """The (backbone, weights) pairs the rules touch, each with its excluded seeds (or all of them)."""
    out: dict[tuple[str, str], set[int] | None] = {}
    for rule in rules:
        if not _rule_matches_combo(rule, combo.template):
            continue
        for backbone, weights in itertools.product(combo.backbones, combo.weights):
            if rule.backbone and not fnmatch.fnmatchcase(backbone, rule.backbone):
                continue
            if rule.weights and not fnmatch.fnmatchcase(weights, rule.weights):
                continue
            key = (backbone, weights)
            if rule.seed is None:
                out[key] = ALL_SEEDS
            elif out.get(key, set()) is not ALL_SEEDS:
                out.setdefault(key, set()).add(rule.seed)  # type: ignore[union-attr]
    return out


class Expansion:
    """A sweep file's runs, checked once per distinct name, weights value and arg set, and streamed.

    `problems` holds every problem found (the file's schema problems first); `check()` raises them
    together. `runs()` yields (combo, backbone, weights label, seed) in the file's order."""

    def __init__(self, sweep: SweepSpec) -> None:
        self.sweep = sweep
        self.problems: list[str] = list(sweep.problems)
        self._names: dict[str, bool] = {}
        self._weights: dict[str, str | None] = {}
        self.combos: list[Combo] = []
        self._check_suite_defaults()
        for grid in sweep.grids:
            self.combos += self._grid_combos(grid)

    def check(self) -> None:
        raise_problems(self.sweep.source, self.problems)

    def runs(self) -> Iterator[tuple[Combo, str, str, int]]:
        for combo in self.combos:
            for backbone, weights, seed in combo.runs():
                yield combo, backbone, weights, seed

    def planned(self) -> Iterator[PlannedRun]:
        for combo, backbone, weights, seed in self.runs():
            yield PlannedRun(combo.template.spec(backbone, weights, seed), combo.origin)

    def specs(self) -> Iterator[RunSpec]:
        for combo, backbone, weights, seed in self.runs():
            yield combo.template.spec(backbone, weights, seed)

    # ------------------------------------------------------------------------------------ checks
    def _problem(self, where: str, err: Exception) -> None:
        self.problems.append(f"{self.sweep.source}: {where}: {err}")

    def _check_suite_defaults(self) -> None:
        for key in self.sweep.task_args:
            if key != "*":
                try:
                    SUITES.get(key)
                except UsageError as err:
                    self._problem(f"defaults.task_args.{key}", err)

    def _backbone_ok(self, name: str, where: str) -> bool:
        if name not in self._names:
            try:
                validate_backbone_name(name)
                self._names[name] = True
            except UsageError as err:
                self._problem(where, err)
                self._names[name] = False
        return self._names[name]

    def _weights_label(self, value: str, where: str) -> str | None:
        if value not in self._weights:
            try:
                self._weights[value] = WeightsRequest.parse(value).label
            except UsageError as err:
                self._problem(where, err)
                self._weights[value] = None
        return self._weights[value]

    def _grid_names(self, grid: Grid) -> list[str]:
        names: list[str] = []
        for selector in grid.backbones:
            try:
                found = select_backbones(selector, self.sweep.source)
            except SweepSpecError as err:
                self.problems.append(str(err))
                continue
            names += [n for n in found if n not in names and self._backbone_ok(n, selector.where)]
        return names

    def _labels(self, values: tuple[str, ...], where: str) -> tuple[str, ...]:
        labels = [self._weights_label(v, where) for v in values]
        return tuple(label for label in labels if label is not None)

    def _grid_combos(self, grid: Grid) -> list[Combo]:
        names = tuple(self._grid_names(grid))
        combos = []
        for entry in grid.tasks:
            weights = self._labels(entry.weights or grid.weights, f"{entry.where}.weights")
            seeds = entry.seeds or grid.seeds
            for task in entry.tasks:
                for template in self._templates(entry, task, grid):
                    combo = Combo(template, f"{entry.where} ({task})", names, weights, seeds)
                    combo.excluded = _exclusions(combo, self.sweep.exclude)
                    combos.append(combo)
        return combos

    def _templates(self, entry: TaskEntry, task: str, grid: Grid) -> list[SpecTemplate]:
        suite = task.partition("/")[0]
        suite_args = {**self.sweep.task_args.get("*", {}), **self.sweep.task_args.get(suite, {})}
        keys = list(entry.grid)
        combos = itertools.product(*(entry.grid[k] for k in keys)) if keys else [()]
        out = []
        for values in combos:
            args = {**suite_args, **entry.args, **dict(zip(keys, values, strict=True))}
            try:
                out.append(spec_template(task, {k: arg_text(v) for k, v in args.items()}, grid.backbone_args))
            except UsageError as err:
                self._problem(f"{entry.where} ({task})", err)
                break  # the next combination of the same task would report the same problem
        return out


def expand(sweep: SweepSpec) -> list[PlannedRun]:
    """Every run of the sweep as a list, excludes removed; raises every problem of the file at once,
    a run asked for twice included (naming both places). Sweeps plan through `plan_sweep`, which
    streams; this list is for callers that want the runs themselves."""
    expansion = Expansion(sweep)
    runs: list[PlannedRun] = []
    seen: dict[str, PlannedRun] = {}
    for run in expansion.planned():
        first = seen.get(run.spec.id)
        if first is not None:
            expansion.problems.append(duplicate_message(sweep.source, run.spec, first.origin, run.origin))
            continue
        seen[run.spec.id] = run
        runs.append(run)
    if not runs and not expansion.problems:
        expansion.problems.append(no_runs_message(sweep.source))
    expansion.check()
    return runs


def duplicate_message(source: str, spec: RunSpec, first: str, again: str) -> str:
    return (
        f"{source}: duplicate run {spec.label} (id {spec.id}): asked for by {first} and again by "
        f"{again}. Remove one, or exclude it from one grid."
    )


def no_runs_message(source: str) -> str:
    return f"{source}: the sweep expands to no runs (every run is excluded). Check the exclude rules."
