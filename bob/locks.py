"""Lock files shared by processes on one machine or many: a run's lock, a feature extraction's lock.

A lock is a file created with O_CREAT|O_EXCL (atomic on POSIX and NFSv3+) that holds its owner's
host, pid and start time. It is stale, and may be broken, when its owner is on this host and no
longer alive (a process killed with -9), when it cannot be read for a minute (a writer died between
create and write), or, for a lock with a heartbeat, when its owner stopped touching it: the holder's
thread refreshes the file's mtime every `heartbeat` seconds, so a lock from another host whose node
died goes stale after `STALE_BEATS` missed beats instead of blocking forever. Breaking is itself
exclusive (a second O_EXCL file), so two processes that saw the same stale lock cannot both break it
and remove the fresh lock one of them just made.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

HOST = socket.gethostname()
UNREADABLE_STALE_S = 60.0  # a lock file that never got its owner line
STALE_BEATS = 6  # heartbeats a holder may miss before its lock counts as abandoned
POLL_S = 0.25


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FileLock:
    """An exclusive lock file. `acquire()` never blocks; `wait_free()` waits until it is released."""

    def __init__(self, path: Path, heartbeat: float | None = None) -> None:
        self.path = Path(path)
        self.heartbeat = heartbeat
        self.held = False
        self._stop: threading.Event | None = None

    def owner(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _age(self) -> float | None:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None

    def is_stale(self) -> bool:
        owner, age = self.owner(), self._age()
        if age is None:  # gone: nothing to respect
            return True
        if owner is None:  # unreadable: a writer died between create and write, or is writing now
            return age > UNREADABLE_STALE_S
        if owner.get("host") == HOST:
            return not _alive(int(owner.get("pid", -1)))
        beat = owner.get("heartbeat")
        return isinstance(beat, (int, float)) and beat > 0 and age > STALE_BEATS * beat

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
            owner = {"host": HOST, "pid": os.getpid(), "since": time.time(), "heartbeat": self.heartbeat}
            with os.fdopen(fd, "w") as f:
                json.dump(owner, f)
            self.held = True
            self._start_heartbeat()
            return True
        return False

    def wait_free(self, poll: float = POLL_S, on_wait: Any = None) -> None:
        """Block until no live process holds the lock (released, or its owner died). `on_wait(owner)`
        is called once, when the wait starts, so a caller can say what it waits for."""
        told = False
        while self.path.exists() and not self.is_stale():
            if not told and on_wait is not None:
                on_wait(self.owner())
                told = True
            time.sleep(poll)

    def _start_heartbeat(self) -> None:
        if not self.heartbeat:
            return
        self._stop = threading.Event()
        stop, beat, path = self._stop, self.heartbeat, self.path

        def touch() -> None:
            while not stop.wait(beat):
                try:
                    os.utime(path)
                except OSError:
                    return

        threading.Thread(target=touch, name=f"bob-lock-heartbeat-{path.name}", daemon=True).start()

    def _break_stale(self) -> bool:
        """Remove a stale lock, exclusively (see the module docstring)."""
        if not self.is_stale():
            return False
        breaker = Path(str(self.path) + ".break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:  # a breaker that died mid-break leaves this file behind
                if time.time() - breaker.stat().st_mtime > UNREADABLE_STALE_S:
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
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
