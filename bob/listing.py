"""What exists, as rows: backbones, tasks, datasets (`bob ls`, and `bob.api`'s list_* functions).

Each listing loads only the registry it lists, so `bob ls` stays as fast as the registry itself:
backbones read the catalog and the shipped name indexes (no torch, no numpy), tasks the suite
registry, datasets the dataset registry. Those imports wait inside each function for that reason.
"""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from bob.errors import UnknownNameError
from bob.registry import suggest
from bob.task import describe_args
from bob.weights import hf_hub_cache_dir, search_path, torch_hub_checkpoints_dir

KINDS = ("backbones", "tasks", "datasets")
MAX_VALUES_SHOWN = 12  # known filter values an unknown one's message lists


def check_kind(kind: str) -> None:
    """`bob ls KIND`: one of KINDS, else an UnknownNameError with the close matches."""
    if kind not in KINDS:
        raise UnknownNameError(
            "listing", kind, suggest(kind, KINDS), "Use one of: backbones, tasks, datasets."
        )


def rows(kind: str, pattern: str | None = None, **filters: Any) -> list[dict[str, Any]]:
    """The rows of one listing; `filters` (family, method, data, group, max_params, available) for
    backbones."""
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
    available: bool = False,
) -> list[dict[str, Any]]:
    """Backbones as `bob ls backbones` lists them: name, family, method, data, params, weights, groups,
    available (where its pretrained weights are on this machine: `local_weights`).

    Without a pattern or filter: the curated catalog and installed entry points; the library
    namespaces (timm/…, torchvision/…, open_clip/…) are summarised by `backbone_namespaces()`. A glob
    (`timm/vit_*`) or any filter (`family="vit"`, `method="ssl:*"`, `max_params="30M"`) searches them
    too, as does `available=True`, which keeps only the backbones whose weights are found locally.
    Raises UsageError for a malformed `max_params`."""
    from bob.backbones.catalog import BACKBONES, BackboneFilter, describe

    filters = BackboneFilter(family, method, data, group, max_params)
    if filters.active():
        every = [describe(name) for name in BACKBONES.names()]
        check_filter_values(every, family=family, method=method, data=data, group=group)
        names = set(BACKBONES.names(pattern)) if pattern else None
        rows = [row for row in every if (names is None or row["name"] in names) and filters.keep(row)]
    else:
        if pattern or available:
            names = BACKBONES.names(pattern) if pattern else BACKBONES.names()
        else:
            names = BACKBONES.names(namespaces=False)
        rows = [describe(name) for name in names]
    local = _LocalFiles()
    for row in rows:
        row["available"] = local_weights(row["name"], local)
    return [row for row in rows if row["available"] not in NOT_FOUND] if available else rows


# `available` values: where the weights are, or why they are not.
NOT_FOUND = ("no", "random only", None)


@cache
def weights_index() -> dict[str, Any]:
    """The pretrained files each `arch<sep>tag` of timm, torchvision and open_clip resolves to
    (`index/weights.json`, built by scripts/build_weights_index.py from the adapters themselves)."""
    text = resources.files("bob.backbones").joinpath("index", "weights.json").read_text()
    return json.loads(text)


def weight_files(name: str) -> list[tuple[str, str]] | None:
    """The files the adapter would look for as `name`'s pretrained weights, as (kind, what):
    ("hf", "<repo>/<file>"), ("file", "<file name>") or ("repo", "<hub repo>") for a multi-file
    snapshot. [] when the name has no pretrained weights; None when bob cannot tell without running
    the name's code (a factory, an entry point)."""
    from bob.backbones.catalog import TAG_SEPARATOR, composite_inner, load_index

    inner = composite_inner(name)
    if inner is not None:
        return weight_files(inner)
    entry = _catalog_by_name().get(name)
    if entry is not None:
        source = str(entry.get("source") or "")
        if entry["adapter"] in TAG_SEPARATOR:
            name = f"{entry['adapter']}/{entry['target']}"
        elif source.startswith("hf-hub:"):
            return [("repo", source.removeprefix("hf-hub:"))]
        elif "://" in source:
            return [("file", source.rsplit("/", 1)[-1])]
        else:
            return None
    library, _, rest = name.partition("/")
    if library not in TAG_SEPARATOR:
        return None
    arch, sep, tag = rest.partition(TAG_SEPARATOR[library])
    tag = tag or (load_index(library)["architectures"].get(arch) or {}).get("default_tag") or ""
    if library == "open_clip" and not sep:
        return []  # open_clip's pretrained weights need a tag
    index = weights_index()
    files = index[library]["files"].get(f"{arch}{TAG_SEPARATOR[library]}{tag}", []) if tag else []
    return [item for code in files for item in _decode(code, f"{library}/{arch}.{tag}", index)]


