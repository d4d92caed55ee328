"""What a sweep worker does with one plan group, whichever executor started it.

For each run, in order: take the run's lock (skip it if a live process holds it), re-read the
stored result under the lock (another sweep may have finished it), run it through the ordinary
runner (atomic result write, failures as failed results, one OOM retry at half batch) and report
a small picklable summary. Nothing here raises for an application error; a system failure (the
process dies) leaves at most a stale lock, which the next sweep breaks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from bob import distributed, progress
from bob.errors import ResultFileError
from bob.preflight import storage_error
from bob.results import ResultStore, RunResult
from bob.runner import RunOptions, execute
from bob.spec import RunSpec
from bob.suites import SUITES
from bob.sweep.locks import RunLock
from bob.weights import atomic_write_text

# What a sweep re-runs: `missing` (default), `failed` (--retry-failed), `all` (--overwrite).
MODES = ("missing", "failed", "all")
# The report of a run another sweep on the same results dir finished after this one started.
ELSEWHERE = "elsewhere"


@dataclass
class RunReport:
    """The outcome of one run as the driver sees it. `status`: ok | failed | not_applicable (a
    `skipped` result: the task does not apply to the backbone) | skipped (not wanted) | busy (another
    sweep runs it now) | elsewhere (another sweep finished it) | damaged."""

    id: str
    status: str
    seconds: float = 0.0
    error: str = ""
    result_json: str | None = None  # the result, so a driver can write it if the worker's copy is lost
    extractions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def wanted(stored: RunResult | None, mode: str) -> bool:
    """Whether a run with this stored result should run under `mode`. A run skipped because its task
    does not apply is settled like an ok one: --retry-failed leaves it alone."""
    if mode == "all":
        return True
    if mode == "failed":
        return stored is not None and stored.status == "failed"
    return stored is None


def report_status(result_status: str) -> str:
    """A result's status as a report's: `skipped` results (not applicable) get their own name, since
    a report's `skipped` means "not wanted by this sweep"."""
    return "not_applicable" if result_status == "skipped" else result_status


def _claim(
    lock: RunLock,
    store: ResultStore,
    spec: RunSpec,
    options: RunOptions,
    mode: str,
    fresh_after: float | None,
) -> RunReport | None:
    """Take the run's lock and decide: None to run it, else the report of why not."""
    try:
        acquired = lock.acquire()
    except OSError as err:  # the results dir filled up or turned read-only mid-sweep
        return RunReport(spec.id, "failed", error=str(storage_error("run lock", lock.path, err)))
    if not acquired:
        return RunReport(spec.id, "busy", error=f"locked by {lock.owner()}")
    try:
        stored = store.load(spec)
    except ResultFileError as err:
        if mode != "all":
            return RunReport(spec.id, "damaged", error=str(err))
        stored = None
    path = store.path_for(spec)
    if stored is not None and fresh_after is not None and path.stat().st_mtime >= fresh_after:
        if options.sweep is not None and stored.sweep == options.sweep:
            return RunReport(spec.id, report_status(stored.status), error="written earlier by this sweep")
        return RunReport(spec.id, ELSEWHERE, error="finished by another sweep after this one started")
    if not wanted(stored, mode):
        return RunReport(spec.id, "skipped")
    return None


def run_spec(
    spec: RunSpec, options: RunOptions, mode: str = "missing", fresh_after: float | None = None
) -> RunReport:
    """Run one spec if `mode` wants it. A result written after `fresh_after` (the sweep's start) is
    this sweep's own, e.g. from a worker that died after writing it and was retried: never re-run.
    In a data-parallel run's process group, rank 0 takes the lock and decides, and every rank
    follows its decision (the other ranks never touch the results dir)."""
    store = ResultStore(options.results_dir)
    start = time.perf_counter()
    main = distributed.is_main()
    with RunLock(store.path_for(spec)) if main else contextlib.nullcontext() as lock:
        early = _claim(lock, store, spec, options, mode, fresh_after) if main else None
        early = distributed.broadcast(early)
        if early is not None:
            return early
        try:
            outcome = execute(spec, dataclasses.replace(options, overwrite=True))
        except Exception as err:  # raised before a result existed (bad device, unreadable args)
            return RunReport(spec.id, "failed", error=f"{type(err).__name__}: {err}")
    result = outcome.result
    message = (
        f"{(result.error or {}).get('type')}: {(result.error or {}).get('message')}"
        if result.status == "failed"
        else result.reason or ""
    )
    return RunReport(
        spec.id,
        report_status(result.status),
        round(time.perf_counter() - start, 3),
        message,
        result.to_json(),
        int(outcome.stats.get("extractions", 0)),
    )


