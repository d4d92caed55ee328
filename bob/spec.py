"""RunSpec: what one run is, and its stable id.

A run is (backbone + weights + backbone args, task + task version + task args, seed). Task args are
stored fully resolved (defaults filled in), so `--task-arg epochs=30` and leaving the default give
the same run, and the id (sha256 of the canonical JSON) is stable across machines and invocations.
Args that cannot change results (a data root, `download`) are not part of the identity.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bob.backbones.catalog import BACKBONES, FACTORY, composite_inner, is_factory_name
from bob.cache import canonical_json
from bob.errors import UsageError
from bob.suites import parse_task_name, task_class
from bob.task import parse_task_args
from bob.weights import WeightsRequest

ID_LENGTH = 16


@dataclass(frozen=True)
class RunSpec:
    backbone: str
    task: str
    weights: str = "pretrained"
    seed: int = 0
    backbone_args: dict[str, Any] = field(default_factory=dict)
    task_args: dict[str, Any] = field(default_factory=dict)
    task_version: str = ""
    # Where a real dataset lives / whether to fetch it: used by the run, excluded from the id.
    data_root: str | None = field(default=None, compare=False)
    download: bool = field(default=False, compare=False)

    def canonical(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("data_root")
        d.pop("download")
        return d

    @property
    def id(self) -> str:
        # Computed once per spec (a sweep's survey, paths and reports ask many times); the spec is
        # frozen, so the value cannot go stale.
        cached = self.__dict__.get("_id")
        if cached is None:
            cached = hashlib.sha256(canonical_json(self.canonical()).encode()).hexdigest()[:ID_LENGTH]
            object.__setattr__(self, "_id", cached)
        return cached

    def to_dict(self) -> dict[str, Any]:
        return {**self.canonical(), "id": self.id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        keys = {"backbone", "task", "weights", "seed", "backbone_args", "task_args", "task_version"}
        return cls(**{k: v for k, v in d.items() if k in keys})

    @property
    def task_label(self) -> str:
        """The task as tables show it: `linear-probe/cifar100 (limit 500)` for a quick run."""
        limit = self.task_args.get("limit")
        return self.task if limit is None else f"{self.task} (limit {limit})"

    @property
    def label(self) -> str:
        return f"{self.backbone} [{self.weights}] · {self.task_label} · seed {self.seed}"


def slug(text: str, max_len: int = 80) -> str:
    """A filesystem-safe rendering of a name: `torchvision/mobilenet_v2` -> `torchvision--mobilenet_v2`."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("/", "--")).strip("-.")
    return out[:max_len] or "unnamed"


