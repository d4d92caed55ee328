"""The task contract: a protocol on a dataset with a main metric, configured by typed task args.

A suite is one folder `tasks/<suite>/` (installed as `bob.tasks.<suite>`). Its `__init__.py` holds
the `Task` subclass: every piece of metadata the engine reads is a class attribute there, declared
once (the suite registry, `bob.suites`, reads it from the class), plus an `Args` dataclass whose
fields are the task args (`--task-arg k=v`). That module must not import torch: listing, argument
parsing and sweep planning happen before any run. The protocol lives in the suite's `run.py`, which
`Task.run` imports on first use (the suite's one lazy boundary) and calls as `run(task, ctx)`; it
returns a `TaskOutput`: metrics, the protocol values it chose, and artifact paths.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Union

from bob.data import dataset_info
from bob.data.base import LIMIT_TASK_TYPES
from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest

if TYPE_CHECKING:
    from bob.context import RunContext
    from bob.spec import RunSpec
    from bob.sweep.plan import Consumes

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def run_arg(default: Any, help: str, identity: bool = True, omit_default: bool = False) -> Any:
    """A task-arg field. `identity=False` marks args that cannot change results (paths, download).
    `omit_default=True` leaves the arg out of the run's identity while it has its default value: an
    arg added to a suite after runs of it exist keeps their ids (their results stay done), while a
    run that sets it gets an id of its own."""
    return field(default=default, metadata={"help": help, "identity": identity, "omit_default": omit_default})


@dataclass
class TaskArgs:
    """Arguments every task on a dataset understands."""

    root: str | None = run_arg(
        None, "data root for real datasets (default: $BOB_DATA_ROOT or ~/.cache/bob/data)", False
    )
    download: bool = run_arg(False, "download a real dataset if it is missing (needs internet)", False)
    image_size: int | None = run_arg(
        None, "eval resolution (default: the dataset's, else the backbone's own)"
    )
    limit: int | None = run_arg(
        None,
        "at most N samples per split, a seeded draw (stratified by label where samples have one "
        "class; quick runs; default: all)",
        omit_default=True,
    )

    def identity(self) -> dict[str, Any]:
        """The args that define the run (everything but data location), as JSON-able values."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("identity", True)
            and not (f.metadata.get("omit_default") and getattr(self, f.name) == f.default)
        }

    def validate(self) -> None:
        if self.image_size is not None and self.image_size < 8:
            raise UsageError(f"image_size must be at least 8 pixels, got {self.image_size}.")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"limit must be a positive number of samples per split, got {self.limit}.")


@dataclass
class TaskOutput:
    metrics: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)


# The tiny dataset `bob check` mock-runs a suite on unless the suite names its own.
MOCK_DATASET = "shapes-mini"


