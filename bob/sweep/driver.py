"""Run a sweep: expand, plan, filter what is already done, execute, collect, summarise.

The machinery behind `bob sweep` and `bob.api.sweep`. Planning streams (`plan_sweep`); a sweep holds
the specs of the runs it will start, nothing more, and one above its size limit asks for --yes
(`check_size`). Two sweeps on one results dir each count only the runs they executed: every result
a sweep writes carries its token, and a run the other sweep finished meanwhile is `elsewhere`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bob.errors import ResultFileError, UsageError
from bob.results import ResultStore, RunResult
from bob.runner import RunOptions
from bob.spec import RunSpec
from bob.suites import task_class
from bob.sweep.display import EXTRACTING, FITTING, RUNNING, TRAINING
from bob.sweep.executors import Executor, SweepJob
from bob.sweep.executors.local import LocalExecutor
from bob.sweep.expand import Expansion
from bob.sweep.plan import Plan, RunGroup, extraction_keys, make_plan, reads_feature_cache
from bob.sweep.spec import DEFAULT_MAX_RUNS, SweepSpec
from bob.sweep.stats import collect_stats
from bob.sweep.worker import ELSEWHERE, RunReport, failed_result, report_status, spec_from_dict, wanted
from bob.weights import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class SweepState:
    """Where each run of a sweep stands before execution. `todo` holds the specs to run unless the
    survey only counted them (`to_run` always holds the count); `since` is when the survey began:
    a result written after it was written by a sweep running now."""

    todo: list[RunSpec] = field(default_factory=list)
    done: int = 0
    failed_before: int = 0
    not_applicable_before: int = 0  # `skipped` results: the task does not apply to the backbone
    damaged: list[str] = field(default_factory=list)
    to_run: int = 0
    since: float = 0.0


class _Listing:
    """Which files a results folder holds, one `os.listdir` per folder instead of a stat per run."""

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}

    def exists(self, path: Path) -> bool:
        return self.holds(path.parent, path.name)

    def holds(self, folder: Path, name: str) -> bool:
        names = self._names.get(folder)
        if names is None:
            try:
                names = set(os.listdir(folder))
            except (FileNotFoundError, NotADirectoryError):
                names = set()
            self._names[folder] = names
        return name in names


def survey(specs: Iterable[RunSpec], store: ResultStore, mode: str, keep: bool = True) -> SweepState:
    """Split runs into to-do and already settled, reading each stored result once; `keep=False`
    counts the to-do runs without holding them (a dry run of a huge sweep)."""
    state = SweepState(since=time.time())
    listing = _Listing()
    for spec in specs:
        path = store.path_for(spec)
        _classify(state, store, mode, keep, spec, mode != "all" and listing.exists(path))
    return state


def survey_plan(plan: Plan, store: ResultStore, mode: str, keep: bool = True) -> SweepState:
    """`survey` of a plan's runs. A streamed plan is surveyed from its expansion: a run's file name
    comes from `SpecTemplate.run_id`, and its RunSpec is built only when it has a stored result or is
    kept to run, so surveying 10^6 runs costs seconds, not minutes."""
    if plan.expansion is None:
        return survey(plan.specs(), store, mode, keep)
    state = SweepState(since=time.time())
    listing = _Listing()
    for combo, backbone, weights, seed in plan.expansion.runs():
        template = combo.template
        stored = mode != "all" and listing.holds(
            store.folder_for(template.task, backbone), f"{template.run_id(backbone, weights, seed)}.json"
        )
        if stored or keep:
            _classify(state, store, mode, keep, template.spec(backbone, weights, seed), stored)
        elif wanted(None, mode):
            state.to_run += 1
    return state


def _classify(
    state: SweepState, store: ResultStore, mode: str, keep: bool, spec: RunSpec, stored: bool
) -> None:
    """Count one run (and keep it when it is to run): `stored` says whether its result file exists."""
    result = None
    if stored:
        try:
            result = store.load(spec)
        except ResultFileError as err:
            state.damaged.append(str(err))
            return
    if wanted(result, mode):
        state.to_run += 1
        if keep:
            state.todo.append(spec)
    elif result is not None and result.ok:
        state.done += 1
    elif result is not None and result.status == "skipped":
        state.not_applicable_before += 1
    elif result is not None:
        state.failed_before += 1


def check_size(state: SweepState, plan: Plan, max_runs: int | None = None, yes: bool = False) -> None:
    """A sweep that would start more runs than its limit stops before anything runs (exit 2) unless
    confirmed: the limit is `max_runs`, else the file's `max_runs` key, else DEFAULT_MAX_RUNS."""
    limit = max_runs or plan.max_runs or DEFAULT_MAX_RUNS
    if state.to_run > limit and not yes:
        source = "its max_runs key" if (not max_runs and plan.max_runs) else "the default limit"
        raise UsageError(
            f"Sweep {plan.name} would start {state.to_run} runs, more than {limit} ({source}). Nothing ran. "
            f"Check the plan with `bob sweep FILE --dry-run`, then pass --yes to run it, or set "
            f"`max_runs: {state.to_run}` in the sweep file."
        )


