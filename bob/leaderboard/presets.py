"""Leaderboard presets: a named aggregation that regroups the long table before it is scored.

A preset says which task *type* each task counts for (the board then averages per type where it
would average per suite), which task args collapse to their best value in which suite, which
further metrics of a run are scored as settings of their own beside the main one, and, in words,
every choice it makes that its source does not state. Runs of suites the preset does not cover are
left off the board, and the board says how many.

`bob`: Battle of the Backbones' ranking as far as it can be reconstructed. BoB published no
aggregation code (its repositories hold none) and the paper's exact hierarchy is not public; the
choices below are bob's reading, and `BOB.choices` names each one on the page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from bob.errors import UsageError


@dataclass(frozen=True)
class TaskType:
    """One weight on the board. A task counts here when it is named in `tasks`, or when its suite is
    in `suites` and no type names the task itself."""

    name: str
    suites: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExtraMetric:
    """A further metric of the runs of `task_type` scored as a setting of its own (when a run has it)."""

    task_type: str
    metric: str
    higher_is_better: bool
    why_no_interval: str


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    task_types: tuple[TaskType, ...]
    best_of: tuple[tuple[str, tuple[str, ...]], ...]  # (suite, task args taken at their best)
    extra_metrics: tuple[ExtraMetric, ...]
    choices: tuple[str, ...]  # every reconstructed choice, as printed on the page
    # Where a task has runs with this `protocol` task arg, its runs under any other protocol are left off.
    protocol: str | None = None

    def type_of(self, task: str) -> str | None:
        """The task type `task` (`suite/dataset`) counts for, or None when the preset leaves it off."""
        for kind in self.task_types:
            if task in kind.tasks:
                return kind.name
        suite = task.partition("/")[0]
        for kind in self.task_types:
            if suite in kind.suites:
                return kind.name
        return None

    def best_of_for(self, suite: str) -> tuple[str, ...]:
        return next((args for s, args in self.best_of if s == suite), ())


@dataclass
class Regrouped:
    runs: pd.DataFrame
    failed: pd.DataFrame
    notes: list[str]


DERIVED_MARK = "#"  # a derived row's id: `<run id>#<metric>`


def _typed(frame: pd.DataFrame, preset: Preset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rows the preset keeps, with `suite` set to their task type and the suite kept in
    `source_suite`; the rows it leaves off)."""
    kinds = frame["task"].map(preset.type_of)
    kept = frame[kinds.notna()].copy()
    kept["source_suite"] = kept["suite"]
    kept["suite"] = kinds[kinds.notna()]
    return kept, frame[kinds.isna()]


def _derived(runs: pd.DataFrame, extra: ExtraMetric) -> pd.DataFrame:
    """One row per run of `extra.task_type` whose result has `extra.metric`: the same run scored on
    that metric (its own id, so the run lists and intervals keep the two apart)."""
    column = f"metric:{extra.metric}"
    if column not in runs.columns:
        return runs.iloc[0:0]
    has = (runs["suite"] == extra.task_type) & runs[column].notna() & (runs["main_metric"] != extra.metric)
    rows = runs[has].copy()
    rows["id"] = rows["id"] + DERIVED_MARK + extra.metric
    rows["main_metric"] = extra.metric
    rows["higher_is_better"] = extra.higher_is_better
    rows["value"] = rows[column].astype(float)
    if "samples_record" in rows.columns:  # the loader's copy of `protocol.samples` (load.py)
        rows["samples_record"] = pd.Series(
            [{"derived": extra.why_no_interval} for _ in range(len(rows))], index=rows.index, dtype=object
        )
    return rows


def _protocol_of(task_args: str) -> str:
    return str(json.loads(task_args).get("protocol") or "default")