class Task:
    """Base class of all task suites: the metadata the engine reads, and the lazy call into `run.py`."""

    # The name in `<suite>/<dataset>`; the folder is the name with underscores (`linear-probe` ->
    # tasks/linear_probe/), the class the CamelCase of its words (`LinearProbe`).
    suite: ClassVar[str]
    # Part of every run's id: bump it when a change alters what the suite computes.
    version: ClassVar[str]
    main_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    # What the suite asks of the backbone: "pooled" features, multi-scale "features", "trainable".
    needs: ClassVar[tuple[str, ...]] = ("pooled",)
    # The dataset task types the suite runs on: its task names are it × every such dataset.
    task_types: ClassVar[tuple[str, ...]] = ("classification",)
    # One line for `bob ls tasks`.
    description: ClassVar[str] = ""
    Args: ClassVar[type[TaskArgs]] = TaskArgs
    # Task args that make a run seconds long, and the tiny dataset, for `bob check`'s mock runs.
    check_args: ClassVar[dict[str, str]] = {}
    check_dataset: ClassVar[str] = MOCK_DATASET
    # Whether the metrics are fractions in [0, 1] (tables print them with 4 decimals) or values to
    # print as they are (milliseconds, MACs, counts).
    metrics_are_fractions: ClassVar[bool] = True
    # When runs read the frozen pooled-feature cache (a sweep groups them by extraction): False,
    # True, or (task arg, value) when only runs with that arg value do (`("mode", "linear")`).
    reads_feature_cache: ClassVar[bool | tuple[str, str]] = False
    # Whether a run can train data-parallel under `bob run --gpus-per-run N` (bob/distributed.py):
    # its training runs on the one loop with DDP and its evaluation gathers every rank's shard.
    data_parallel: ClassVar[bool] = False
    # Task arg values that take a data-parallel suite's run off that path: (arg, value) -> why.
    not_data_parallel: ClassVar[dict[tuple[str, str], str]] = {}

    def __init__(self, dataset: str, args: TaskArgs) -> None:
        self.dataset = dataset
        self.args = args

    @classmethod
    def class_name(cls) -> str:
        """The class name every suite follows: the CamelCase of its words (`video-cls` -> `VideoCls`)."""
        return "".join(part.capitalize() for part in cls.suite.split("-"))

    @classmethod
    def uses_feature_cache(cls, task_args: dict[str, Any]) -> bool:
        """Whether a run with these (resolved) task args reads the frozen pooled-feature cache."""
        rule = cls.reads_feature_cache
        if isinstance(rule, bool):
            return rule
        arg, value = rule
        return task_args.get(arg, value) == value

    @classmethod
    def data_parallel_refusal(cls, task_args: dict[str, Any]) -> str | None:
        """Why a run with these task args cannot run data-parallel, or None when it can."""
        if not cls.data_parallel:
            return "does not train on a data-parallel loop"
        defaults = {f.name: f.default for f in dataclasses.fields(cls.Args)}
        for (arg, value), why in cls.not_data_parallel.items():
            if str(task_args.get(arg, defaults.get(arg))) == value:
                return f"with {arg}={value} {why}"
        return None

    @classmethod
    def consumes(cls, spec: RunSpec) -> list[Consumes]:
        """The other runs whose results a run of this suite reads (none by default): a sweep orders it
        after them (bob/sweep/plan.py). `ood` with `mode=checkpoint` reads a finetune run."""
        return []

    @property
    def name(self) -> str:
        return f"{self.suite}/{self.dataset}"

    def meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "suite": self.suite,
            "dataset": self.dataset,
            "version": self.version,
            "main_metric": self.main_metric,
            "higher_is_better": self.higher_is_better,
        }

    def run(self, ctx: RunContext) -> TaskOutput:
        """The protocol: `run(task, ctx)` of the suite's `run.py`, imported here, on first use."""
        package = type(self).__module__
        protocol = importlib.import_module(f"{package}.run")
        return protocol.run(self, ctx)


# ------------------------------------------------------------------------------------- arg parsing


def _convert(name: str, raw: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw.lower() in ("none", "null", ""):
            return None
        return _convert(name, raw, options[0])
    if origin is tuple:
        inner = typing.get_args(annotation)[0]
        return tuple(_convert(name, part.strip(), inner) for part in raw.split(",") if part.strip())
    if annotation is bool:
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise UsageError(f"Task arg '{name}' takes true or false, got '{raw}'.")
    if annotation in (int, float):
        try:
            return annotation(raw)
        except ValueError:
            raise UsageError(
                f"Task arg '{name}' takes {'an integer' if annotation is int else 'a number'}, got '{raw}'."
            ) from None
    return raw


def parse_assignments(items: list[str] | tuple[str, ...], what: str = "--task-arg") -> dict[str, str]:
    """Split `k=v` strings; a malformed one is a usage error naming it."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"Malformed {what} '{item}': expected KEY=VALUE, e.g. {what} epochs=10.")
        if key in out:
            raise UsageError(f"{what} '{key}' is given twice.")
        out[key] = value.strip()
    return out


def parse_task_args(args_cls: type[TaskArgs], raw: dict[str, str], task_name: str) -> TaskArgs:
    """Build `args_cls` from string values, with did-you-mean for unknown keys and typed conversion."""
    hints = typing.get_type_hints(args_cls)
    fields = {f.name: f for f in dataclasses.fields(args_cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            listing = ", ".join(sorted(fields))
            raise UnknownNameError(
                f"task arg for {task_name}", key, suggest(key, fields, 3), f"Valid task args: {listing}."
            )
        values[key] = _convert(key, value, hints[key])
    args = args_cls(**values)
    args.validate()
    if args.limit is not None:
        check_limit(task_name)
    return args


def check_limit(task_name: str) -> None:
    """The `limit` task arg applies to the task's dataset type (`LIMIT_TASK_TYPES`), else a usage error."""
    dataset = task_name.partition("/")[2]
    task_type = dataset_info(dataset).task_type
    if task_type not in LIMIT_TASK_TYPES:
        raise UsageError(
            f"Task arg 'limit' does not apply to {task_name}: its dataset is a {task_type} set, whose "
            f"samples cannot be drawn one by one (limit applies to {', '.join(LIMIT_TASK_TYPES)} sets)."
        )


def describe_args(args_cls: type[TaskArgs]) -> list[tuple[str, str, str]]:
    """(name, default, help) for every task arg, for `bob ls tasks --args`."""
    return [(f.name, repr(f.default), f.metadata.get("help", "")) for f in dataclasses.fields(args_cls)]
