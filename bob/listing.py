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
        names = BACKBONES.names(pattern) if pattern else BACKBONES.names()
        return [row for row in map(describe, names) if filters.keep(row)]
    names = BACKBONES.names(pattern) if pattern else BACKBONES.names(namespaces=False)
    return [describe(name) for name in names]


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