@dataclass
class SweepSummary:
    """What a sweep did. `unique_extractions` counts feature extractions the way `bob sweep --dry-run`
    does (backbone × weights × backbone args × dataset, all of a dataset's splits in one), among the
    runs that extracted anything; `extractions` counts the split feature sets they computed (each
    run's `cache.extractions`), so a probe's train and test splits are 2 there and 1 in the other."""

    runs: int
    counts: dict[str, int]
    seconds: float
    reports: list[RunReport]
    extractions: int
    unique_extractions: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.counts.get("failed") or self.counts.get("busy") or self.counts.get("lost") else 0


def plan_sweep(sweep: SweepSpec) -> Plan:
    """The sweep's plan, counted in one streamed pass (`collect_stats`); every problem of the file is
    raised together. Its groups are built only when a sweep runs."""
    expansion = Expansion(sweep)
    stats = collect_stats(expansion)
    return Plan(name=sweep.name, stats=stats, expansion=expansion, max_runs=sweep.max_runs)


def lost_result(spec: RunSpec, why: str) -> RunResult:
    """The failed result of a run whose worker died for good (after the executor's retries)."""
    return failed_result(spec, "WorkerLost", why)


class Collector:
    """Receives run reports from an executor; writes any returned result whose file is missing."""

    def __init__(
        self,
        store: ResultStore,
        specs: dict[str, RunSpec],
        since: float,
        display: Any = None,
        token: str = "",
    ) -> None:
        self.store, self.specs, self.since, self.display = store, specs, since, display
        self.token = token  # this sweep's own mark in the results it writes
        self.reports: dict[str, RunReport] = {}

    def on_report(self, report: RunReport) -> None:
        spec = self.specs.get(report.id)
        if spec is not None and report.result_json and not self.store.path_for(spec).exists():
            atomic_write_text(self.store.path_for(spec), report.result_json, "result")
        report.result_json = None  # keep the driver's memory flat on big sweeps
        self.reports[report.id] = report
        if self.display is not None:
            self.display.update(report)

    def on_group_lost(self, group: RunGroup, why: str) -> None:
        for spec in group.specs:
            if spec.id in self.reports:
                continue
            path = self.store.path_for(spec)
            if path.exists() and path.stat().st_mtime >= self.since:  # finished before the worker died
                try:
                    stored = self.store.load(spec)
                except ResultFileError:
                    stored = None
                if stored is not None:
                    ours = stored.sweep == self.token
                    status = report_status(stored.status) if ours else ELSEWHERE
                    self.on_report(RunReport(spec.id, status))
                    continue
            self.store.write(lost_result(spec, why), spec)
            self.on_report(RunReport(spec.id, "lost", error=why))


