"""Which runs a `bob run` names: globs, comma lists and suite names in `-b` and `-t`, expanded
against the registries, and `NAME@WEIGHTS` backbones that pin their own weights.

    -b 'torchvision/mobilenet_v3*'        every catalog / index name the glob matches
    -b timm/resnet18,timm/resnet50        a comma list (commas inside `composite(...)` stay)
    -b mine.py:build@random               this backbone with these weights only (`-w` is for the rest)
    -t knn                                every task of the suite (a bare suite name)
    -t 'knn/*' / -t knn/a,linear-probe/a  a glob / a comma list

Exact names pass through untouched (they are validated by `bob.spec.make_spec`, as before), so a
grid of exact names costs no more than it did. A user factory (`file.py:fn`, `module:fn`), a path
and `composite(...)` are never glob-expanded. A pattern that matches nothing is an
`UnknownNameError` with the closest names. A pattern expands to the tasks whose data is on disk
(or generated); a real dataset that is not under its data root is left out and named in the
expansion's note, while a real dataset named exactly is checked by `require_datasets` and refused
with one line before any run starts.

`@WEIGHTS`: the text after the last `@` of a backbone is its weights (`pretrained`, `random` or a
checkpoint path) when the name before it is not empty. No registry name holds an `@` (the shipped
timm, torchvision and open_clip indexes have none); a factory whose file path holds one
(`runs@2/net.py:build`) keeps it whole when that file exists.

Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bob.backbones.catalog import BACKBONES, FACTORY, composite_inner, is_factory_name
from bob.data import DATASETS, default_data_root
from bob.data.real import LAYOUTS
from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.suites import SUITES, task_names
from bob.weights import WeightsRequest

GLOB_CHARS = frozenset("*?[")
# A grid that a pattern expanded to more runs than this needs `--yes` (`yes=True`): `-b 'timm/*'`
# is thousands of backbones, never what a first `bob run` means.
MAX_RUNS = 50
SHOWN = 6  # names an expansion's note lists before "…"
WEIGHTS_WORDS = ("pretrained", "random")


def split_items(values: Iterable[str]) -> list[str]:
    """Every comma list split into its items (empty items dropped); commas inside parentheses
    (`composite(a,b)`) do not split."""
    items: list[str] = []
    for value in values:
        depth, start = 0, 0
        for i, char in enumerate(value):
            depth += (char == "(") - (char == ")")
            if char == "," and depth == 0:
                items.append(value[start:i])
                start = i + 1
        items.append(value[start:])
    return [item.strip() for item in items if item.strip()]


def is_pattern(name: str) -> bool:
    """A glob (`*`, `?`, `[`), for names that can be globbed (not factories, paths or composites)."""
    return any(c in GLOB_CHARS for c in name) and not _never_globbed(name)


def _never_globbed(name: str) -> bool:
    return is_factory_name(name) or composite_inner(name) is not None or name.startswith((".", "/", "~"))


def split_weights(item: str) -> tuple[str, str | None]:
    """`NAME@WEIGHTS` -> (NAME, WEIGHTS); a name without a weights suffix -> (name, None)."""
    name, sep, weights = item.rpartition("@")
    if not sep or not name or not weights:
        return item, None
    if weights not in WEIGHTS_WORDS and is_factory_name(item):
        match = FACTORY.match(item)
        if match is not None and Path(match["module"]).expanduser().is_file():
            return item, None  # an '@' inside the factory's file path
    return name, weights


@dataclass(frozen=True)
class Expansion:
    """What one pattern of `-b` or `-t` became, for the note `bob run` prints."""

    flag: str  # "-b" or "-t"
    pattern: str
    names: tuple[str, ...]
    noun: str  # "backbone" or "task"
    left_out: tuple[str, ...] = ()  # tasks left out: their real dataset is not on disk

    def describe(self) -> str:
        """`-t knn → knn/a, knn/b (2 tasks)`, and the tasks left out for want of data."""
        shown = ", ".join(self.names[:SHOWN]) + (", …" if len(self.names) > SHOWN else "")
        plural = "" if len(self.names) == 1 else "s"
        text = f"{self.flag} {self.pattern} → {shown} ({len(self.names)} {self.noun}{plural})"
        if self.left_out:
            gone = ", ".join(self.left_out[:SHOWN]) + (", …" if len(self.left_out) > SHOWN else "")
            text += f"; left out, data not on disk: {gone}"
        return text


@dataclass(frozen=True)
class Selection:
    """The backbones (each with the weights its `@` suffix pins, or None) and tasks of a grid."""

    backbones: tuple[tuple[str, str | None], ...]
    tasks: tuple[str, ...]
    expansions: tuple[Expansion, ...] = field(default=())

    def pairs(self, weights: Sequence[str]) -> list[tuple[str, str]]:
        """(backbone, weights): a pinned backbone once, every other one with each of `weights`."""
        out: list[tuple[str, str]] = []
        for name, pinned in self.backbones:
            out.extend([(name, pinned)] if pinned is not None else [(name, w) for w in weights])
        return list(dict.fromkeys(out))

    def runs(self, weights: Sequence[str], seeds: Sequence[int]) -> int:
        return len(self.pairs(weights)) * len(self.tasks) * len(seeds)

    def notes(self) -> list[str]:
        return [e.describe() for e in self.expansions]


def expand_backbone(pattern: str) -> list[str]:
    """The registry names a backbone glob matches (curated entries, entry points, library indexes)."""
    names = BACKBONES.names(pattern)
    if not names:
        raise UnknownNameError(
            "backbone pattern",
            pattern,
            suggest(_stem(pattern), BACKBONES.names()),
            "It matches no backbone. List them with `bob ls backbones PATTERN`.",
        )
    return names


def expand_task(item: str) -> list[str] | None:
    """A suite name's or a task glob's tasks; None for an exact task name (left to `make_spec`)."""
    if not is_pattern(item):
        return task_names(f"{item}/*") if item in SUITES else None
    names = task_names(item)
    if not names:
        suite = item.partition("/")[0]
        near = suggest(_stem(item), task_names())
        if "/" in item and not is_pattern(suite) and suite not in SUITES:
            near = [f"{s}/*" for s in suggest(suite, SUITES.names())] + near
        raise UnknownNameError(
            "task pattern", item, near[:5], "It matches no task. List them with `bob ls tasks PATTERN`."
        )
    return names


def select(
    backbones: Sequence[str],
    tasks: Sequence[str],
    task_present: Callable[[str], bool] = lambda task: True,
) -> Selection:
    """Expand `-b` and `-t` values into the grid's backbones and tasks, in the order given, each once.
    `task_present(task)` says whether a task's data is on disk: an expanded task without it is left
    out (and named in the note); exact names are kept for `require_datasets` to judge."""
    picked: dict[tuple[str, str | None], None] = {}
    expansions: list[Expansion] = []
    for item in split_items(backbones):
        name, pinned = split_weights(item)
        if pinned is not None:
            _check_pinned(name, pinned)
        if is_pattern(name):
            found = expand_backbone(name)
            expansions.append(Expansion("-b", item, tuple(found), "backbone"))
            picked.update(((n, pinned), None) for n in found)
        else:
            picked[(name, pinned)] = None
    task_list: dict[str, None] = {}
    for item in split_items(tasks):
        found = expand_task(item)
        if found is None:
            task_list[item] = None
            continue
        kept = [t for t in found if task_present(t)]
        gone = tuple(t for t in found if t not in kept)
        if not kept:
            raise UsageError(
                f"-t {item} matches only tasks whose data is not on disk ({', '.join(gone[:SHOWN])}"
                f"{', …' if len(gone) > SHOWN else ''}): name one to see where bob looked for it."
            )
        expansions.append(Expansion("-t", item, tuple(kept), "task", gone))
        task_list.update(dict.fromkeys(kept))
    return Selection(tuple(picked), tuple(task_list), tuple(expansions))


def check_grid_size(selection: Selection, runs: int, yes: bool, limit: int = MAX_RUNS) -> None:
    """A grid that a pattern expanded past `limit` runs needs `yes` (`--yes`): a UsageError otherwise."""
    if yes or runs <= limit or not selection.expansions:
        return
    patterns = " ".join(f"{e.flag} '{e.pattern}'" for e in selection.expansions)
    raise UsageError(
        f"{patterns} expands to {runs:,} runs, more than {limit}: pass --yes to run them all, or narrow "
        "the pattern (`bob run --dry-run` lists the runs without running them)."
    )


def _check_pinned(name: str, weights: str) -> None:
    """The weights after a backbone's `@` are `pretrained`, `random` or an existing checkpoint file."""
    try:
        WeightsRequest.parse(weights)
    except UsageError:
        raise UsageError(
            f"-b {name}@{weights}: the weights after '@' must be 'pretrained', 'random' or the path of a "
            f"checkpoint file; '{weights}' is none of these (no such file)."
        ) from None


