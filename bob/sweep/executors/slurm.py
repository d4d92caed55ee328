"""The SLURM executor: a submitit job array, one array task per plan group.

`cluster="local"` uses submitit's local executor (subprocesses on this machine), which is how it is
tested; on a SLURM login node the default `cluster=None` lets submitit pick SLURM.

Data-parallel runs (`--ranks-per-run N`, bob/sweep/worker.py) go in job arrays of their own, whose
jobs have N tasks on one node (`tasks_per_node`, one GPU each when the array has GPUs); each task
joins the run's process group as one rank from SLURM's environment (`_call_ranked`).

Dependencies (bob/sweep/plan.py): the groups go in waves (`dependency_levels`), one job array per wave,
each submitted once the previous wave has finished; a plan without dependencies is one array.

An array task that ends without a result (scancel, preemption, a node lost, the time limit) makes
its group's unfinished runs lost: failed results (WorkerLost) that `bob sweep --retry-failed` runs
again. submitit learns a task's end from `sacct`; on a cluster without accounting `sacct` knows no
job, so a task that has left `squeue` for GONE_AFTER_S without writing its result counts as ended.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from bob import distributed, progress
from bob.errors import UsageError
from bob.sweep.executors import LostFn, ReportFn, SweepJob
from bob.sweep.plan import RunGroup, dependency_levels
from bob.sweep.worker import RunReport, groups_ranks

POLL_S = 5.0  # how often the driver looks at a SLURM array's tasks (0.5 s on submitit's local cluster)
GONE_AFTER_S = 30.0  # a task out of squeue this long with no result file has ended without one


def _call(fn: Any, *payload: Any) -> list[dict[str, Any]]:
    progress.set_enabled(False)
    return fn(*payload)


def _call_ranked(fn: Any, *payload: Any) -> list[dict[str, Any]]:
    """One task of a job whose tasks are a data-parallel run's ranks (`tasks_per_node`): join the
    process group from submitit's view of the SLURM environment (rank, world size, local rank, the
    job's first node), then run the group; task 0's reports are the job's result."""
    import submitit

    progress.set_enabled(False)
    env = submitit.JobEnvironment()
    job_id = os.environ.get("SLURM_JOB_ID") or str(env.job_id)  # one per array task, unlike the array's
    distributed.join(
        payload[1].device,
        env.global_rank,
        env.num_tasks,
        env.local_rank,
        env.hostnames[0] if env.num_nodes > 1 else "127.0.0.1",
        distributed.slurm_port(job_id),
    )
    reports = fn(*payload)
    return reports if distributed.is_main() else []


def queued_tasks(array_ids: set[str]) -> set[str] | None:
    """The array tasks squeue still lists (pending, running or completing), one id per task
    (`123_4`); None when squeue cannot be asked."""
    try:
        done = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(sorted(array_ids))],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:  # every job of the list has left the controller's memory
        return set() if "Invalid job id" in done.stderr else None
    return set(done.stdout.split())


class SlurmExecutor:
    def __init__(
        self,
        folder: Path | str = "results/slurm",
        partition: str | None = None,
        time_min: int = 240,
        gpus_per_node: int = 1,
        cpus_per_task: int = 8,
        mem_gb: int | None = None,
        array_parallelism: int = 64,
        cluster: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.partition, self.time_min, self.gpus, self.cpus = (
            partition,
            time_min,
            gpus_per_node,
            cpus_per_task,
        )
        self.mem_gb, self.parallelism, self.cluster = mem_gb, array_parallelism, cluster

    def _executor(self, ranks: int = 1) -> Any:
        """The submitit executor of array tasks whose runs take `ranks` data-parallel ranks: one task
        per rank (`tasks_per_node`, one GPU each when the array has GPUs), all on one node."""
        try:
            import submitit
        except ImportError:
            raise UsageError("--executor slurm needs submitit: pip install 'bob-bench[cluster]'.") from None
        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        gpus = self.gpus * ranks if self.gpus else 0
        params: dict[str, Any] = {
            "timeout_min": self.time_min,
            "cpus_per_task": self.cpus,
            "name": "bob-sweep" if ranks == 1 else f"bob-sweep-{ranks}ranks",
            "tasks_per_node": ranks,
            "nodes": 1,
        }
        if executor.cluster == "slurm":
            params.update(slurm_array_parallelism=self.parallelism, gpus_per_node=gpus)
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.mem_gb:
                params["mem_gb"] = self.mem_gb
        elif executor.cluster == "local":
            params["gpus_per_node"] = gpus
        executor.update_parameters(**params)
        return executor

    def run(self, groups: list[RunGroup], job: SweepJob, on_report: ReportFn, on_group_lost: LostFn) -> None:
        if not groups:
            return
        executors: dict[int, Any] = {}
        for wave in dependency_levels(groups):
            self._run_wave(executors, wave, job, on_report, on_group_lost)

    def _run_wave(
        self,
        executors: dict[int, Any],
        groups: list[RunGroup],
        job: SweepJob,
        on_report: ReportFn,
        on_group_lost: LostFn,
    ) -> None:
        """One job array per rank count in the wave (most have one: every run in one task; runs that
        train data-parallel under --ranks-per-run N get arrays of N-task jobs), polled together."""
        by_ranks: dict[int, list[RunGroup]] = {}
        for group in groups:
            by_ranks.setdefault(groups_ranks(job.payload(group)[0], job.options), []).append(group)
        pending = []
        for ranks, members in by_ranks.items():
            if ranks not in executors:
                executors[ranks] = self._executor(ranks)
            executor = executors[ranks]
            columns = list(zip(*(job.payload(g) for g in members), strict=True))
            call = _call if ranks == 1 else _call_ranked
            jobs = executor.map_array(call, [job.fn] * len(members), *columns)
            pending += list(zip(jobs, members, strict=True))
        on_slurm = next(iter(executors.values())).cluster == "slurm"
        gone: dict[str, float] = {}  # task id -> when it was first missing from squeue
        while pending:
            queued = queued_tasks({j.job_id.split("_")[0] for j, _ in pending}) if on_slurm else None
            waiting = []
            for slurm_job, group in pending:
                if slurm_job.done():
                    self._collect(slurm_job, group, on_report, on_group_lost)
                elif queued is not None and slurm_job.job_id not in queued:
                    if time.monotonic() - gone.setdefault(slurm_job.job_id, time.monotonic()) < GONE_AFTER_S:
                        waiting.append((slurm_job, group))
                    else:
                        on_group_lost(
                            group,
                            f"SLURM task {slurm_job.job_id} ended without a result (cancelled, preempted, "
                            "out of time or its node failed); see its log in the --slurm-folder",
                        )
                else:
                    gone.pop(slurm_job.job_id, None)
                    waiting.append((slurm_job, group))
            pending = waiting
            if pending:
                time.sleep(POLL_S if on_slurm else 0.5)

    @staticmethod
    def _collect(slurm_job: Any, group: RunGroup, on_report: ReportFn, on_group_lost: LostFn) -> None:
        """Hand a finished task's reports on; a task that ended without its result loses its group."""
        try:
            reports = slurm_job.result()
        except Exception as err:  # the array task failed or timed out: its unfinished runs are lost
            on_group_lost(group, f"{type(err).__name__}: {err}")
            return
        for report in reports:
            on_report(RunReport(**report))
