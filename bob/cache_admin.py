"""Look after the on-disk caches: list, size and prune the feature cache and the geometry cache.

Both caches share one layout (`bob.cache`, `bob.pixels`): an entry is `<root>/<key[:2]>/<key>/`
with its files and a `COMPLETE` marker written last; a writer builds it in a temp directory
`<root>/<key[:2]>/.tmp-<key[:12]>-*` while holding the key's extraction lock
`<root>/<key[:2]>/.<key>.lock` (`bob.locks.FileLock`, with a heartbeat).

Pruning never touches an entry in use: one whose key's lock is held by a live process (a sweep
extracting it, or waiting for it) is skipped, and every entry is removed while this process holds
its key's lock itself, so no sweep can start building or claiming that key halfway through. The
entry is first renamed out of place (atomic), then deleted: a sweep sees it whole or not at all.
A temp directory is a write in progress while a live lock of its key exists or it changed in the last
`PARTIAL_GRACE_S` seconds; after that it is what a killed writer left, and prunable.

"Last used" is the newest access time of the entry's files, as the file system records it (Linux's
default `relatime` mount updates it at most once a day; under `noatime` it is the creation time).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bob.errors import UsageError
from bob.locks import FileLock
from bob.weights import bob_cache_dir

KINDS = ("features", "pixels")
# An unlocked temp directory this recent may still be written by a process that just released its
# lock after renaming (or is between mkdtemp and its first write): left alone.
PARTIAL_GRACE_S = 3600.0
_TMP = re.compile(r"^\.(?:tmp|trash)-(?P<prefix>[0-9a-f]{12})-")  # a write, or a removal, cut short
_LOCK = re.compile(r"^\.(?P<key>[0-9a-f]{64})\.lock$")
_KEY = re.compile(r"^[0-9a-f]{64}$")
_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|min|h|d|w)\s*$", re.IGNORECASE)
_SIZE = re.compile(
    r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?\s*$", re.IGNORECASE
)
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def _now() -> float:
    return time.time()


# The default folders, as `bob.cache.default_cache_root` and `bob.pixels.default_pixel_root` name them,
# without importing numpy and torch: `bob --help` loads this module.
def default_feature_root() -> Path:
    return bob_cache_dir() / "features"


def default_geometry_root() -> Path:
    return bob_cache_dir() / "pixels"


def parse_duration(text: str) -> float:
    """`90m`, `12h`, `30d`, `2w` (or `45s`) in seconds."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"--older-than takes a duration such as 12h, 30d or 2w, got '{text}'.")
    return float(match["n"]) * _SECONDS[match["unit"].lower()]


def parse_size(text: str) -> int:
    """`500M`, `20G`, `1.5TB` or a plain number of bytes; K/M/G/T are powers of 1024."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"--max-size takes a size such as 500M, 20G or 1.5T, got '{text}'.")
    power = "bkmgt".index((match["unit"] or "b")[0].lower())
    return int(float(match["n"]) * 1024**power)


@dataclass
class CacheEntry:
    """One entry of either cache, or a temp directory a writer left."""

    kind: str  # features | pixels
    key: str  # the full key, or the 12-character prefix of a temp directory's key
    path: Path
    size_bytes: int
    created: float  # epoch seconds
    last_used: float
    state: str  # ok | incomplete (no COMPLETE marker or unreadable meta) | partial (temp dir) | in-use
    backbone: str = ""  # features: the backbone name; pixels: shared by every backbone, so empty
    dataset: str = ""
    split: str = ""
    holder: str = ""  # who holds the key's lock, when in use

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["created"] = _iso(self.created)
        d["last_used"] = _iso(self.last_used)
        return d


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def _live_holder(lock_path: Path) -> str:
    """'pid N on HOST' when a live process holds this lock file, else ''."""
    lock = FileLock(lock_path)
    if not lock.path.exists() or lock.is_stale():
        return ""
    owner = lock.owner() or {}
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"


def _files(path: Path) -> list[os.stat_result]:
    stats = []
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                stats.append(os.stat(os.path.join(dirpath, name)))
            except FileNotFoundError:  # removed while we looked
                continue
    return stats


def _describe(kind: str, meta: dict[str, Any]) -> tuple[str, str, str]:
    """(backbone, dataset, split) of an entry's meta.json."""
    if kind == "pixels":
        return "", str(meta.get("dataset", "")), str(meta.get("split", ""))
    spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
    backbone_meta = meta.get("backbone") if isinstance(meta.get("backbone"), dict) else {}
    backbone = backbone_meta.get("name") or (spec.get("backbone") or {}).get("resolved_name", "")
    dataset = spec.get("dataset") if isinstance(spec.get("dataset"), dict) else {}
    return str(backbone), str(dataset.get("dataset", "")), str(dataset.get("split", ""))


