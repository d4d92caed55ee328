"""The dataset registry: every dataset is a YAML entry, read on first use.

Datasets that two or more suites run on live in `bob/data/entries/*.yaml`; a suite's own datasets
live in its folder, `tasks/<suite>/datasets.yaml`. A file holds optional `defaults` (fields every
entry of the file shares unless it says otherwise) and a `datasets` list:

    defaults:
      task_type: retrieval
      splits: [test]
    datasets:
    - name: skimage-views
      title: Augmented views of CC0 scikit-image photos (instance retrieval)
      kind: generated                 # embedded | generated | real
      num_classes: 48
      image_size: 96                  # eval resolution (omit: the backbone's own)
      crop_pct: 1.0                   # omit: the backbone's own crop
      loader: .views:load_instance_views
      options: {}                     # keyword arguments of the loader
      source: ...
      license: ...
      description: ...

`loader` is `"module:function"`, imported only when a split is loaded; a leading dot makes it
relative to the package that holds the file (`.data:load_x` in tasks/iqa/ is
`bob.tasks.iqa.data:load_x`). `needs_root` is true exactly for `kind: real`. Lists in `options`
reach the loader as tuples. Nothing here imports torch, numpy or PIL, and no file is read until a
dataset is looked up or listed, so `bob ls` stays fast.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import yaml

from bob.data.base import DatasetInfo
from bob.registry import Registry

ENTRIES_DIR = Path(__file__).parent / "entries"
SUITE_FILE = "datasets.yaml"
TASKS_PACKAGE = "bob.tasks"
_INFO_FIELDS = {f.name for f in dataclasses.fields(DatasetInfo)} - {"name", "needs_root"}
_ENTRY_FIELDS = _INFO_FIELDS | {"name", "loader", "options"}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DatasetDefinitionError(Exception):
    """A dataset YAML file that breaks the schema: a bug in bob or in the entry being written."""


def dataset_files() -> list[tuple[Path, str]]:
    """(YAML file, package its relative loaders resolve against): the shared entries, then each suite's."""
    files = [(path, "bob.data") for path in sorted(ENTRIES_DIR.glob("*.yaml"))]
    spec = importlib.util.find_spec(TASKS_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted(Path(location).glob(f"*/{SUITE_FILE}")):
            files.append((path, f"{TASKS_PACKAGE}.{path.parent.name}"))
    return files


def _tuples(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _entry(
    raw: Any, defaults: dict[str, Any], package: str, where: str
) -> tuple[str, str, DatasetInfo, dict]:
    if not isinstance(raw, dict) or "name" not in raw:
        raise DatasetDefinitionError(f"{where}: every entry is a mapping with a 'name', got {raw!r}")
    where = f"{where}, dataset '{raw['name']}'"
    unknown = set(raw) - _ENTRY_FIELDS
    if unknown:
        raise DatasetDefinitionError(
            f"{where}: unknown fields {sorted(unknown)}; known: {sorted(_ENTRY_FIELDS)}"
        )
    fields = {**defaults, **raw}
    loader = fields.pop("loader", None)
    if not isinstance(loader, str) or ":" not in loader:
        raise DatasetDefinitionError(f"{where}: 'loader' must read 'module:function', got {loader!r}")
    if loader.startswith("."):
        loader = package + loader
    options = _tuples(fields.pop("options", None) or {})
    if "splits" in fields:
        fields["splits"] = tuple(fields["splits"])
    try:
        info = DatasetInfo(needs_root=fields.get("kind") == "real", **fields)
    except TypeError as err:
        raise DatasetDefinitionError(f"{where}: {err}") from None
    return info.name, loader, info, options


def read_dataset_file(path: Path, package: str) -> list[tuple[str, str, DatasetInfo, dict]]:
    """The entries of one YAML file as (name, loader target, info, loader options)."""
    doc = yaml.load(path.read_text(), Loader=_LOADER) or {}
    if not isinstance(doc, dict) or set(doc) - {"defaults", "datasets"}:
        raise DatasetDefinitionError(f"{path}: expected a mapping with 'defaults' and 'datasets'")
    defaults = doc.get("defaults") or {}
    unknown = set(defaults) - _INFO_FIELDS - {"loader", "options"}
    if unknown:
        raise DatasetDefinitionError(f"{path}: unknown default fields {sorted(unknown)}")
    return [_entry(raw, defaults, package, str(path)) for raw in doc.get("datasets") or []]


def _populate(registry: Registry) -> None:
    for path, package in dataset_files():
        for name, target, info, options in read_dataset_file(path, package):
            try:
                registry.register(name, target, info=info, options=options)
            except ValueError:
                raise DatasetDefinitionError(f"{path}: dataset '{name}' is defined twice") from None


DATASETS: Registry = Registry("dataset", populate=_populate)
