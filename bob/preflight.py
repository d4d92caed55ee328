"""Pre-flight checks of the folders a command writes to, and one-line messages for refused writes.

A results dir that is a file, a read-only cache, a full disk: each used to surface as a raw
traceback, and for `bob run` only after the compute was spent. `require_writable_dirs` looks at every
folder a command will write to before anything runs (it is a folder that takes a file, or it can be
created) and raises one `UsageError` line (exit 2) naming the folder, the cause and the flag that
moves it; it warns when a folder's disk has little space left. It creates nothing. A write that fails later anyway
(the disk fills during a sweep) becomes a `StorageError` (exit 1) through `storage_error`, with the
path and the cause in words, never `OSError: 689664 requested and 262112 written`.

Torch-free and cheap (a few stat calls and one probe file per folder), so every command can afford it.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bob.errors import StorageError, UsageError

log = logging.getLogger(__name__)

# Below this much free space on a folder's disk, a command warns before it starts (it still runs:
# a few result files fit in far less, a feature cache of ImageNet does not).
LOW_SPACE_BYTES = 1 << 30
# Below this, not even one result file fits: the command stops before any compute.
FULL_BYTES = 1 << 20

_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EEXIST: "it already exists",
}


@dataclass(frozen=True)
class Target:
    """A folder a command writes to: what it is (for the message) and the flag that moves it."""

    path: Path
    what: str
    flag: str


def os_error_cause(err: OSError, path: Path | None = None) -> str:
    """An OSError's cause in words. numpy's short write (`N requested and M written`, no errno) is a
    full disk; the free space on `path`'s disk is added when the cause is space."""
    code = err.errno
    if code is None and "requested and" in str(err) and "written" in str(err):
        code = errno.ENOSPC
    cause = _CAUSES.get(code) if code is not None else None
    if cause is None:
        cause = err.strerror or str(err) or type(err).__name__
    if code in (errno.ENOSPC, errno.EDQUOT) and path is not None:
        free = free_bytes(path)
        if free is not None:
            cause += f" ({format_bytes(free)} free)"
    return cause


def storage_error(what: str, path: Path | str, err: OSError) -> StorageError:
    """The one-line error of a refused write: what was being written, where, and why."""
    return StorageError(f"Cannot write {what} {path}: {os_error_cause(err, Path(path))}.")


def free_bytes(path: Path) -> int | None:
    """Free bytes on the disk holding `path` (or its nearest existing parent); None if unknown."""
    existing = _nearest_existing(Path(path))
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or "/")


def _refuse(target: Target, why: str) -> UsageError:
    return UsageError(
        f"{target.what} {target.path} is not usable: {why}. bob stopped before writing anything; pass "
        f"{target.flag} DIR to use another folder."
    )


def _check_creatable(target: Target) -> None:
    """Without creating anything: the folder exists, or its nearest existing parent is a folder this
    process may write in. A file anywhere on the path is named."""
    path = target.path.absolute()
    existing = _nearest_existing(path)
    if not existing.is_dir():
        shown = "it" if existing == path else str(existing)
        raise _refuse(target, f"{shown} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it" if existing == path else f"its parent {existing}"
        cause = "the file system is read-only" if _read_only(existing) else "permission denied"
        raise _refuse(target, f"{where} cannot be written ({cause})")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _probe(target: Target) -> None:
    """Write (then remove) one probe file in an existing folder: the write a run will do, early.
    A folder that does not exist yet is left to be created by the first write (its parent passed
    `_check_creatable`), so a refused command leaves nothing behind."""
    if not target.path.is_dir():
        return
    try:
        fd, probe = tempfile.mkstemp(dir=target.path, prefix=".bob-preflight-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise _refuse(target, os_error_cause(err, target.path)) from None


def _check_space(target: Target, low: int) -> None:
    """Refuse a full disk (nothing fits, so nothing should run); warn about a nearly full one."""
    free = free_bytes(target.path)
    if free is None:
        return
    if free < FULL_BYTES:
        raise _refuse(target, f"its disk is full ({format_bytes(free)} free)")
    if free < low:
        log.warning(
            "%s %s: only %s free on its disk; runs that write more will fail when it fills.",
            target.what,
            target.path,
            format_bytes(free),
        )


def require_writable_dirs(targets: list[Target], low_space: int = LOW_SPACE_BYTES) -> None:
    """Every target exists (and takes a file) or can be created, and is a folder; else one UsageError
    line. Nothing is created: a refused command, or one that fails a later check, leaves no trace."""
    for target in targets:
        _check_creatable(target)
        _probe(target)
    for target in targets:
        _check_space(target, low_space)
