"""A typed, lazy registry of names: backbones, task suites and datasets.

An entry is a name, a `"module:attr"` target imported only when the entry is used, and plain
metadata that `bob ls` can show without importing torch. Open namespaces (every timm model, every
torchvision classifier) are served from static name indexes shipped with bob, so listing and
validating names never imports the library behind them.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bob.errors import UnknownNameError, UsageError

T = TypeVar("T")


def import_target(target: str) -> Any:
    """Import `"package.module:attr"` and return the attribute."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name. `load()` imports its target; `meta` is available without importing."""

    name: str
    target: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> T:
        return import_target(self.target)


@dataclass(frozen=True)
class Namespace:
    """An open family of names `<prefix>/<name>` served by one target, listed by a lazy index."""

    prefix: str
    target: str
    index: Callable[[], Iterable[str]]
    description: str = ""
    # Consulted (and allowed to import the library) when a name is missing from the static index,
    # so a newer library than the one the index was built from still resolves its new names.
    live: Callable[[str], bool] | None = None


def _name_part(name: str) -> str:
    return name.split("/", 1)[1] if "/" in name else name


def match(pattern: str, names: Iterable[str]) -> list[str]:
    """Glob-filter names like `timm.list_models`: case-insensitive; a pattern without '/' matches the
    part after the namespace too, so `resnet*` finds `timm/resnet50` and `torchvision/resnet50`."""
    pattern = pattern.lower()
    out = []
    for name in names:
        low = name.lower()
        if fnmatch.fnmatchcase(low, pattern) or (
            "/" not in pattern and fnmatch.fnmatchcase(_name_part(low), pattern)
        ):
            out.append(name)
    return out


def suggest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Closest names to `name`: same name in another namespace first, then close spellings."""
    candidates = list(candidates)
    by_part: dict[str, list[str]] = {}
    for cand in candidates:
        by_part.setdefault(_name_part(cand), []).append(cand)
    part = _name_part(name)
    # The same name in other namespaces (or other suites), closest to the whole name first.
    found = sorted(by_part.get(part, []), key=lambda c: -difflib.SequenceMatcher(None, name, c).ratio())
    found += [c for c in difflib.get_close_matches(name, candidates, n=n, cutoff=0.6) if c not in found]
    for close in difflib.get_close_matches(part, list(by_part), n=n, cutoff=0.75):
        found += [c for c in by_part[close] if c not in found]
    return found[:n]


class Registry(Generic[T]):
    """Named entries plus open namespaces, resolved lazily, with did-you-mean errors.

    `populate`, if given, registers the entries on first use (e.g. by reading YAML files), so
    building the registry costs nothing until a name is looked up or listed.
    """

    def __init__(self, kind: str, populate: Callable[[Registry[T]], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._namespaces: dict[str, Namespace] = {}
        self._populate = populate

    def _ensure(self) -> None:
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate(self)

    def register(self, name: str, target: str, **meta: Any) -> Entry[T]:
        self._ensure()
        if name in self._entries:
            raise ValueError(
                f"{self.kind} '{name}' is already registered (target {self._entries[name].target})"
            )
        entry: Entry[T] = Entry(name, target, meta)
        self._entries[name] = entry
        return entry

    def add_namespace(
        self,
        prefix: str,
        target: str,
        index: Callable[[], Iterable[str]],
        description: str = "",
        live: Callable[[str], bool] | None = None,
    ) -> None:
        self._namespaces[prefix] = Namespace(prefix, target, index, description, live)

    @property
    def namespaces(self) -> Mapping[str, Namespace]:
        return self._namespaces

    def entries(self) -> Iterator[Entry[T]]:
        self._ensure()
        return iter(self._entries.values())

    def names(self, pattern: str | None = None, namespaces: bool = True) -> list[str]:
        self._ensure()
        names: list[str] = list(self._entries)
        if namespaces:
            for ns in self._namespaces.values():
                names.extend(f"{ns.prefix}/{n}" for n in ns.index())
            names = list(dict.fromkeys(names))  # a curated entry may also be a namespace name
        return match(pattern, names) if pattern else names

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except UsageError:
            return False
        return True

    def get(self, name: str, live: bool = False) -> Entry[T]:
        """The entry for `name`; namespace names return an entry whose meta holds the namespace.

        With `live`, a name missing from a namespace's static index is checked against the library
        itself (which may import it), so names newer than the shipped index still resolve.
        """
        self._ensure()
        if name in self._entries:
            return self._entries[name]
        prefix, sep, rest = name.partition("/")
        ns = self._namespaces.get(prefix) if sep else None
        if ns is not None and (rest in ns.index() or (live and ns.live is not None and ns.live(rest))):
            return Entry(name, ns.target, {"namespace": prefix, "name": rest})
        raise UnknownNameError(self.kind, name, suggest(name, self.names()), self._hint(name))

    def _hint(self, name: str) -> str:
        listing = f"List them with `bob ls {self.kind.split()[-1]}s`."
        if self._namespaces and "/" not in name:
            prefixes = ", ".join(f"'{p}/'" for p in self._namespaces)
            return f"Names in open families start with {prefixes}. {listing}"
        return listing
