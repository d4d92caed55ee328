"""Executors: where plan groups run. Each takes the groups, a SweepJob and two callbacks.

    local  in this process, group after group (default)
    ray    one Ray core task per group, on a local Ray or an existing cluster (--address)
    slurm  a submitit job array over the groups (partition, time, GPUs, CPUs as flags)

Every executor ships plain dicts to `SweepJob.fn` (bob.sweep.worker.run_group) and hands each run's
report to `on_report`; a group whose worker died for good goes to `on_group_lost`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bob.errors import UnknownNameError
from bob.registry import import_target, suggest
from bob.runner import RunOptions
from bob.sweep.plan import RunGroup
from bob.sweep.worker import RunReport, run_group, spec_to_dict

EXECUTORS = {
    "local": "bob.sweep.executors.local:LocalExecutor",
    "ray": "bob.sweep.executors.ray:RayExecutor",
    "slurm": "bob.sweep.executors.slurm:SlurmExecutor",
}

ReportFn = Callable[[RunReport], None]
LostFn = Callable[[RunGroup, str], None]


@dataclass
class SweepJob:
    options: RunOptions
    mode: str = "missing"
    fresh_after: float | None = None
    fn: Callable[..., list[dict[str, Any]]] = field(default=run_group)

    def payload(self, group: RunGroup) -> tuple:
        return ([spec_to_dict(s) for s in group.specs], self.options, self.mode, self.fresh_after)


class Executor(Protocol):
    def run(
        self, groups: list[RunGroup], job: SweepJob, on_report: ReportFn, on_group_lost: LostFn
    ) -> None: ...


def make_executor(name: str, **settings: Any) -> Executor:
    if name not in EXECUTORS:
        raise UnknownNameError(
            "executor", name, suggest(name, EXECUTORS, 2), f"Executors: {', '.join(EXECUTORS)}."
        )
    return import_target(EXECUTORS[name])(**settings)
