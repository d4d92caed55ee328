"""Distribution shifts: an in-distribution dataset plus the shifted sets it is evaluated on.

A shift is a dataset entry (tasks/ood/datasets.yaml) with `task_type: shift` whose loader is
`load_shift_split`. Its splits are `train` and `test`: those of the in-distribution dataset, loaded
through the registry, so their feature-cache entries are the very ones `linear-probe/<in-dist>`
writes. Its shifted sets are loaded by name with `load_shifted_set`; each is described as data in the
entry's options:

    {"kind": "dataset", "dataset": "shapes-texture"}                      another registered split
    {"kind": "shapes", "domain": "sketch", "n": 100}                         freshly drawn shapes
    {"kind": "corrupt", "dataset": "digits", "corruption": "fog",
     "severity": 3, "render": "eval"}                                   ImageNet-C-style, on the fly
    {"kind": "loader", "target": "module:function", "kwargs": {...}}    a real dataset on disk

A shift that evaluates on all 15 ImageNet-C corruptions × 5 severities names them at once with
`corruptions` instead of 75 sets: `{dataset: digits, render: eval}` (corrupted on the fly) or
`{loader: "module:function"}` (pre-rendered, the loader called with `corruption=` and `severity=`);
the sets are named `<corruption>-<severity>`, and `default_corruptions` lists the corruptions a run
evaluates when it does not choose.

A set may also name `valid_classes` (e.g. "imagenet-a"): the subset of in-distribution classes its
labels come from; the `ood` suite masks the classifier's logits to that subset. `dataset` and
`corrupt` sets read the source dataset's `test` split unless they name another (`source_split`).
A corruption's `render` is a fixed `[resize, crop, interpolation]` (ImageNet-C: 256, 224, bilinear)
or "eval": the backbone's own eval geometry, which the run passes in (`eval_render`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bob.data import DATASETS, load_split
from bob.data.base import DatasetInfo, ImageSplit
from bob.data.corruptions import CORRUPTIONS, SEVERITIES, CorruptedSplit, RenderSpec
from bob.data.shapes import load_shapes
from bob.errors import UsageError
from bob.registry import import_target


@dataclass(frozen=True)
class Shift:
    """A shift's definition, read from its catalog entry without loading any data."""

    name: str
    in_dist: str
    sets: dict[str, dict[str, Any]]
    # The sets evaluated when the run does not choose (None: all of them).
    default_sets: tuple[str, ...] | None = None
    corruption_sets: bool = False

    @property
    def set_names(self) -> tuple[str, ...]:
        return tuple(self.sets)


def get_shift(name: str) -> Shift:
    """The definition of a registered shift; unknown names raise with close matches."""
    entry = DATASETS.get(name)
    info: DatasetInfo = entry.meta["info"]
    if info.task_type != "shift":
        shifts = [e.name for e in DATASETS.entries() if e.meta["info"].task_type == "shift"]
        raise UsageError(f"Dataset '{name}' is not a shift; the shifts are: {', '.join(shifts)}.")
    return shift_from_options(name, entry.meta["options"])


def shift_from_options(name: str, options: dict[str, Any]) -> Shift:
    sets = dict(options.get("sets") or {})
    corruptions = options.get("corruptions")
    if corruptions is not None:
        sets.update(corruption_sets(**corruptions))
    default = options.get("default_corruptions")
    return Shift(
        name=name,
        in_dist=options["in_dist"],
        sets=sets,
        default_sets=tuple(s for s in sets if s.rpartition("-")[0] in default) if default else None,
        corruption_sets=corruptions is not None,
    )


def corruption_sets(
    dataset: str | None = None, render: str | tuple[Any, ...] | None = None, loader: str | None = None
) -> dict[str, dict[str, Any]]:
    """The 75 sets `<corruption>-<severity>`: `dataset`'s test split corrupted on the fly at `render`,
    or read by `loader` (pre-rendered files such as the released ImageNet-C)."""
    sets: dict[str, dict[str, Any]] = {}
    for corruption in CORRUPTIONS:
        for severity in SEVERITIES:
            if loader is not None:
                spec = {
                    "kind": "loader",
                    "target": loader,
                    "kwargs": {"corruption": corruption, "severity": severity},
                }
            else:
                spec = {"kind": "corrupt", "dataset": dataset, "corruption": corruption, "severity": severity}
                spec["render"] = render
            sets[f"{corruption}-{severity}"] = spec
    return sets


def load_shift_split(
    info: DatasetInfo,
    split: str,
    *,
    root: Path,
    download: bool = False,
    **options: Any,
) -> ImageSplit:
    """The registry loader of every shift: the in-distribution dataset's `train` or `test` split."""
    return load_split(options["in_dist"], split, root=root, download=download)


def load_shifted_set(
    shift: Shift, name: str, root: Path, download: bool = False, eval_render: RenderSpec | None = None
) -> ImageSplit:
    """One shifted evaluation set of `shift`, by its name; `eval_render` is the backbone's geometry."""
    if name not in shift.sets:
        raise UsageError(f"Shift '{shift.name}' has no set '{name}'; its sets are: {', '.join(shift.sets)}.")
    spec = dict(shift.sets[name])
    spec.pop("valid_classes", None)
    if spec["kind"] == "corrupt":
        spec["eval_render"] = eval_render
    builder = _BUILDERS[spec.pop("kind")]
    return builder(shift.name, name, Path(root), download, **spec)


def _from_dataset(
    shift: str, name: str, root: Path, download: bool, *, dataset: str, source_split: str = "test"
) -> ImageSplit:
    return load_split(dataset, source_split, root=root, download=download)


def _from_shapes(shift: str, name: str, root: Path, download: bool, *, domain: str, n: int) -> ImageSplit:
    info = DatasetInfo(name, name, "generated", 10, ("test",), "bob.data.shapes", "generated by bob")
    return load_shapes(info, "test", domain=domain, n_test=n)


def _from_corruption(
    shift: str,
    name: str,
    root: Path,
    download: bool,
    *,
    dataset: str,
    corruption: str,
    severity: int,
    render: str | list[Any],
    eval_render: RenderSpec | None,
    source_split: str = "test",
    seed: int = 0,
) -> ImageSplit:
    if render == "eval":
        if eval_render is None:
            raise UsageError(
                f"Shift '{shift}', set '{name}' renders at the backbone's geometry; pass eval_render."
            )
        geometry = eval_render
    else:
        geometry = RenderSpec(*render)
    parent = load_split(dataset, source_split, root=root, download=download)
    return CorruptedSplit(parent, shift, corruption, severity, geometry, seed)


def _from_loader(
    shift: str, name: str, root: Path, download: bool, *, target: str, kwargs: dict[str, Any]
) -> ImageSplit:
    info = DatasetInfo(name, name, "real", None, (name,), target, "see docs/suites/ood.md", needs_root=True)
    return import_target(target)(info, name, root=root, download=download, **kwargs)


_BUILDERS = {
    "dataset": _from_dataset,
    "shapes": _from_shapes,
    "corrupt": _from_corruption,
    "loader": _from_loader,
}
