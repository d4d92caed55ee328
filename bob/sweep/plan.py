"""The plan: extract once, fit many.

Runs whose task reads frozen pooled features from the cache (linear probe, kNN, retrieval, frozen
OOD, few-label linear) are grouped by what determines those features: (backbone, weights, backbone
args, init seed for random weights, dataset, eval transform). One worker runs a whole group in
order: the first run extracts each split once, the others hit the cache. Training runs (fine-tune,
detection, few-label fine-tune) go to the pool on their own. Planning imports no torch.

Dependencies: a run may read another run's result (an `ood/<shift>` run with `mode=checkpoint` scores
the classifier a `finetune/<in-dist>` run saved). Its suite says which through the optional classmethod
`consumes(spec) -> list[Consumes]` on its Task class: a run id, or a task whose run on the same
backbone, weights, backbone args and seed (with the given task args) it reads. When the provider is
in the same plan, the plan
puts the consumer's group after the provider's (`RunGroup.needs` holds the provider ids; the groups are
in an order where every provider comes first), and every executor waits for it: `local` runs the groups
in that order, `ray` hands the providers' task refs to the consumer's task, `slurm` submits one job
array per dependency level. A provider outside the plan (done earlier, or never in the sweep) is not
waited for: the consumer reads its result or fails with a message that names the run to start.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bob.backbones.catalog import BACKBONES, composite_inner, describe, is_factory_name
from bob.cache import canonical_json
from bob.data import DATASETS
from bob.errors import UsageError
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
    needs: set[str] = field(default_factory=set)  # ids of runs in other groups that must finish first

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

    def dependencies(self) -> list[Dependency]:
        """Every edge between a run and a run whose result it reads, for `bob sweep --dry-run`."""
        if self._groups is None and self.expansion is not None:
            return dependencies(_Restreamed(self.expansion))
        return dependencies(self.specs())

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


@dataclass(frozen=True)
class Consumes:
    """What a run reads, as its suite's `consumes(spec)` says: the run `run_id`, or else the runs of
    `task` on the consumer's backbone, weights, backbone args and seed whose task args have the values
    in `task_args` (None: the arg is absent, i.e. left at a default that stays out of the identity)."""

    task: str
    run_id: str | None = None
    task_args: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        if self.run_id:
            return f"run {self.run_id}"
        args = ", ".join(f"{k}={'default' if v is None else v}" for k, v in self.task_args)
        return f"{self.task} of the same backbone, weights and seed" + (f" ({args})" if args else "")


@dataclass(frozen=True)
class Dependency:
    """`consumer` reads the result of run `provider` (an id), described by `wanted`; `provider` is None
    when no run of the plan is it: then it must exist before the consumer runs."""

    consumer: RunSpec
    wanted: Consumes
    provider: str | None = None
    provider_label: str | None = None

    @property
    def in_plan(self) -> bool:
        return self.provider is not None

    def describe(self) -> str:
        if self.provider is None:
            return f"{self.consumer.label} ({self.consumer.id}) reads {self.wanted.describe()}: not in this sweep, it must exist already"
        return f"{self.consumer.label} ({self.consumer.id}) after {self.provider_label} ({self.provider})"


def consumed(spec: RunSpec) -> list[Consumes]:
    """What `spec` reads: its suite's `consumes(spec)`."""
    return list(task_class(spec.task.partition("/")[0]).consumes(spec))


def _model_key(spec: RunSpec, task: str) -> str:
    return canonical_json([task, spec.backbone, spec.weights, spec.backbone_args, spec.seed])


def _matches(provider: RunSpec, wanted: Consumes) -> bool:
    return all(provider.task_args.get(k) == v for k, v in wanted.task_args)