def scan(root: Path, kind: str) -> list[CacheEntry]:
    """Every entry and temp directory under one cache root (none when the root does not exist)."""
    if kind not in KINDS:
        raise UsageError(f"cache kind must be one of {', '.join(KINDS)}, got '{kind}'.")
    root = Path(root)
    if not root.is_dir():
        return []
    entries: list[CacheEntry] = []
    for shard in sorted(p for p in root.iterdir() if p.is_dir() and len(p.name) == 2):
        names = {p.name: p for p in shard.iterdir()}
        live_keys = {m["key"]: _live_holder(p) for n, p in names.items() if (m := _LOCK.match(n))}
        live_keys = {k: who for k, who in live_keys.items() if who}
        for name, path in sorted(names.items()):
            if not path.is_dir():
                continue
            stats = _files(path)
            size = sum(s.st_size for s in stats)
            newest_change = max([s.st_mtime for s in stats] + [path.stat().st_mtime])
            if tmp := _TMP.match(name):
                prefix = tmp["prefix"]
                holder = next((who for k, who in live_keys.items() if k.startswith(prefix)), "")
                recent = _now() - newest_change < PARTIAL_GRACE_S
                state = "in-use" if holder or recent else "partial"
                entries.append(
                    CacheEntry(kind, prefix, path, size, newest_change, newest_change, state, holder=holder)
                )
                continue
            if not _KEY.match(name):
                continue
            meta: dict[str, Any] = {}
            state = "ok"
            try:
                loaded = json.loads((path / "meta.json").read_text())
                meta = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                state = "incomplete"
            if not (path / "COMPLETE").is_file():
                state = "incomplete"
            created = _created(meta, path)
            last_used = max([created] + [s.st_atime for s in stats])
            holder = live_keys.get(name, "")
            if holder:
                state = "in-use"
            backbone, dataset, split = _describe(kind, meta)
            entries.append(
                CacheEntry(
                    kind, name, path, size, created, last_used, state, backbone, dataset, split, holder
                )
            )
    return entries


def _created(meta: dict[str, Any], path: Path) -> float:
    stamp = meta.get("created_at")
    if isinstance(stamp, str):
        try:
            return time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            pass
    marker = path / "COMPLETE"
    return (marker if marker.exists() else path).stat().st_mtime


def roots(cache_dir: Path | None, geometry_dir: Path | None) -> dict[str, Path]:
    """The folder of each cache kind; a folder the user names must exist (a typo lists nothing)."""
    for flag, given in (("--cache-dir", cache_dir), ("--geometry-dir", geometry_dir)):
        if given is not None and not Path(given).is_dir():
            raise UsageError(f"{flag} {given} is not a directory.")
    return {
        "features": Path(cache_dir) if cache_dir is not None else default_feature_root(),
        "pixels": Path(geometry_dir) if geometry_dir is not None else default_geometry_root(),
    }


@dataclass
class Selection:
    """Which entries a listing or a prune is about: all filters must match."""

    kinds: tuple[str, ...] = KINDS
    backbones: tuple[str, ...] = ()  # globs on the backbone name; pixels entries match none
    datasets: tuple[str, ...] = ()
    older_than_s: float | None = None  # not used for this long

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise UsageError(f"--kind must be one of {', '.join(KINDS)}, got '{bad[0]}'.")

    @property
    def narrows(self) -> bool:
        return bool(self.backbones or self.datasets or self.older_than_s is not None)

    def keep(self, entry: CacheEntry, now: float) -> bool:
        if entry.kind not in self.kinds:
            return False
        if self.backbones and not any(fnmatch.fnmatchcase(entry.backbone, g) for g in self.backbones):
            return False
        if self.datasets and not any(fnmatch.fnmatchcase(entry.dataset, g) for g in self.datasets):
            return False
        return self.older_than_s is None or now - entry.last_used >= self.older_than_s


def list_entries(paths: dict[str, Path], selection: Selection | None = None) -> list[CacheEntry]:
    """Entries of the selected kinds that pass the filters, most recently used first."""
    selection = selection or Selection()
    now = _now()
    entries = [e for kind in selection.kinds for e in scan(paths[kind], kind) if selection.keep(e, now)]
    return sorted(entries, key=lambda e: e.last_used, reverse=True)


