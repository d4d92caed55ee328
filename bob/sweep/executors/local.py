"""The local executor: every group in this process, in plan order (a group after the groups whose
runs it consumes: `bob.sweep.plan.order_groups`)."""

from __future__ import annotations

from bob.sweep.executors import LostFn, ReportFn, SweepJob
from bob.sweep.plan import RunGroup
from bob.sweep.worker import RunReport


class LocalExecutor:
    def run(self, groups: list[RunGroup], job: SweepJob, on_report: ReportFn, on_group_lost: LostFn) -> None:
        for group in groups:
            for payload_spec in job.payload(group)[0]:  # run by run, so the progress bar moves per run
                (report,) = job.fn([payload_spec], job.options, job.mode, job.fresh_after)
                on_report(RunReport(**report))