def _other_protocols(
    preset: Preset, runs: pd.DataFrame, failed: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Leave off the runs of a task under another protocol where the task has runs under the preset's."""
    if preset.protocol is None:
        return runs, failed, 0
    both = pd.concat([runs[["task", "task_args"]], failed[["task", "task_args"]]])
    protocols = both["task_args"].map(_protocol_of)
    tasks = set(both.loc[protocols == preset.protocol, "task"])

    def keep(frame: pd.DataFrame) -> pd.Series:
        return ~frame["task"].isin(tasks) | (frame["task_args"].map(_protocol_of) == preset.protocol)

    keep_runs, keep_failed = keep(runs), keep(failed)
    dropped = int((~keep_runs).sum() + (~keep_failed).sum())
    return runs[keep_runs], failed[keep_failed], dropped


def regroup(preset: Preset, runs: pd.DataFrame, failed: pd.DataFrame) -> Regrouped:
    """The long tables as the preset scores them, and what it left off, in words."""
    kept, off = _typed(runs, preset)
    kept_failed, off_failed = _typed(failed, preset)
    kept, kept_failed, other = _other_protocols(preset, kept, kept_failed)
    extra = [_derived(kept, e) for e in preset.extra_metrics]
    notes = []
    if other:
        notes.append(
            f"left off (not protocol={preset.protocol}): {other} run(s) of tasks that also have "
            f"protocol={preset.protocol} runs"
        )
    left = pd.concat([off, off_failed])
    if len(left):
        counts = left.groupby("suite").size().sort_index()
        listed = ", ".join(f"{suite} ({n})" for suite, n in counts.items())
        notes.append(f"left off (not a task BoB ran): {len(left)} run(s) of {listed}")
    for e, rows in zip(preset.extra_metrics, extra, strict=True):
        if len(rows):
            notes.append(f"{e.metric} of {len(rows)} {e.task_type} run(s) scored beside their main metric")
    return Regrouped(pd.concat([kept, *extra], ignore_index=True), kept_failed.reset_index(drop=True), notes)


def task_args_best_of(task: str, preset: Preset | None, best_of: tuple[str, ...]) -> tuple[str, ...]:
    """The task args collapsed to their best for `task`: the board's own plus the preset's."""
    extra = preset.best_of_for(task.partition("/")[0]) if preset else ()
    return tuple(dict.fromkeys([*best_of, *extra]))


BOB = Preset(
    name="bob",
    summary="Battle of the Backbones' ranking, reconstructed: four task types of equal weight "
    "(classification, detection, OOD, retrieval), detection's learning rates collapsed to their best, "
    "mask AP beside box AP, Sim10k → Cityscapes under OOD.",
    task_types=(
        TaskType("classification", suites=("finetune", "linear-probe", "few-label")),
        TaskType("detection", suites=("detection",)),
        # Sim10k → Cityscapes is BoB's OOD detection; scenes-shifted is its stand-in in the smoke grid.
        TaskType("ood", suites=("ood",), tasks=("detection/sim10k-cityscapes", "detection/scenes-shifted")),
        TaskType("retrieval", suites=("retrieval",)),
    ),
    best_of=(("detection", ("lr",)),),
    extra_metrics=(
        ExtraMetric(
            "detection",
            "mask_ap",
            True,
            "mask AP is read from the result; the per-sample file holds box AP's matches only",
        ),
    ),
    choices=(
        "Task types: classification = finetune, linear-probe and few-label; detection = the detection "
        "suite; OOD = the ood suite plus Sim10k → Cityscapes detection (detection/sim10k-cityscapes, and "
        "detection/scenes-shifted, its embedded stand-in); retrieval = the retrieval suite. Every other "
        "suite is left off (BoB did not run it), and the board says how many runs that was.",
        "Overall = mean of the four task-type scores (one weight per type); a type's score = mean z over "
        "its settings (each setting weighs the same inside its type). BoB states neither; this is the "
        "reading of 'z-scores per setting, averaged within and across tasks'.",
        "Detection learning rates: each backbone keeps its best seed-mean over lr per setting (BoB ran "
        "{8e-5, 1e-4, 2e-4, 3e-4} and ranks by the best); frozen and fine-tuned stay separate settings.",
        "Mask AP is a setting of its own beside box AP wherever a detection run reports it, and takes "
        "its own best lr (not box AP's). Sim10k → Cityscapes is box AP only, as in BoB.",
        "BoB's protocol first: where a task has runs with protocol=bob, only those count (its runs under "
        "bob's default protocol are left off and counted); a task run only under the default protocol is "
        "scored as it is.",
        "z-scores, their reference (pretrained backbones only; random-init baselines are scored but do not "
        "move μ and σ) and the minimum number of backbones are the default board's.",
    ),
    protocol="bob",
)

PRESETS = {p.name: p for p in (BOB,)}


def get_preset(name: str | None) -> Preset | None:
    """The preset called `name` ("" or None: no preset); an unknown name is a usage error."""
    if not name:
        return None
    if name not in PRESETS:
        raise UsageError(f"Unknown leaderboard preset {name!r}; known: {', '.join(sorted(PRESETS))}.")
    return PRESETS[name]


def describe(preset: Preset) -> str:
    """One line naming the preset and its task types, for the convention string."""
    kinds = "; ".join(f"{k.name} = {', '.join([*k.suites, *k.tasks])}" for k in preset.task_types)
    return f"preset {preset.name}: {kinds}"


__all__ = ["BOB", "PRESETS", "Preset", "Regrouped", "TaskType", "get_preset", "regroup"]