def dependencies(specs: Iterable[RunSpec]) -> list[Dependency]:
    """Every (consumer, provider) edge among `specs` (iterated twice; a plan streams them from its
    expansion): consumers first, then only the runs of the tasks they read are indexed."""
    wants = [(spec, want) for spec in specs for want in consumed(spec)]
    if not wants:
        return []
    tasks = {w.task for _, w in wants}
    by_id: dict[str, RunSpec] = {}
    by_model: dict[str, list[RunSpec]] = {}
    for spec in specs:
        if spec.task in tasks:
            by_id[spec.id] = spec
            by_model.setdefault(_model_key(spec, spec.task), []).append(spec)
    edges: list[Dependency] = []
    for spec, want in wants:
        if want.run_id is not None:
            found = [by_id[want.run_id]] if want.run_id in by_id else []
        else:
            found = [p for p in by_model.get(_model_key(spec, want.task), []) if _matches(p, want)]
        edges.extend(Dependency(spec, want, p.id, p.label) for p in found)
        if not found:
            edges.append(Dependency(spec, want))
    return edges


def order_groups(groups: list[RunGroup]) -> list[RunGroup]:
    """`groups` with every group after the groups holding the runs it needs, otherwise in the given
    order (Kahn's topological sort, the lowest original index first); a cycle is a UsageError naming
    its runs. `needs` is trimmed to the runs of other groups in the list."""
    home = {spec.id: i for i, g in enumerate(groups) for spec in g.specs}
    waits_for: list[set[int]] = []
    for i, g in enumerate(groups):
        g.needs = {r for r in g.needs if r in home and home[r] != i}
        waits_for.append({home[r] for r in g.needs})
    if not any(waits_for):
        return list(groups)
    unblocks: list[list[int]] = [[] for _ in groups]
    for i, providers in enumerate(waits_for):
        for j in providers:
            unblocks[j].append(i)
    left = [len(p) for p in waits_for]
    ready = [i for i, n in enumerate(left) if n == 0]
    heapq.heapify(ready)
    placed: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        placed.append(i)
        for k in unblocks[i]:
            left[k] -= 1
            if left[k] == 0:
                heapq.heappush(ready, k)
    if len(placed) < len(groups):
        stuck = ", ".join(groups[i].label for i, n in enumerate(left) if n)
        raise UsageError(f"the sweep's runs depend on each other in a cycle: {stuck[:500]}.")
    return [groups[i] for i in placed]


def dependency_levels(groups: list[RunGroup]) -> list[list[RunGroup]]:
    """`groups` (in `order_groups` order) as waves: each group one wave after its latest provider's."""
    home = {spec.id: i for i, g in enumerate(groups) for spec in g.specs}
    level: list[int] = []
    waves: list[list[RunGroup]] = []
    for i, g in enumerate(groups):
        providers = [home[r] for r in g.needs if r in home and home[r] < i]
        level.append(1 + max((level[j] for j in providers), default=-1))
        while len(waves) <= level[i]:
            waves.append([])
        waves[level[i]].append(g)
    return waves


def family_of(backbone: str) -> str:
    """A backbone's family for the breakdown: `user` for a factory, else the catalog's or index's."""
    return "user" if is_factory_name(backbone) else (describe(backbone).get("family") or "unknown")


class _Restreamed:
    """An expansion's specs as an iterable that streams them afresh on every pass."""

    def __init__(self, expansion: Expansion) -> None:
        self.expansion = expansion

    def __iter__(self) -> Iterator[RunSpec]:
        return iter(self.expansion.specs())


def make_plan(specs: list[RunSpec]) -> Plan:
    """Cache-reading runs grouped by extraction key (first-seen order); training runs one per group;
    a group that consumes another's runs placed after it (`order_groups`)."""
    groups: dict[str, RunGroup] = {}
    ordered: list[RunGroup] = []
    unique: set[str] = set()
    for spec in specs:
        if reads_feature_cache(spec):
            keys = extraction_keys(spec)
            unique.update(keys)
            key = keys[0]
        else:
            key = f"run:{spec.id}"
        if key not in groups:
            groups[key] = RunGroup(key, extracts=not key.startswith("run:"))
            ordered.append(groups[key])
        groups[key].specs.append(spec)
    home = {spec.id: group for group in ordered for spec in group.specs}
    for edge in dependencies(specs):
        if edge.provider is not None:
            home[edge.consumer.id].needs.add(edge.provider)
    # Training groups first: they are the longest, so starting them early shortens the sweep's tail.
    ordered.sort(key=lambda g: g.extracts)
    return Plan(order_groups(ordered), len(unique))


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
