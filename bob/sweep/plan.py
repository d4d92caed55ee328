"""The plan: extract once, fit many.

Runs whose task reads frozen pooled features from the cache (linear probe, kNN, retrieval, frozen
OOD, few-label linear) are grouped by what determines those features: (backbone, weights, backbone
args, init seed for random weights, dataset, eval transform). One worker runs a whole group in
order: the first run extracts each split once, the others hit the cache. Training runs (fine-tune,
detection, few-label fine-tune) go to the pool on their own. Planning imports no torch.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bob.backbones.catalog import BACKBONES, composite_inner, describe, is_factory_name
from bob.cache import canonical_json
from bob.data import DATASETS
from bob.spec import RunSpec
from bob.suites import task_class


def reads_feature_cache(spec: RunSpec) -> bool:
    """Whether the run reads the frozen pooled-feature cache: its suite says so (`Task.reads_feature_cache`);
    a run that trains gets its own pool slot."""
    return task_class(spec.task.partition("/")[0]).uses_feature_cache(spec.task_args)


def _feature_datasets(dataset: str) -> list[str]:
    """The datasets whose features a run on `dataset` reads. A distribution shift (`ood/imagenet-r`)
    trains on its in-distribution dataset's train split, the features a linear probe on that
    dataset extracts too, and adds its own shifted sets."""
    options = (DATASETS.get(dataset).meta.get("options") or {}) if dataset in DATASETS else {}
    in_dist = options.get("in_dist")
    return [in_dist, f"{dataset} (shifted sets)"] if in_dist else [dataset]


def extraction_keys(spec: RunSpec) -> list[str]:
    """What fixes a run's frozen features, one key per dataset it extracts: everything but the head's
    protocol and, for pretrained weights, the seed (a random init depends on it)."""
    base = {
        "backbone": spec.backbone,
        "weights": spec.weights,
        "backbone_args": spec.backbone_args,
        "init_seed": spec.seed if spec.weights == "random" else None,
        "image_size": spec.task_args.get("image_size"),
    }
    return [canonical_json({**base, "dataset": d}) for d in _feature_datasets(spec.task.partition("/")[2])]


def extraction_key(spec: RunSpec) -> str:
    """The key a run is grouped by: its first (training-set) extraction."""
    return extraction_keys(spec)[0]


@dataclass
class RunGroup:
    """Runs one worker executes in order; `extracts` says whether the group shares one extraction."""

    key: str
    specs: list[RunSpec] = field(default_factory=list)
    extracts: bool = False

    @property
    def label(self) -> str:
        first = self.specs[0]
        dataset = first.task.partition("/")[2]
        if self.extracts:
            return f"{first.backbone} [{first.weights}] · {dataset} · {len(self.specs)} runs"
        return first.label


@dataclass
class Plan:
    groups: list[RunGroup]
    extraction_count: int = 0
    name: str = ""  # the sweep's name, from its file

    @property
    def runs(self) -> int:
        return sum(len(g.specs) for g in self.groups)

    @property
    def extractions(self) -> int:
        """Unique frozen-feature extractions (backbone × dataset × transform) the plan needs; each
        group extracts its splits once, a shift's shifted sets count as one more."""
        return self.extraction_count

    @property
    def training_runs(self) -> int:
        return sum(len(g.specs) for g in self.groups if not g.extracts)

    def specs(self) -> list[RunSpec]:
        return [s for g in self.groups for s in g.specs]

    def breakdown(self) -> dict[str, Any]:
        """Counts by suite, backbone family and weights, for `bob sweep --dry-run`."""
        families: dict[str, str] = {}
        for s in self.specs():
            if s.backbone not in families:
                families[s.backbone] = (
                    "user"
                    if is_factory_name(s.backbone)
                    else (describe(s.backbone).get("family") or "unknown")
                )
        return {
            "suite": Counter(s.task.partition("/")[0] for s in self.specs()),
            "family": Counter(families[s.backbone] for s in self.specs()),
            "weights": Counter(s.weights for s in self.specs()),
        }


def make_plan(specs: list[RunSpec]) -> Plan:
    """Cache-reading runs grouped by extraction key (first-seen order); training runs one per group."""
    groups: dict[str, RunGroup] = {}
    ordered: list[RunGroup] = []
    unique: set[str] = set()
    for spec in specs:
        if reads_feature_cache(spec):
            keys = extraction_keys(spec)
            unique.update(keys)
            key = keys[0]
            if key not in groups:
                groups[key] = RunGroup(key, extracts=True)
                ordered.append(groups[key])
            groups[key].specs.append(spec)
        else:
            ordered.append(RunGroup(f"run:{spec.id}", [spec], extracts=False))
    # Training groups first: they are the longest, so starting them early shortens the sweep's tail.
    ordered.sort(key=lambda g: g.extracts)
    return Plan(ordered, len(unique))


def own_backbones(plan: Plan) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, weights, backbone args) of every user backbone in the plan: a factory named in the
    sweep file, or one an installed package registers under the `bob.backbones` entry points."""
    seen: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for spec in plan.specs():
        name = spec.backbone
        inner = composite_inner(name) or name  # a composite of a user backbone is checked whole
        own = is_factory_name(inner) or (inner in BACKBONES and "factory" in BACKBONES.get(inner).meta)
        if own:
            key = json.dumps([name, spec.weights, spec.backbone_args], sort_keys=True, default=str)
            seen.setdefault(key, (name, spec.weights, dict(spec.backbone_args)))
    return list(seen.values())