def _stem(pattern: str) -> str:
    return "".join(c for c in pattern if c not in GLOB_CHARS and c != "]")


# ------------------------------------------------------------------------------ data on disk


def dataset_problem(dataset: str, root: str | Path | None, download: bool) -> str | None:
    """Why a real dataset cannot be read (one line: where bob looked, the ways out), or None when it
    can: a generated or embedded dataset, a download asked for, or its folder under the data root
    (the folder its layout names, where bob knows it; else the data root itself)."""
    if download or dataset not in DATASETS:
        return None
    entry = DATASETS.get(dataset)
    if not entry.meta["info"].needs_root:
        return None
    base = Path(root).expanduser() if root is not None else default_data_root()
    layout = LAYOUTS.get((entry.meta.get("options") or {}).get("layout") or dataset)
    folder = base / layout.subdir if layout is not None else base
    if folder.is_dir():
        return None
    where = f"{folder} does not exist" + (f" (it should hold {layout.expects})" if layout else "")
    return (
        f"Dataset '{dataset}' is not on disk: {where}. Point bob at its data root with "
        "`--task-arg root=DIR` or the BOB_DATA_ROOT environment variable, or add "
        "`--task-arg download=true` where it can be downloaded; nothing ran."
    )


def require_datasets(runs: Iterable[tuple[str, str | None, bool]]) -> None:
    """(task, data root, download) of every run: a real dataset that is not on disk is a UsageError
    (exit 2) before any run starts, not a failed result per run."""
    for task, root, download in dict.fromkeys(runs):
        problem = dataset_problem(task.partition("/")[2], root, download)
        if problem is not None:
            raise UsageError(f"{task}: {problem}")