def summarize(entries: Iterable[CacheEntry], by: str) -> list[dict[str, Any]]:
    """Totals per `kind`, `backbone` or `dataset`: entries and bytes, largest first."""
    if by not in ("kind", "backbone", "dataset"):
        raise UsageError(f"--by must be kind, backbone or dataset, got '{by}'.")
    groups: dict[str, dict[str, Any]] = {}
    for e in entries:
        label = getattr(e, by) or ("(geometry cache: any backbone)" if by == "backbone" else "(unknown)")
        row = groups.setdefault(label, {by: label, "entries": 0, "size_bytes": 0, "in_use": 0})
        row["entries"] += 1
        row["size_bytes"] += e.size_bytes
        row["in_use"] += e.state == "in-use"
    return sorted(groups.values(), key=lambda r: r["size_bytes"], reverse=True)


@dataclass
class PruneReport:
    removed: list[CacheEntry]
    skipped_in_use: list[CacheEntry]
    failed: list[tuple[CacheEntry, str]]
    kept_bytes: int  # what the selected kinds hold after the prune
    dry_run: bool

    @property
    def freed_bytes(self) -> int:
        return sum(e.size_bytes for e in self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed": [e.to_dict() for e in self.removed],
            "skipped_in_use": [e.to_dict() for e in self.skipped_in_use],
            "failed": [{**e.to_dict(), "error": why} for e, why in self.failed],
            "freed_bytes": self.freed_bytes,
            "kept_bytes": self.kept_bytes,
        }


def plan_prune(
    paths: dict[str, Path], selection: Selection, max_size: int | None = None, everything: bool = False
) -> tuple[list[CacheEntry], list[CacheEntry], int]:
    """(entries to remove, entries that would qualify but are in use, bytes left after).

    The filters pick candidates; `max_size` then removes the least recently used candidates until the
    selected kinds together hold at most `max_size` bytes (in-use entries count, and stay).
    Without filters, `max_size` or `everything`, nothing qualifies: a bare prune is refused."""
    if not (selection.narrows or max_size is not None or everything):
        raise UsageError(
            "bob cache prune needs a criterion: --older-than, --backbone, --dataset, --max-size, or --all "
            "to remove every entry that is not in use."
        )
    if max_size is not None and max_size < 0:
        raise UsageError("--max-size must not be negative.")
    now = _now()
    everything_listed = [e for kind in selection.kinds for e in scan(paths[kind], kind)]
    candidates = [e for e in everything_listed if selection.keep(e, now)]
    in_use = [e for e in candidates if e.state == "in-use"]
    free = sorted((e for e in candidates if e.state != "in-use"), key=lambda e: e.last_used)
    total = sum(e.size_bytes for e in everything_listed)
    if max_size is None:
        chosen = free
    else:
        chosen = []
        for entry in free:  # least recently used first
            if total <= max_size:
                break
            chosen.append(entry)
            total -= entry.size_bytes
        in_use = in_use if total > max_size else []
    left = sum(e.size_bytes for e in everything_listed) - sum(e.size_bytes for e in chosen)
    return chosen, in_use, left


def _lock_path(entry: CacheEntry) -> Path:
    return entry.path.parent / f".{entry.key}.lock"


def remove(entry: CacheEntry) -> str:
    """Remove one entry unless a live process uses it. Returns '' when removed, 'in-use' when a sweep
    holds it now; raises OSError when the file system refuses."""
    if entry.state == "partial":
        prefix_locks = [p for p in entry.path.parent.glob(f".{entry.key}*.lock") if _live_holder(p)]
        if prefix_locks or not entry.path.exists():
            return "in-use"
        shutil.rmtree(entry.path)
        return ""
    lock = FileLock(_lock_path(entry))
    if not lock.acquire():
        return "in-use"
    try:
        if not entry.path.exists():
            return ""
        trash = entry.path.parent / f".trash-{entry.key[:12]}-{os.getpid()}"
        os.rename(entry.path, trash)  # atomic: a reader sees the whole entry or none
        shutil.rmtree(trash)
        return ""
    finally:
        lock.release()


def prune(
    paths: dict[str, Path],
    selection: Selection,
    max_size: int | None = None,
    everything: bool = False,
    dry_run: bool = False,
) -> PruneReport:
    """Remove what `plan_prune` picks (or only report it, with `dry_run`)."""
    chosen, in_use, left = plan_prune(paths, selection, max_size, everything)
    if dry_run:
        return PruneReport(chosen, in_use, [], left, dry_run=True)
    removed: list[CacheEntry] = []
    failed: list[tuple[CacheEntry, str]] = []
    for entry in chosen:
        try:
            outcome = remove(entry)
        except OSError as err:
            failed.append((entry, f"{err.filename or entry.path}: {err.strerror or err}"))
            continue
        if outcome == "in-use":
            in_use.append(entry)
        else:
            removed.append(entry)
    kept = left + sum(e.size_bytes for e in chosen if e not in removed)
    return PruneReport(removed, in_use, failed, kept, dry_run=False)