def parse_backbone_args(raw: dict[str, str]) -> dict[str, Any]:
    """`--backbone-arg` values as JSON scalars where they parse (`0.1`, `true`, `[1,2]`), else strings."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def validate_backbone_name(backbone: str) -> None:
    """Check a backbone name without building anything (`composite(X)` checks X)."""
    inner = composite_inner(backbone)
    if inner is not None:
        if composite_inner(inner) is not None:
            raise UsageError(
                f"{backbone}: composites of composites are not supported; compose a plain backbone."
            )
        validate_backbone_name(inner)
    elif is_factory_name(backbone):
        check_factory_source(backbone)
    else:
        BACKBONES.get(backbone, live=True)  # the library is imported only for names missing from the index


@dataclass(frozen=True)
class SpecTemplate:
    """Everything of a RunSpec but backbone, weights and seed: one task with resolved args, checked
    once. A sweep builds one per (task, arg combination) and stamps out its runs with `spec` and
    `run_id`, so a million-run grid parses each arg set once instead of a million times."""

    task: str
    task_args: dict[str, Any]
    task_version: str
    backbone_args: dict[str, Any]
    data_root: str | None
    download: bool
    # The canonical JSON of each part, in the order `canonical_json` sorts the spec's keys.
    parts: tuple[str, str, str, str] = field(default=("", "", "", ""), compare=False)

    @property
    def suite(self) -> str:
        return self.task.partition("/")[0]

    def spec(self, backbone: str, weights: str, seed: int) -> RunSpec:
        """The run of this template on a (validated) backbone name, weights label and seed."""
        return RunSpec(
            backbone=backbone,
            task=self.task,
            weights=weights,
            seed=seed,
            backbone_args=dict(self.backbone_args),
            task_args=dict(self.task_args),
            task_version=self.task_version,
            data_root=self.data_root,
            download=self.download,
        )

    def run_id(self, backbone: str, weights: str, seed: int) -> str:
        """`self.spec(backbone, weights, seed).id` without building the spec: the canonical JSON is
        assembled from the parts serialised once (tests/test_sweep_scale.py holds them equal)."""
        bargs, task, targs, version = self.parts
        text = (
            f'{{"backbone":{json.dumps(backbone)},"backbone_args":{bargs},"seed":{int(seed)},'
            f'"task":{task},"task_args":{targs},"task_version":{version},"weights":{json.dumps(weights)}}}'
        )
        return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


def spec_template(
    task: str, task_args: dict[str, str] | None = None, backbone_args: dict[str, Any] | None = None
) -> SpecTemplate:
    """Validate a task name and its args (typed, defaults filled in) without importing torch."""
    name = parse_task_name(task)
    cls = task_class(name.suite)
    args = parse_task_args(cls.Args, dict(task_args or {}), task)
    identity, bargs = args.identity(), dict(backbone_args or {})
    parts = (canonical_json(bargs), json.dumps(name.name), canonical_json(identity), json.dumps(cls.version))
    return SpecTemplate(name.name, identity, cls.version, bargs, args.root, args.download, parts)


def check_factory_source(name: str) -> None:
    """A `file.py:fn` or `module:fn` backbone names a file or module that exists and defines `fn`,
    read without running it (`ast`), so a typo is a usage error before any run, never a failed
    result. Modules that build names at import time (`__getattr__`, `import *`) are left to the run."""
    match = FACTORY.match(name)
    if match is None:
        return
    module_part, attr = match["module"], match["attr"]
    if module_part.endswith(".py"):
        source = Path(module_part).expanduser()
        if not source.is_file():
            raise UsageError(f"Backbone file {source} does not exist (from --backbone {name}).")
    else:
        try:
            found = importlib.util.find_spec(module_part)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise UsageError(
                f"Backbone module '{module_part}' cannot be found (from --backbone {name}): no such module "
                "on the Python path. Install its package, or name a file: path/to/file.py:function."
            )
        if not found.origin or not found.origin.endswith(".py"):
            return
        source = Path(found.origin)
    defined = _top_level_names(source, name)
    if defined is not None and attr not in defined:
        shown = ", ".join(sorted(n for n in defined if not n.startswith("_"))) or "none"
        raise UsageError(
            f"{module_part} has no callable '{attr}' (from --backbone {name}). Defined there: {shown}."
        )


def _top_level_names(source: Path, name: str) -> set[str] | None:
    """Names a module may define at its top level (a definition under `if`/`try`/`with` counts);
    None when they cannot be read off its source (`import *`, a module `__getattr__`)."""
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except SyntaxError as err:
        raise UsageError(
            f"Backbone file {source} is not valid Python (line {err.lineno}: {err.msg}); from --backbone {name}."
        ) from None
    except (OSError, ValueError):
        return None
    names: set[str] = set()
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return None
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", node)]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, (ast.Name,)))
        for block in ("body", "orelse", "finalbody", "handlers"):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                pending.extend(getattr(node, block, []) or [])
    return None if "__getattr__" in names else names


def make_spec(
    backbone: str,
    task: str,
    weights: str = "pretrained",
    seed: int = 0,
    backbone_args: dict[str, Any] | None = None,
    task_args: dict[str, str] | None = None,
) -> RunSpec:
    """Validate names and args (without importing torch) and return the canonical spec."""
    validate_backbone_name(backbone)
    request = WeightsRequest.parse(weights)
    template = spec_template(task, task_args, backbone_args)
    if seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {seed}.")
    return template.spec(backbone, request.label, seed)
