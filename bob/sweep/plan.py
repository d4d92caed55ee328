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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bob.backbones.catalog import BACKBONES, composite_inner, describe, is_factory_name
from bob.cache import canonical_json
from bob.data import DATASETS
from bob.spec import RunSpec
from bob.suites import task_class

if TYPE_CHECKING:
    from bob.sweep.expand import Expansion
    from bob.sweep.stats import PlanStats


def reads_feature_cache(spec: RunSpec) -> bool:
    """Whether the run reads the frozen pooled-feature cache: its suite says so (`Task.reads_feature_cache`);
    a run that trains gets its own pool slot."""
    return task_class(spec.task.partition("/")[0]).uses_feature_cache(spec.task_args)


def feature_datasets(dataset: str) -> list[str]:
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
    return [canonical_json({**base, "dataset": d}) for d in feature_datasets(spec.task.partition("/")[2])]


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


class Plan:
    """A sweep's runs grouped for execution, and its counts.

    Built by `make_plan` from specs (groups in hand), or by `bob.sweep.driver.plan_sweep` from a
    streamed expansion: then the counts come from `stats` (one pass, no specs held) and `groups` are
    built only when asked for (`bob sweep --dry-run` never asks)."""

    def __init__(
        self,
        groups: list[RunGroup] | None = None,
        extraction_count: int = 0,
        name: str = "",
        *,
        stats: PlanStats | None = None,
        expansion: Expansion | None = None,
        max_runs: int | None = None,
    ) -> None:
        if groups is None and expansion is None:
            raise ValueError("a Plan needs its groups or the expansion that streams its runs")
        self._groups = groups
        self.extraction_count = extraction_count
        self.name = name  # the sweep's name, from its file
        self.stats = stats
        self.expansion = expansion
        self.max_runs = max_runs  # the sweep file's own size limit, if it sets one

    @property
    def groups(self) -> list[RunGroup]:
        if self._groups is None:
            assert self.expansion is not None
            self._groups = make_plan(list(self.expansion.specs())).groups
        return self._groups

    @property
    def runs(self) -> int:
        return self.stats.runs if self.stats else sum(len(g.specs) for g in self.groups)

    @property
    def extractions(self) -> int:
        """Unique frozen-feature extractions (backbone × dataset × transform) the plan needs; each
        group extracts its splits once, a shift's shifted sets count as one more."""
        return self.stats.extractions if self.stats else self.extraction_count

    @property
    def training_runs(self) -> int:
        if self.stats:
            return self.stats.training_runs
        return sum(len(g.specs) for g in self.groups if not g.extracts)

    @property
    def group_count(self) -> int:
        return self.stats.groups if self.stats else len(self.groups)

    def specs(self) -> list[RunSpec]:
        """Every run, in plan order (training groups first, then the extraction groups)."""
        return [s for g in self.groups for s in g.specs]

    def iter_specs(self) -> Iterator[RunSpec]:
        """Every run, streamed in the sweep file's order when the plan was streamed (no groups built)."""
        if self._groups is None and self.expansion is not None:
            yield from self.expansion.specs()
        else:
            yield from self.specs()

    def breakdown(self) -> dict[str, Any]:
        """Counts by suite, backbone family and weights, for `bob sweep --dry-run`."""
        if self.stats:
            return {
                "suite": self.stats.by_suite,
                "family": self.stats.by_family,
                "weights": self.stats.by_weights,
            }
        families: dict[str, str] = {}
        for s in self.specs():
            if s.backbone not in families:
                families[s.backbone] = family_of(s.backbone)
        return {
            "suite": Counter(s.task.partition("/")[0] for s in self.specs()),
            "family": Counter(families[s.backbone] for s in self.specs()),
            "weights": Counter(s.weights for s in self.specs()),
        }


def family_of(backbone: str) -> str:
    """A backbone's family for the breakdown: `user` for a factory, else the catalog's or index's."""
    return "user" if is_factory_name(backbone) else (describe(backbone).get("family") or "unknown")


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


def is_own_backbone(name: str) -> bool:
    """A factory named in the sweep file, or one an installed package registers under the
    `bob.backbones` entry points (a composite of one counts: it is checked whole)."""
    inner = composite_inner(name) or name
    return is_factory_name(inner) or (inner in BACKBONES and "factory" in BACKBONES.get(inner).meta)


def own_backbones(plan: Plan) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, weights, backbone args) of every user backbone in the plan (`is_own_backbone`)."""
    if plan.stats is not None:
        return list(plan.stats.own)
    seen: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for spec in plan.specs():
        name = spec.backbone
        if is_own_backbone(name):
            key = json.dumps([name, spec.weights, spec.backbone_args], sort_keys=True, default=str)
            seen.setdefault(key, (name, spec.weights, dict(spec.backbone_args)))
    return list(seen.values())
