"""The SLURM executor: a submitit job array, one array task per plan group.

`cluster="local"` uses submitit's local executor (subprocesses on this machine), which is how it is
tested; on a SLURM login node the default `cluster=None` lets submitit pick SLURM.

Dependencies (bob/sweep/plan.py): the groups go in waves (`dependency_levels`), one job array per wave,
each submitted once the previous wave has finished; a plan without dependencies is one array.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bob import progress
from bob.errors import UsageError
from bob.sweep.executors import LostFn, ReportFn, SweepJob
from bob.sweep.plan import RunGroup, dependency_levels
from bob.sweep.worker import RunReport


def _call(fn: Any, *payload: Any) -> list[dict[str, Any]]:
    progress.set_enabled(False)
    return fn(*payload)


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

    def _executor(self) -> Any:
        try:
            import submitit
        except ImportError:
            raise UsageError("--executor slurm needs submitit: pip install 'bob-bench[cluster]'.") from None
        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        params: dict[str, Any] = {
            "timeout_min": self.time_min,
            "cpus_per_task": self.cpus,
            "name": "bob-sweep",
        }
        if executor.cluster == "slurm":
            params.update(slurm_array_parallelism=self.parallelism, gpus_per_node=self.gpus)
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.mem_gb:
                params["mem_gb"] = self.mem_gb
        elif executor.cluster == "local":
            params["gpus_per_node"] = 0 if self.gpus == 0 else self.gpus
        executor.update_parameters(**params)
        return executor

    def run(self, groups: list[RunGroup], job: SweepJob, on_report: ReportFn, on_group_lost: LostFn) -> None:
        if not groups:
            return
        executor = self._executor()
        for wave in dependency_levels(groups):
            self._run_wave(executor, wave, job, on_report, on_group_lost)

    def _run_wave(
        self, executor: Any, groups: list[RunGroup], job: SweepJob, on_report: ReportFn, on_group_lost: LostFn
    ) -> None:
        payloads = [job.payload(g) for g in groups]
        columns = list(zip(*payloads, strict=True))
        jobs = executor.map_array(_call, [job.fn] * len(groups), *columns)
        for slurm_job, group in zip(jobs, groups, strict=True):
            try:
                reports = slurm_job.result()
            except Exception as err:  # the array task failed or timed out: its unfinished runs are lost
                on_group_lost(group, f"{type(err).__name__}: {err}")
                continue
            for report in reports:
                on_report(RunReport(**report))
