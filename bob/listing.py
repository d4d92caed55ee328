"""What exists, as rows: backbones, tasks, datasets (`bob ls`, and `bob.api`'s list_* functions).

Each listing loads only the registry it lists, so `bob ls` stays as fast as the registry itself:
backbones read the catalog and the shipped name indexes (no torch, no numpy), tasks the suite
registry, datasets the dataset registry. Those imports wait inside each function for that reason.
"""

from __future__ import annotations

from typing import Any

from bob.errors import UnknownNameError
from bob.registry import suggest
from bob.task import describe_args

KINDS = ("backbones", "tasks", "datasets")
MAX_VALUES_SHOWN = 12  # known filter values an unknown one's message lists


def check_kind(kind: str) -> None:
    """`bob ls KIND`: one of KINDS, else an UnknownNameError with the close matches."""
    if kind not in KINDS:
        raise UnknownNameError(
            "listing", kind, suggest(kind, KINDS), "Use one of: backbones, tasks, datasets."
        )


def rows(kind: str, pattern: str | None = None, **filters: str) -> list[dict[str, Any]]:
    """The rows of one listing; `filters` (family, method, data, group, max_params) for backbones."""
    check_kind(kind)
    if kind == "backbones":
        return list_backbones(pattern, **filters)
    return list_tasks(pattern) if kind == "tasks" else list_datasets(pattern)


def list_backbones(
    pattern: str | None = None,
    *,
    family: str | None = None,
    method: str | None = None,
    data: str | None = None,
    group: str | None = None,
    max_params: str | None = None,
) -> list[dict[str, Any]]:
    """Backbones as `bob ls backbones` lists them: name, family, method, data, params, weights, groups.

    Without a pattern or filter: the curated catalog and installed entry points; the library
    namespaces (timm/…, torchvision/…, open_clip/…) are summarised by `backbone_namespaces()`. A glob
    (`timm/vit_*`) or any filter (`family="vit"`, `method="ssl:*"`, `max_params="30M"`) searches them
    too. Raises UsageError for a malformed `max_params`."""
    from bob.backbones.catalog import BACKBONES, BackboneFilter, describe

    filters = BackboneFilter(family, method, data, group, max_params)
    if filters.active():
        every = [describe(name) for name in BACKBONES.names()]
        check_filter_values(every, family=family, method=method, data=data, group=group)
        names = set(BACKBONES.names(pattern)) if pattern else None
        return [row for row in every if (names is None or row["name"] in names) and filters.keep(row)]
    names = BACKBONES.names(pattern) if pattern else BACKBONES.names(namespaces=False)
    return [describe(name) for name in names]


def check_filter_values(rows: list[dict[str, Any]], **values: str | None) -> None:
    """A filter value that no backbone has (`--family transformerz`, `--group bobb`, a `--method`
    glob matching no method) is an unknown name with did-you-mean, not an empty listing. Values that
    exist but select nothing together are a valid, empty answer."""
    from bob.backbones.catalog import FAMILIES, BackboneFilter

    for key, value in values.items():
        if not value:
            continue
        if key == "family":
            known = set(FAMILIES)
        elif key == "group":
            known = {g for row in rows for g in row.get("groups", ())}
        else:
            known = {str(row.get(key) or "") for row in rows} - {""}
        if any(BackboneFilter(**{key: value}).keep(row) for row in rows):
            continue
        shown = sorted(known)
        listing = ", ".join(shown[:MAX_VALUES_SHOWN]) + (
            f", … ({len(shown)} in all)" if len(shown) > MAX_VALUES_SHOWN else ""
        )
        raise UnknownNameError(
            f"backbone {key}", value, suggest(value, known, 3), f"Known values: {listing}."
        )


def backbone_namespaces() -> list[dict[str, Any]]:
    """One row per library namespace: prefix, architectures, pretrained tags, library version."""
    from bob.backbones.catalog import BACKBONES, load_index

    rows = []
    for prefix, namespace in BACKBONES.namespaces.items():
        index = load_index(prefix)
        archs = index["architectures"]
        rows.append(
            {
                "prefix": prefix,
                "architectures": len(archs),
                "tags": sum(len(a["tags"]) for a in archs.values()),
                "version": index["version"],
                "description": namespace.description,
            }
        )
    return rows


def list_tasks(pattern: str | None = None) -> list[dict[str, Any]]:
    """Task names `<suite>/<dataset>` (glob `pattern`), each with its suite's main metric and description."""
    from bob.suites import SUITES, task_names

    rows = []
    for name in task_names(pattern):
        suite = SUITES.get(name.split("/", 1)[0])
        rows.append({"name": name, "main_metric": suite.main_metric, "description": suite.description})
    return rows


def list_task_args(suite: str) -> list[dict[str, str]]:
    """A suite's task args (what `task_args=` and `--task-arg` take): name, default, meaning.
    Raises UnknownNameError (with did-you-mean) for an unknown suite."""
    from bob.suites import task_class

    return [
        {"arg": name, "default": default, "meaning": meaning}
        for name, default, meaning in describe_args(task_class(suite).Args)
    ]


def list_datasets(pattern: str | None = None) -> list[dict[str, Any]]:
    """Datasets (glob `pattern`): kind, class count (None without classes), splits, image size.
    Source and license: `bob.data.dataset_info(name)`."""
    from bob.data import DATASETS

    rows = []
    for name in DATASETS.names(pattern):
        info = DATASETS.get(name).meta["info"]
        rows.append(
            {
                "name": name,
                "kind": info.kind,
                "classes": info.num_classes,
                "splits": ",".join(info.splits),
                "image_size": info.image_size or "backbone's",
            }
        )
    return rows
