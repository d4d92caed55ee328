"""One lock file per run id, so two sweeps on one results dir never run the same spec at once.

The lock is `<result path>.lock`, a `bob.locks.FileLock` holding the owner's host, pid and start
time. A lock whose owner is on this host and no longer alive (a worker killed with -9) is stale and
is broken. A lock from another host is respected while its holder's heartbeat thread keeps touching
it (every RUN_HEARTBEAT_S seconds); once it stops (the node died, the job was preempted), the lock
counts as abandoned after a few missed beats, so a retry on another node, or a resumed sweep, runs
the spec instead of reporting it busy forever.
"""

from __future__ import annotations

from pathlib import Path

from bob.locks import HOST, FileLock

__all__ = ["HOST", "RUN_HEARTBEAT_S", "RunLock"]

RUN_HEARTBEAT_S = 10.0


class RunLock(FileLock):
    def __init__(self, result_path: Path) -> None:
        super().__init__(Path(str(result_path) + ".lock"), heartbeat=RUN_HEARTBEAT_S)
