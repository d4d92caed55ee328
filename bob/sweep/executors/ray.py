"""The Ray executor: one Ray core task per plan group.

Workers write each result atomically into the shared results dir *and* return it; the driver writes
any returned result whose file is missing (a worker on a node without the shared filesystem), so a
result is lost only if both copies are. `max_retries` re-runs a group whose worker or node died
(system failures); application errors never raise here, they are failed results already, so
`retry_exceptions` stays off. A retried group skips what its first attempt finished.

A data-parallel run (`--ranks-per-run N`, bob/sweep/worker.py) is placed as one gang: a placement
group that reserves its N devices on one node at once, and the worker inside it starts the ranks
with torch's elastic launcher (`RayExecutor._gang`); the group is removed when the run ends.

Dependencies (bob/sweep/plan.py): a group whose runs consume other groups' runs gets those groups'
task refs as arguments, so Ray starts it only once they are done; if one of them is lost, so is it
(with the reason).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from bob import progress
from bob.errors import UsageError
from bob.sweep.executors import LostFn, ReportFn, SweepJob
from bob.sweep.plan import RunGroup
from bob.sweep.worker import RunReport, groups_ranks

log = logging.getLogger(__name__)


def _call(fn: Any, *payload: Any) -> list[dict[str, Any]]:
    progress.set_enabled(False)  # no bars from inside a worker
    return fn(*payload)


def _call_after(fn: Any, waits: int, *rest: Any) -> list[dict[str, Any]]:
    """A group that waits: Ray starts it once the `waits` task refs before its payload are done (a big
    group's first run, which extracts, and the groups whose runs it consumes)."""
    return _call(fn, *rest[waits:])


def split_group(group: RunGroup, chunk: int) -> tuple[RunGroup, list[RunGroup]]:
    """A big cache-reading group as its first run (which extracts) and chunks of the rest (which
    only read the cache), so many workers share one group without extracting twice."""
    if not group.extracts or len(group.specs) <= chunk + 1:
        return group, []
    head = RunGroup(group.key, group.specs[:1], True)
    rest = group.specs[1:]
    return head, [RunGroup(group.key, rest[i : i + chunk], True) for i in range(0, len(rest), chunk)]


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at a `host:port` address (`ray.init` would retry for minutes);
    other forms ("auto", "ray://...") are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise UsageError(
            f"Cannot reach the Ray cluster at {address}: {err}. Check that it is up (`ray status` on its "
            "head node) and that --address names its head's port (6379 unless `ray start --port` set one)."
        ) from None


def remove_placement_group(pg: Any) -> None:
    from ray.util.placement_group import remove_placement_group as remove

    remove(pg)


class RayExecutor:
    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_run: float = 1.0,
        gpus_per_run: float | None = None,
        max_retries: int = 3,
        chunk: int = 50,
        shutdown: bool = True,
    ) -> None:
        self.address, self.num_cpus, self.chunk = address, num_cpus, chunk
        self.cpus_per_run, self.gpus_per_run = cpus_per_run, gpus_per_run
        self.max_retries, self.shutdown = max_retries, shutdown

    def _connect(self) -> tuple[Any, bool]:
        try:
            import ray
        except ImportError:
            raise UsageError(
                "--executor ray needs Ray: pip install 'bob-bench[cluster]' (or pip install ray)."
            ) from None
        if ray.is_initialized():
            return ray, False
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if self.address:
            check_reachable(self.address)
            kwargs["address"] = self.address
        else:
            kwargs["num_cpus"] = self.num_cpus
        try:
            ray.init(**kwargs)
        except ConnectionError as err:
            raise UsageError(
                f"Cannot reach the Ray cluster at {self.address}: {err}. Check that it is up (`ray status`) "
                "and, on a cluster with token authentication, that this shell has its token: "
                "RAY_AUTH_MODE=token, and the token in ~/.ray/auth_token or RAY_AUTH_TOKEN_PATH."
            ) from None
        return ray, True

    def _gpus(self, ray: Any) -> float:
        if self.gpus_per_run is not None:
            return self.gpus_per_run
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    def run(self, groups: list[RunGroup], job: SweepJob, on_report: ReportFn, on_group_lost: LostFn) -> None:
        ray, started = self._connect()
        try:
            gpus = self._gpus(ray)
            options = {
                "num_cpus": self.cpus_per_run,
                "num_gpus": gpus,
                "max_retries": self.max_retries,
                "retry_exceptions": False,
            }
            # A fresh worker per GPU group hands all CUDA memory back between groups.
            remote = ray.remote(max_calls=1 if gpus else 0)(_call)
            after = ray.remote(max_calls=1 if gpus else 0)(_call_after)
            fn_ref = ray.put(job.fn)
            pending = {}
            task_of: dict[str, Any] = {}  # run id -> the task ref that runs it (groups come providers first)
            gangs: dict[Any, Any] = {}  # task ref -> the placement group it runs in
            for group in groups:
                waits = list({id(r): r for r in (task_of[n] for n in group.needs if n in task_of)}.values())
                head, chunks = split_group(group, self.chunk)
                ranks = groups_ranks(job.payload(head)[0], job.options)
                gang = self._gang(ray, head, ranks, gpus) if ranks > 1 else {}
                if waits:
                    head_ref = after.options(**{**options, **gang}).remote(
                        fn_ref, len(waits), *waits, *job.payload(head)
                    )
                else:
                    head_ref = remote.options(**{**options, **gang}).remote(fn_ref, *job.payload(head))
                if gang:
                    gangs[head_ref] = gang["scheduling_strategy"].placement_group
                pending[head_ref] = head
                task_of.update((s.id, head_ref) for s in head.specs)
                for part in chunks:
                    ref = after.options(**options).remote(
                        fn_ref, 1 + len(waits), head_ref, *waits, *job.payload(part)
                    )
                    pending[ref] = part
                    task_of.update((s.id, ref) for s in part.specs)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    group = pending.pop(ref)
                    if ref in gangs:  # the run's devices go back to the cluster
                        remove_placement_group(gangs.pop(ref))
                    try:
                        reports = ray.get(ref)
                    except Exception as err:  # the worker died more often than max_retries allows
                        log.warning("group %s lost: %s", group.label, err)
                        on_group_lost(group, f"{type(err).__name__}: {err}")
                        continue
                    for report in reports:
                        on_report(RunReport(**report))
        finally:
            if started and self.shutdown:
                ray.shutdown()

    def _gang(self, ray: Any, group: RunGroup, ranks: int, gpus: float) -> dict[str, Any]:
        """Task options that run a data-parallel run's worker as one gang: a placement group that
        reserves all `ranks` devices (one GPU each, or `cpus_per_run` CPUs each on a CPU cluster) on
        one node at once (STRICT_PACK), so the elastic launcher inside the worker starts every rank
        or none; Ray gives the worker those GPUs (CUDA_VISIBLE_DEVICES)."""
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle: dict[str, float] = {"CPU": self.cpus_per_run * ranks}
        if gpus:
            bundle["GPU"] = float(ranks)
        pg = placement_group([bundle], strategy="STRICT_PACK", name=f"bob-{group.specs[0].id}")
        strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
        return {
            "num_cpus": bundle["CPU"],
            "num_gpus": bundle.get("GPU", 0),
            "scheduling_strategy": strategy,
        }
