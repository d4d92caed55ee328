"""Run a sweep: expand, plan, filter what is already done, execute, collect, summarise.

The machinery behind `bob sweep` and `bob.api.sweep`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bob.errors import ResultFileError
from bob.results import ResultStore, RunResult
from bob.runner import RunOptions
from bob.spec import RunSpec
from bob.sweep.executors import Executor, SweepJob
from bob.sweep.expand import expand
from bob.sweep.plan import Plan, RunGroup, make_plan
from bob.sweep.spec import SweepSpec
from bob.sweep.worker import RunReport, report_status, wanted
from bob.weights import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class SweepState:
    """Where each run of a sweep stands before execution."""

    todo: list[RunSpec] = field(default_factory=list)
    done: int = 0
    failed_before: int = 0
    not_applicable_before: int = 0  # `skipped` results: the task does not apply to the backbone
    damaged: list[str] = field(default_factory=list)


def survey(specs: list[RunSpec], store: ResultStore, mode: str) -> SweepState:
    """Split runs into to-do and already settled, reading every stored result once."""
    state = SweepState()
    for spec in specs:
        try:
            stored = store.load(spec)
        except ResultFileError as err:
            if mode == "all":
                state.todo.append(spec)
            else:
                state.damaged.append(str(err))
            continue
        if wanted(stored, mode):
            state.todo.append(spec)
        elif stored is not None and stored.ok:
            state.done += 1
        elif stored is not None and stored.status == "skipped":
            state.not_applicable_before += 1
        elif stored is not None:
            state.failed_before += 1
    return state


@dataclass
class SweepSummary:
    runs: int
    counts: dict[str, int]
    seconds: float
    reports: list[RunReport]
    extractions: int

    @property
    def exit_code(self) -> int:
        return 1 if self.counts.get("failed") or self.counts.get("busy") or self.counts.get("lost") else 0


def plan_sweep(sweep: SweepSpec) -> Plan:
    plan = make_plan([run.spec for run in expand(sweep)])
    plan.name = sweep.name
    return plan


def lost_result(spec: RunSpec, why: str) -> RunResult:
    """The failed result of a run whose worker died for good (after the executor's retries)."""
    return RunResult(
        id=spec.id,
        status="failed",
        spec=spec.to_dict(),
        backbone={"name": spec.backbone},
        task={"name": spec.task},
        error={"type": "WorkerLost", "message": why, "user_error": False, "traceback": []},
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


class Collector:
    """Receives run reports from an executor; writes any returned result whose file is missing."""

    def __init__(
        self, store: ResultStore, specs: dict[str, RunSpec], since: float, display: Any = None
    ) -> None:
        self.store, self.specs, self.since, self.display = store, specs, since, display
        self.reports: dict[str, RunReport] = {}

    def on_report(self, report: RunReport) -> None:
        spec = self.specs.get(report.id)
        if spec is not None and report.result_json and not self.store.path_for(spec).exists():
            atomic_write_text(self.store.path_for(spec), report.result_json)
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
                    self.on_report(RunReport(spec.id, report_status(stored.status)))
                    continue
            self.store.write(lost_result(spec, why), spec)
            self.on_report(RunReport(spec.id, "lost", error=why))


def run_sweep(
    plan: Plan,
    executor: Executor,
    options: RunOptions,
    mode: str = "missing",
    display: Any = None,
    job_fn: Any = None,
) -> SweepSummary:
    """Execute the plan's runs that `mode` wants; return counts by report status."""
    options = dataclasses.replace(
        options,
        results_dir=Path(options.results_dir).resolve(),
        cache_dir=Path(options.cache_dir).resolve() if options.cache_dir else None,
    )
    store = ResultStore(options.results_dir)
    state = survey(plan.specs(), store, mode)
    todo_ids = {s.id for s in state.todo}
    groups = [RunGroup(g.key, [s for s in g.specs if s.id in todo_ids], g.extracts) for g in plan.groups]
    groups = [g for g in groups if g.specs]
    start = time.time()
    collector = Collector(store, {s.id: s for s in state.todo}, start, display)
    if display is not None:
        display.start(len(state.todo), state)
    job = SweepJob(options, mode, fresh_after=start)
    if job_fn is not None:
        job.fn = job_fn
    try:
        executor.run(groups, job, collector.on_report, collector.on_group_lost)
    finally:
        if display is not None:
            display.stop()
    counts: dict[str, int] = {"done_before": state.done, "failed_before": state.failed_before}
    if state.not_applicable_before:
        counts["not_applicable_before"] = state.not_applicable_before
    counts["damaged"] = len(state.damaged)
    for report in collector.reports.values():
        counts[report.status] = counts.get(report.status, 0) + 1
    for message in state.damaged:
        log.warning("%s", message)
    extractions = sum(r.extractions for r in collector.reports.values())
    return SweepSummary(plan.runs, counts, time.time() - start, list(collector.reports.values()), extractions)
