"""One lock file per run id, so two sweeps on one results dir never run the same spec at once.

The lock is `<result path>.lock`, created with O_CREAT|O_EXCL (atomic on POSIX and NFSv3+) and
holding the owner's host, pid and start time. A lock whose owner is on this host and no longer
alive (a worker killed with -9) is stale and is broken; a lock from another host is respected.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

HOST = socket.gethostname()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    def __init__(self, result_path: Path) -> None:
        self.path = Path(str(result_path) + ".lock")
        self.held = False

    def owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def is_stale(self) -> bool:
        owner = self.owner()
        if owner is None:  # unreadable: a writer died between create and write, or it is being written
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except FileNotFoundError:
                return True
        return owner.get("host") == HOST and not _alive(int(owner.get("pid", -1)))

    def acquire(self) -> bool:
        """True if this process now holds the lock; False if a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": HOST, "pid": os.getpid(), "since": time.time()}, f)
            self.held = True
            return True
        return False

    def _break_stale(self) -> bool:
        """Remove a stale lock. A second O_EXCL file makes breaking exclusive, so two processes that
        both saw the same stale lock cannot remove a fresh one the other just created."""
        if not self.is_stale():
            return False
        breaker = Path(str(self.path) + ".break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:  # a breaker that died mid-break leaves this file behind
                if time.time() - breaker.stat().st_mtime > 60:
                    breaker.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            if self.is_stale():
                self.path.unlink(missing_ok=True)
                return True
            return False
        finally:
            breaker.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
