"""One lock file per run id, so two sweeps on one results dir never run the same spec at once.

The lock is `<result path>.lock`, a `bob.locks.FileLock` holding the owner's host, pid and start
time. A lock whose owner is on this host and no longer alive (a worker killed with -9) is stale and
is broken; a lock from another host is respected.
"""

from __future__ import annotations

from pathlib import Path

from bob.locks import HOST, FileLock

__all__ = ["HOST", "RunLock"]


class RunLock(FileLock):
    def __init__(self, result_path: Path) -> None:
        super().__init__(Path(str(result_path) + ".lock"))
