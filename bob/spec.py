"""RunSpec: what one run is, and its stable id.

A run is (backbone + weights + backbone args, task + task version + task args, seed). Task args are
stored fully resolved (defaults filled in), so `--task-arg epochs=30` and leaving the default give
the same run, and the id (sha256 of the canonical JSON) is stable across machines and invocations.
Args that cannot change results (a data root, `download`) are not part of the identity.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bob.backbones.catalog import BACKBONES, composite_inner, is_factory_name
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
        return hashlib.sha256(canonical_json(self.canonical()).encode()).hexdigest()[:ID_LENGTH]

    def to_dict(self) -> dict[str, Any]:
        return {**self.canonical(), "id": self.id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        keys = {"backbone", "task", "weights", "seed", "backbone_args", "task_args", "task_version"}
        return cls(**{k: v for k, v in d.items() if k in keys})

    @property
    def label(self) -> str:
        return f"{self.backbone} [{self.weights}] · {self.task} · seed {self.seed}"


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
        path = backbone.split(":", 1)[0]
        if path.endswith(".py") and not Path(path).expanduser().is_file():
            raise UsageError(f"Backbone file {path} does not exist (from --backbone {backbone}).")
    else:
        BACKBONES.get(backbone, live=True)  # the library is imported only for names missing from the index


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
    name = parse_task_name(task)
    cls = task_class(name.suite)
    args = parse_task_args(cls.Args, dict(task_args or {}), task)
    if seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {seed}.")
    return RunSpec(
        backbone=backbone,
        task=name.name,
        weights=request.label,
        seed=seed,
        backbone_args=dict(backbone_args or {}),
        task_args=args.identity(),
        task_version=cls.version,
        data_root=args.root,
        download=args.download,
    )