def run_group(
    spec_dicts: list[dict[str, Any]],
    options: RunOptions,
    mode: str = "missing",
    fresh_after: float | None = None,
) -> list[dict]:
    """Run a plan group in order in this process (so its runs share one extraction); plain dicts in
    and out, so any executor can ship it. A group of one run that trains data-parallel under
    `options.ranks_per_run` runs as that many ranks (`run_ranked`), unless this process already is
    one rank of a process group (a SLURM job whose tasks are the ranks, bob/sweep/executors/slurm.py)."""
    specs = [spec_from_dict(d) for d in spec_dicts]
    if len(specs) == 1 and ranks_for(specs[0], options) > 1 and not distributed.active():
        return [run_ranked(specs[0], options, mode, fresh_after).to_dict()]
    return [run_spec(spec, options, mode, fresh_after).to_dict() for spec in specs]


def ranks_for(spec: RunSpec, options: RunOptions) -> int:
    """The ranks a run gets: `options.ranks_per_run` when its suite trains data-parallel with its
    task args (`Task.data_parallel_refusal`), else 1 (a linear probe gains nothing from N copies)."""
    if options.ranks_per_run <= 1:
        return 1
    refusal = SUITES.get(spec.task.partition("/")[0]).data_parallel_refusal(spec.task_args)
    return options.ranks_per_run if refusal is None else 1


def groups_ranks(spec_dicts: list[dict[str, Any]], options: RunOptions) -> int:
    """The ranks a plan group's worker needs: a one-run group's `ranks_for`, else 1."""
    return ranks_for(spec_from_dict(spec_dicts[0]), options) if len(spec_dicts) == 1 else 1


def _rank_main(
    spec_dict: dict[str, Any], options: RunOptions, mode: str, fresh_after: float | None
) -> dict[str, Any]:
    """One rank of `run_ranked` (a process the elastic launcher started): join, run, report."""
    progress.set_enabled(False)
    distributed.init_process_group(options.device)
    return run_spec(spec_from_dict(spec_dict), options, mode, fresh_after).to_dict()


def run_ranked(spec: RunSpec, options: RunOptions, mode: str, fresh_after: float | None) -> RunReport:
    """Run one spec as `ranks_for(spec)` ranks on this machine (torch's elastic launcher, one
    device each: the devices Ray or SLURM gave this worker, or the CPU with gloo); rank 0's report.
    A rank that dies fails the run with a result naming it (RankFailed); the stale lock it leaves is
    broken by the next sweep."""
    start, started = time.perf_counter(), time.time()
    ranks = ranks_for(spec, options)
    try:
        returns = distributed.elastic(_rank_main, (spec_to_dict(spec), options, mode, fresh_after), ranks)
    except distributed.RankFailed as err:
        message = f"data-parallel run failed: {err}"
        store = ResultStore(options.results_dir)
        path = store.path_for(spec)
        if path.exists() and path.stat().st_mtime >= started:  # rank 0 saw the others go: its error
            with contextlib.suppress(ResultFileError):
                seen = (store.load(spec) or failed_result(spec, "", "")).error or {}
                message += f"; rank 0 reported {seen.get('type')}: {seen.get('message')}"
        result = failed_result(spec, "RankFailed", message)
        atomic_write_text(path, result.to_json(), "result")  # replaces rank 0's partial account
        return RunReport(spec.id, "failed", round(time.perf_counter() - start, 3), message, result.to_json())
    return RunReport(**returns[0])


def failed_result(spec: RunSpec, kind: str, why: str) -> RunResult:
    """The failed result of a run that ended without writing one (its worker or a rank died)."""
    return RunResult(
        id=spec.id,
        status="failed",
        spec=spec.to_dict(),
        backbone={"name": spec.backbone},
        task={"name": spec.task},
        error={"type": kind, "message": why, "user_error": False, "traceback": []},
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    """A spec with its data location, which `RunSpec.to_dict` leaves out of the identity."""
    return {**spec.to_dict(), "data_root": spec.data_root, "download": spec.download}


def spec_from_dict(d: dict[str, Any]) -> RunSpec:
    spec = RunSpec.from_dict(d)
    return dataclasses.replace(spec, data_root=d.get("data_root"), download=bool(d.get("download", False)))
