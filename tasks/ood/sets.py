"""The shifted sets of an OOD run: which ones it scores, and each loaded and checked before training.

Every set is located (missing data raises with the path), its class list compared with the
in-distribution dataset's, and its labels checked against its class subset (ImageNet-A/R) before any
classifier is trained or any feature extracted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bob.context import RunContext
from bob.data import dataset_info, default_data_root, load_split
from bob.data.corruptions import RenderSpec
from bob.data.real_shifts import valid_class_indices
from bob.errors import UnknownNameError, UsageError
from bob.registry import suggest
from bob.tasks.ood import ALL_SEVERITIES, OodArgs
from bob.tasks.ood.data import Shift, load_shifted_set


def select_sets(shift: Shift, args: OodArgs) -> list[str]:
    """The shifted sets a run scores: all of the shift's, or its default, narrowed by the task args."""
    if not shift.corruption_sets:
        if args.corruptions is not None or tuple(args.severities) != ALL_SEVERITIES:
            raise UsageError(
                f"Shift '{shift.name}' has no corruptions; the task args corruptions and severities only "
                "apply to corruption shifts (digits-c, animal-mnist-c, imagenet-c, imagenet-c-render)."
            )
        return list(shift.default_sets or shift.set_names)
    known = list(dict.fromkeys(name.rpartition("-")[0] for name in shift.set_names))
    if args.corruptions is None:
        pool = shift.default_sets or shift.set_names
        chosen = list(dict.fromkeys(name.rpartition("-")[0] for name in pool))
    elif tuple(args.corruptions) == ("all",):
        chosen = known
    else:
        chosen = list(args.corruptions)
        for name in chosen:
            if name not in known:
                raise UnknownNameError(
                    f"corruption of shift '{shift.name}'",
                    name,
                    suggest(name, known, 3),
                    f"Known: {', '.join(known)}.",
                )
    return [f"{c}-{s}" for c in chosen for s in sorted(args.severities)]


def _valid_classes(shift: Shift, name: str) -> np.ndarray | None:
    subset = shift.sets[name].get("valid_classes")
    if subset is None:
        return None
    return valid_class_indices(subset)


def load_sets(ctx: RunContext, shift: Shift, names: list[str]) -> dict[str, np.ndarray | None]:
    """Load every set's file list (raising on missing data) and check its labels; returns class masks."""
    root = Path(ctx.spec.data_root).expanduser() if ctx.spec.data_root else default_data_root()
    # Corruptions of embedded sets apply at the backbone's eval geometry (see RenderSpec).
    eval_render = RenderSpec.from_data_config(ctx.data_config)
    if "val" in in_dist_splits(shift):
        ctx.add_split("val", load_split(shift.in_dist, "val", root=root, download=ctx.spec.download))
    classes = ctx.classes
    ctx.split("test")
    masks = {}
    for name in names:
        split = load_shifted_set(shift, name, root, ctx.spec.download, eval_render)
        if tuple(split.classes) != tuple(classes):
            raise UsageError(
                f"Shift '{shift.name}': set '{name}' has {len(split.classes)} classes that differ from the "
                f"{len(classes)} classes of the in-distribution dataset '{shift.in_dist}' "
                f"(first difference: {_first_difference(split.classes, classes)}). Both must use the same "
                "class list in the same order."
            )
        masks[name] = _valid_classes(shift, name)
        if masks[name] is not None and not np.isin(split.labels, masks[name]).all():
            raise UsageError(f"Shift '{shift.name}': set '{name}' has labels outside its class subset.")
        ctx.add_split(name, split)
    return masks


def in_dist_splits(shift: Shift) -> tuple[str, ...]:
    """The splits of the shift's in-distribution dataset (a `val` one is used for model selection)."""
    return dataset_info(shift.in_dist).splits


def _first_difference(a: tuple[str, ...], b: tuple[str, ...]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"class {i} is '{x}' in the set, '{y}' in distribution"
    return "the lists differ in length"