def _settle_busy(collector: Collector, store: ResultStore) -> None:
    """Runs that were busy (another sweep held their lock) and that the other sweep has finished by
    the time this one ends count as `elsewhere`: settled, not a reason to exit 1. Those still
    running stay busy (a later run collects them); nothing waits for them."""
    for report in collector.reports.values():
        spec = collector.specs.get(report.id)
        if report.status != "busy" or spec is None:
            continue
        try:
            stored = store.load(spec)
        except ResultFileError:
            continue
        if stored is not None and stored.sweep != collector.token:
            report.status, report.error = ELSEWHERE, "finished by another sweep while this one ran"


def run_sweep(
    plan: Plan,
    executor: Executor,
    options: RunOptions,
    mode: str = "missing",
    display: Any = None,
    job_fn: Any = None,
    state: SweepState | None = None,
) -> SweepSummary:
    """Execute the plan's runs that `mode` wants (from `state`, a survey made before, else surveyed
    here); return counts by report status. Each run this sweep executes carries its token, so a run
    another sweep finished meanwhile is counted as `elsewhere`, not as this sweep's."""
    options = dataclasses.replace(
        options,
        results_dir=Path(options.results_dir).resolve(),
        cache_dir=Path(options.cache_dir).resolve() if options.cache_dir else None,
        sweep=uuid.uuid4().hex[:16],
    )
    store = ResultStore(options.results_dir)
    if state is None:
        state = survey_plan(plan, store, mode)
    groups = make_plan(state.todo).groups
    start = time.time()
    collector = Collector(store, {s.id: s for s in state.todo}, state.since, display, options.sweep or "")
    if display is not None:
        display.start(len(state.todo), state, collector.specs)
    job = SweepJob(options, mode, fresh_after=state.since)
    if job_fn is not None:
        job.fn = job_fn
    if hasattr(display, "started") and isinstance(executor, LocalExecutor):
        job.fn = _announcing(job.fn, display)  # runs in this process: the display can list them
    try:
        executor.run(groups, job, collector.on_report, collector.on_group_lost)
    finally:
        if display is not None:
            display.stop()
    _settle_busy(collector, store)
    counts: dict[str, int] = {"done_before": state.done, "failed_before": state.failed_before}
    if state.not_applicable_before:
        counts["not_applicable_before"] = state.not_applicable_before
    counts["damaged"] = len(state.damaged)
    for report in collector.reports.values():
        counts[report.status] = counts.get(report.status, 0) + 1
    for message in state.damaged:
        log.warning("%s", message)
    reports = list(collector.reports.values())
    return SweepSummary(
        plan.runs,
        counts,
        time.time() - start,
        reports,
        sum(r.extractions for r in reports),
        unique_extractions(reports, collector.specs),
    )


def unique_extractions(reports: Iterable[RunReport], specs: dict[str, RunSpec]) -> int:
    """The unique extractions (the dry run's unit: `bob.sweep.plan.extraction_keys`) of the runs
    that extracted features; runs that only read the cache add nothing."""
    keys: set[str] = set()
    for report in reports:
        spec = specs.get(report.id)
        if report.extractions and spec is not None and reads_feature_cache(spec):
            keys.update(extraction_keys(spec))
    return len(keys)


def run_phase(spec: RunSpec, extracted: set[str]) -> str:
    """What a run is about to do, from the plan: train, extract features (the first run of its
    extraction in this sweep) and fit, or fit on features cached by an earlier run."""
    if reads_feature_cache(spec):
        keys = extraction_keys(spec)
        fresh = not extracted.issuperset(keys)
        extracted.update(keys)
        return EXTRACTING if fresh else FITTING
    return TRAINING if "trainable" in task_class(spec.task.partition("/")[0]).needs else RUNNING


def _announcing(fn: Any, display: Any) -> Any:
    """`fn` (a SweepJob's function), telling `display` which run starts and what it will do first."""
    extracted: set[str] = set()

    def announced(spec_dicts: list[dict[str, Any]], *rest: Any) -> list[dict[str, Any]]:
        reports = []
        for d in spec_dicts:
            spec = spec_from_dict(d)
            display.started(spec.id, run_phase(spec, extracted))
            reports += fn([d], *rest)
        return reports

    return announced
