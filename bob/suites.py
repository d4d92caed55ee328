"""The suite registry: every folder of `bob.tasks` is a suite, found without a central list.

A suite is a package `bob.tasks.<folder>` whose `__init__.py` defines one `Task` subclass; its
metadata is read from that class and nowhere else. `common/` (code the suites share) and names
starting with `_` are not suites. Discovery imports each suite's `__init__.py` (torch-free by
contract) once, on first use, never its `run.py`. A task name reads `<suite>/<dataset>`: every
suite crossed with every registered dataset of a task type the suite accepts.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from bob.data import DATASETS
from bob.errors import UnknownNameError
from bob.registry import match, suggest
from bob.task import Task

TASKS_PACKAGE = "bob.tasks"
NOT_SUITES = frozenset({"common"})


class SuiteDefinitionError(Exception):
    """A suite folder that breaks the anatomy (no Task class, two of them, a name that does not fit).

    A bug in bob or in a suite being written, never bad user input: it is not a `BobError`."""


def suite_folders() -> list[str]:
    """The suite folders of `bob.tasks`, sorted (read from the file system, nothing imported)."""
    spec = importlib.util.find_spec(TASKS_PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        raise SuiteDefinitionError(f"{TASKS_PACKAGE} is not an installed package")
    return sorted(
        info.name
        for info in pkgutil.iter_modules(spec.submodule_search_locations)
        if info.ispkg and info.name not in NOT_SUITES and not info.name.startswith("_")
    )


def _suite_class(folder: str) -> type[Task]:
    module = importlib.import_module(f"{TASKS_PACKAGE}.{folder}")
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Task) and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise SuiteDefinitionError(
            f"{module.__name__} must define exactly one Task subclass in its __init__.py, found "
            f"{[c.__name__ for c in found] or 'none'}"
        )
    cls = found[0]
    if cls.suite.replace("-", "_") != folder or cls.__name__ != cls.class_name():
        raise SuiteDefinitionError(
            f"{module.__name__}.{cls.__name__}: suite '{cls.suite}' must live in tasks/"
            f"{cls.suite.replace('-', '_')}/ and its class be named {cls.class_name()}"
        )
    return cls


@cache
def _suites() -> dict[str, type[Task]]:
    classes = [_suite_class(folder) for folder in suite_folders()]
    return {cls.suite: cls for cls in classes}


class SuiteRegistry:
    """Suite name -> Task class: the folders of `bob.tasks`, plus suites registered in code."""

    kind = "task suite"

    def __init__(self) -> None:
        self._extra: dict[str, type[Task]] = {}

    def _all(self) -> dict[str, type[Task]]:
        return {**_suites(), **self._extra}

    def register(self, cls: type[Task]) -> type[Task]:
        """Add a suite defined outside `bob.tasks` (a notebook, a test); usable as a class decorator."""
        if cls.suite in self:
            raise ValueError(f"task suite '{cls.suite}' is already registered")
        self._extra[cls.suite] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove a suite added with `register` (the folders of `bob.tasks` stay)."""
        self._extra.pop(name, None)

    def names(self, pattern: str | None = None) -> list[str]:
        names = list(self._all())
        return match(pattern, names) if pattern else names

    def classes(self) -> Iterator[type[Task]]:
        return iter(self._all().values())

    def get(self, name: str) -> type[Task]:
        suites = self._all()
        if name not in suites:
            raise UnknownNameError(self.kind, name, suggest(name, suites), "List them with `bob ls tasks`.")
        return suites[name]

    def __contains__(self, name: str) -> bool:
        return name in self._all()


SUITES = SuiteRegistry()


@dataclass(frozen=True)
class TaskName:
    suite: str
    dataset: str

    @property
    def name(self) -> str:
        return f"{self.suite}/{self.dataset}"


def compatible_datasets(cls: type[Task]) -> list[str]:
    """The registered datasets a suite runs on: those of a task type it accepts."""
    return [e.name for e in DATASETS.entries() if e.meta["info"].task_type in cls.task_types]


def task_names(pattern: str | None = None) -> list[str]:
    names = [f"{cls.suite}/{ds}" for cls in SUITES.classes() for ds in compatible_datasets(cls)]
    return match(pattern, names) if pattern else names


def parse_task_name(name: str) -> TaskName:
    """Validate `<suite>/<dataset>`; unknown names raise with the closest valid task names."""
    suite, sep, dataset = name.partition("/")
    if sep and suite in SUITES and dataset in compatible_datasets(SUITES.get(suite)):
        return TaskName(suite, dataset)
    hint = "Task names read <suite>/<dataset>, e.g. linear-probe/animal-mnist. List them with `bob ls tasks`."
    raise UnknownNameError("task", name, suggest(name, task_names()), hint)


def task_class(suite: str) -> type[Task]:
    return SUITES.get(suite)
