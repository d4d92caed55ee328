"""A sweep's counts in one streamed pass: runs, extractions, plan groups, the breakdowns, its own
backbones and every duplicate run, without holding a single RunSpec.

This is what makes `bob sweep --dry-run` of a 10^6-run file take seconds and a few tens of MB
(docs/sweeps.md has the measurement): per run it assembles the run id from parts serialised once
(`SpecTemplate.run_id`), keeps 8 bytes of it (duplicates are found by sorting those, and named in a
second pass only when there are any), and updates counters keyed by small tuples. The counts are
those `make_plan` would give on the materialised specs (tests/test_sweep_scale.py checks it).
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bob.suites import task_class
from bob.sweep.expand import Combo, Expansion, duplicate_message, no_runs_message
from bob.sweep.plan import family_of, feature_datasets, is_own_backbone


@dataclass
class PlanStats:
    runs: int = 0
    extractions: int = 0
    training_runs: int = 0
    groups: int = 0
    by_suite: Counter = field(default_factory=Counter)
    by_family: Counter = field(default_factory=Counter)
    by_weights: Counter = field(default_factory=Counter)
    own: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    # Each unique extraction as (backbone, weights, backbone args JSON, init seed or None, image_size
    # task arg, dataset): what `bob.sweep.geometry` groups by eval geometry.
    extraction_keys: set[tuple] = field(default_factory=set)


class _Counter:
    """The running state of one pass."""

    def __init__(self) -> None:
        self.stats = PlanStats()
        self.ids = array("Q")
        self.extraction_keys: set[tuple] = set()
        self.group_keys: set[tuple] = set()
        self.family: dict[str, str] = {}
        self.own: dict[tuple[str, str, str], tuple[str, str, dict[str, Any]]] = {}

    def combo(self, combo: Combo) -> None:
        t = combo.template
        reads_cache = task_class(t.suite).uses_feature_cache(t.task_args)
        datasets = feature_datasets(t.task.partition("/")[2]) if reads_cache else []
        bargs, size = t.parts[0], t.task_args.get("image_size")
        run_id, ids, family = t.run_id, self.ids, self.family
        by_family, by_weights = self.stats.by_family, self.stats.by_weights
        n = 0
        for backbone, weights, seed in combo.runs():
            ids.append(int(run_id(backbone, weights, seed), 16))
            n += 1
            if backbone not in family:
                family[backbone] = family_of(backbone)
            by_family[family[backbone]] += 1
            by_weights[weights] += 1
            if reads_cache:
                base = (backbone, weights, bargs, seed if weights == "random" else None, size)
                self.group_keys.add((*base, datasets[0]))
                self.extraction_keys.update((*base, d) for d in datasets)
        self.stats.runs += n
        self.stats.by_suite[t.suite] += n
        if not reads_cache:
            self.stats.training_runs += n
        self._own(combo)

    def _own(self, combo: Combo) -> None:
        for backbone in combo.backbones:
            if not is_own_backbone(backbone):
                continue
            for weights in combo.weights:
                if combo.excluded.get((backbone, weights), ()) is None:
                    continue  # every seed of the pair is excluded
                key = (backbone, weights, combo.template.parts[0])
                self.own.setdefault(key, (backbone, weights, json.loads(key[2])))

    def finish(self) -> PlanStats:
        self.stats.extractions = len(self.extraction_keys)
        self.stats.extraction_keys = self.extraction_keys
        self.stats.groups = len(self.group_keys) + self.stats.training_runs
        self.stats.own = list(self.own.values())
        return self.stats


def duplicate_ids(ids: array) -> set[int]:
    """The 64-bit id prefixes that occur more than once (sorted, compared with their neighbours)."""
    if len(ids) < 2:
        return set()
    arr = np.sort(np.frombuffer(ids, dtype=np.uint64))
    return {int(x) for x in np.unique(arr[1:][arr[1:] == arr[:-1]])}


def _duplicate_problems(expansion: Expansion, dups: set[int]) -> list[str]:
    """A second pass that names both places asking for each duplicated run."""
    first: dict[int, str] = {}
    problems = []
    for combo, backbone, weights, seed in expansion.runs():
        key = int(combo.template.run_id(backbone, weights, seed), 16)
        if key not in dups:
            continue
        if key in first:
            spec = combo.template.spec(backbone, weights, seed)
            problems.append(duplicate_message(expansion.sweep.source, spec, first[key], combo.origin))
        else:
            first[key] = combo.origin
    return problems


def collect_stats(expansion: Expansion) -> PlanStats:
    """Count the sweep in one pass; raise every problem of the file (schema, names, args, duplicate
    runs, a sweep that expands to nothing) as one SweepSpecError."""
    counter = _Counter()
    for combo in expansion.combos:
        counter.combo(combo)
    dups = duplicate_ids(counter.ids)
    if dups:
        expansion.problems += _duplicate_problems(expansion, dups)
    if counter.stats.runs == 0 and not expansion.problems:
        expansion.problems.append(no_runs_message(expansion.sweep.source))
    expansion.check()
    return counter.finish()
