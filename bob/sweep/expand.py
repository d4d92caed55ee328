"""Expand a validated SweepSpec into RunSpecs: selectors to names, task grids to args, excludes applied.

Expansion imports no torch and touches no data or weights: names are checked against the catalogs,
task args against each suite's `Args`. The same file always yields the same RunSpecs in the same
order, hence the same run ids.
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass
from typing import Any

from bob.backbones.catalog import BACKBONES, FAMILIES, BackboneFilter, describe
from bob.errors import UsageError
from bob.registry import match, suggest
from bob.spec import RunSpec, make_spec
from bob.suites import SUITES
from bob.sweep.spec import BackboneSelector, ExcludeRule, Grid, SweepSpec, SweepSpecError, TaskEntry

GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep and the place in the file that asked for it."""

    spec: RunSpec
    origin: str


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
        return [selector.name]  # checked by make_spec, with did-you-mean
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


def _excluded(spec: RunSpec, rules: tuple[ExcludeRule, ...]) -> bool:
    for rule in rules:
        if rule.backbone and not fnmatch.fnmatchcase(spec.backbone, rule.backbone):
            continue
        if rule.task and not fnmatch.fnmatchcase(spec.task, rule.task):
            continue
        if rule.weights and not fnmatch.fnmatchcase(spec.weights, rule.weights):
            continue
        if rule.seed is not None and spec.seed != rule.seed:
            continue
        if any(arg_text(spec.task_args.get(k)) != arg_text(v) for k, v in rule.args.items()):
            continue
        return True
    return False


def _arg_sets(entry: TaskEntry, suite_args: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(entry.grid)
    combos = itertools.product(*(entry.grid[k] for k in keys)) if keys else [()]
    return [{**suite_args, **entry.args, **dict(zip(keys, combo, strict=True))} for combo in combos]


def _grid_runs(grid: Grid, sweep: SweepSpec) -> list[PlannedRun]:
    names: list[str] = []
    for selector in grid.backbones:
        names += [n for n in select_backbones(selector, sweep.source) if n not in names]
    runs = []
    for entry in grid.tasks:
        for task in entry.tasks:
            suite = task.partition("/")[0]
            suite_args = {**sweep.task_args.get("*", {}), **sweep.task_args.get(suite, {})}
            for args in _arg_sets(entry, suite_args):
                text_args = {k: arg_text(v) for k, v in args.items()}
                for backbone, weights, seed in itertools.product(
                    names, entry.weights or grid.weights, entry.seeds or grid.seeds
                ):
                    try:
                        spec = make_spec(backbone, task, weights, seed, grid.backbone_args, text_args)
                    except UsageError as err:
                        raise SweepSpecError(
                            f"{sweep.source}: {entry.where} ({task}, {backbone}): {err}"
                        ) from None
                    runs.append(PlannedRun(spec, f"{entry.where} ({task})"))
    return runs


def expand(sweep: SweepSpec) -> list[PlannedRun]:
    """Every run of the sweep, excludes removed; a run asked for twice is an error naming both places."""
    for key in sweep.task_args:
        if key != "*":
            try:
                SUITES.get(key)
            except UsageError as err:
                raise SweepSpecError(f"{sweep.source}: defaults.task_args.{key}: {err}") from None
    seen: dict[str, PlannedRun] = {}
    for grid in sweep.grids:
        for run in _grid_runs(grid, sweep):
            if _excluded(run.spec, sweep.exclude):
                continue
            first = seen.get(run.spec.id)
            if first is not None:
                raise SweepSpecError(
                    f"{sweep.source}: duplicate run {run.spec.label} (id {run.spec.id}): asked for by "
                    f"{first.origin} and again by {run.origin}. Remove one, or exclude it from one grid."
                )
            seen[run.spec.id] = run
    if not seen:
        raise SweepSpecError(
            f"{sweep.source}: the sweep expands to no runs (every run is excluded). Check the exclude rules."
        )
    return list(seen.values())