@cache
def _catalog_by_name() -> dict[str, dict[str, Any]]:
    from bob.backbones.catalog import catalog_entries

    return {entry["name"]: entry for entry in catalog_entries()}


def _decode(code: str, own_repo: str, index: dict[str, Any]) -> list[tuple[str, str]]:
    kind, _, what = code.partition(":")
    if kind == "hf-default":
        library = own_repo.partition("/")[0]
        repo = what or own_repo
        return [("hf", f"{repo}/{f}") for f in index["default_files"][library]]
    return [("hf" if kind == "hf-hub" else "file", what)]


class _LocalFiles:
    """One look at the caches per listing: the mirror dirs, the torch hub checkpoints and the
    Hugging Face cache's repos."""

    def __init__(self) -> None:
        self.mirrors = [d for d in search_path() if d.is_dir()]
        self.hub = torch_hub_checkpoints_dir()
        self.hf = hf_hub_cache_dir()
        self._names: dict[Path, set[str]] = {}
        self.hf_repos = {n for n in self._listed(self.hf) if n.startswith("models--")}

    def _listed(self, folder: Path) -> set[str]:
        """The names in `folder`, listed once: most lookups end at a name that is not there."""
        if folder not in self._names:
            try:
                self._names[folder] = set(os.listdir(folder))
            except OSError:
                self._names[folder] = set()
        return self._names[folder]

    def find(self, kind: str, what: str) -> str | None:
        """Where one wanted file (or a snapshot `repo`) is, in the adapters' order of search."""
        hub_names = [what, what.replace("/", "--", 1)]  # <dir>/org/repo/… or <dir>/org--repo/…
        if any(self.in_mirrors(n) for n in (hub_names if kind != "file" else [what])):
            return "BOB_WEIGHTS_PATH"
        if kind == "file":
            return (
                "torch hub cache" if what in self._listed(self.hub) and (self.hub / what).is_file() else None
            )
        repo, _, filename = what.rpartition("/") if kind == "hf" else (what, "", "")
        return "HF cache" if self.in_hf_cache(repo, filename or None) else None

    def in_mirrors(self, relative: str) -> bool:
        first = relative.split("/", 1)[0]
        return any(first in self._listed(d) and (d / relative).exists() for d in self.mirrors)

    def in_hf_cache(self, repo: str, filename: str | None = None) -> bool:
        folder = f"models--{repo.replace('/', '--')}"
        if folder not in self.hf_repos:
            return False
        snapshots = self.hf / folder / "snapshots"
        pattern = f"*/{filename}" if filename else "*/*"
        return any(Path(p).exists() for p in snapshots.glob(pattern))


def local_weights(name: str, files: _LocalFiles | None = None) -> str | None:
    """Where `name`'s pretrained weights are on this machine, looking by the names its adapter
    would look for and in the same places, without importing torch: `BOB_WEIGHTS_PATH`,
    `torch hub cache` or `HF cache`; `no` when nowhere, `random only` for a name without pretrained
    weights, None when bob cannot tell (a factory or entry point builds its own model)."""
    wanted = weight_files(name)
    if wanted is None:
        return None
    if not wanted:
        return "random only"
    files = files or _LocalFiles()
    for kind, what in wanted:
        where = files.find(kind, what)
        if where is not None:
            return where
    return "no"


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
    """Task names `<suite>/<dataset>` (glob `pattern`), each with its suite's main metric, whether its
    runs train data-parallel under `--gpus-per-run` (and the task args that do not), and description."""
    from bob.suites import SUITES, task_names

    rows = []
    for name in task_names(pattern):
        suite = SUITES.get(name.split("/", 1)[0])
        parallel = "no"
        if suite.data_parallel:
            but = ", ".join(f"{arg}={value}" for arg, value in suite.not_data_parallel)
            parallel = f"yes, not {but}" if but else "yes"
        rows.append(
            {
                "name": name,
                "main_metric": suite.main_metric,
                "data_parallel": parallel,
                "description": suite.description,
            }
        )
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
