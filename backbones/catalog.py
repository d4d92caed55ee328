"""The backbone registry: open namespaces over timm and torchvision, plus curated entries.

Listing and validating names reads the static indexes in `index/` (built by
scripts/build_backbone_index.py), so `bob ls backbones` never imports torch. An index entry also
carries each architecture's parameter count (without classifier) and family.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from bob.backbones.families import infer_data, infer_method
from bob.errors import UsageError
from bob.registry import Registry, import_target

# A user's factory: `path/to/file.py:function` or `package.module:function` (see backbones/user.py).
FACTORY = re.compile(r"^(?P<module>[^:]+\.py|[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_]\w*)$")
ENTRY_POINT_GROUP = "bob.backbones"


# Two copies of a backbone joined CBNetV2-style (see composite.py): `composite(<backbone name>)`.
COMPOSITE = re.compile(r"^composite\((?P<inner>.+)\)$")


def composite_inner(name: str) -> str | None:
    """`composite(timm/resnet18)` -> `timm/resnet18`; None for any other name."""
    match = COMPOSITE.match(name.strip())
    return match.group("inner").strip() if match else None


def is_factory_name(name: str) -> bool:
    """`file.py:fn` or `package.module:fn`; registry names never look like either."""
    return FACTORY.match(name) is not None


BACKBONES: Registry = Registry("backbone")

ADAPTERS = {
    "timm": "bob.backbones.timm_backbone",
    "torchvision": "bob.backbones.torchvision_backbone",
    "open_clip": "bob.backbones.open_clip_backbone",
    "ssl": "bob.backbones.ssl_checkpoints",
    "diffusion": "bob.backbones.diffusion_backbone",
    "hf": "bob.backbones.hf_backbone",
}
# How the two name forms outside the catalog resolve (loaded on first use, like the adapters).
USER_RESOLVER = "bob.backbones.user:resolve"
COMPOSITE_RESOLVER = "bob.backbones.composite:resolve"
ENTRY_KEYS = {"name", "adapter", "target", "family", "method", "data", "params", "license", "source"}
OPTIONAL_KEYS = {"args", "sha256", "groups", "note", "transform"}
FAMILIES = ("cnn", "vit", "hierarchical", "hybrid", "diffusion")


@cache
def load_index(library: str) -> dict[str, Any]:
    """The shipped index for `library`: {"version": …, "architectures": {arch: {tags, default_tag, params, family}}}."""
    text = resources.files("bob.backbones").joinpath("index", f"{library}.json").read_text()
    return json.loads(text)


# How a namespace joins architecture and weights tag: `timm/resnet50.a1_in1k`, `open_clip/RN50:openai`.
TAG_SEPARATOR = {"timm": ".", "torchvision": ".", "open_clip": ":"}


@cache
def index_names(library: str) -> tuple[str, ...]:
    """Every resolvable name of a library: bare architectures and `arch<sep>tag` pairs."""
    sep = TAG_SEPARATOR[library]
    names: list[str] = []
    for arch, entry in sorted(load_index(library)["architectures"].items()):
        names.append(arch)
        names.extend(f"{arch}{sep}{tag}" for tag in entry["tags"])
    return tuple(names)


def describe(name: str) -> dict[str, Any]:
    """What `bob ls backbones` shows for a name, without importing torch."""
    entry = BACKBONES.get(name).meta.get("catalog") if name in _CATALOG_NAMES else None
    if entry is not None:
        return {
            "name": name,
            "family": entry["family"],
            "method": entry["method"],
            "data": entry["data"],
            "params": entry["params"],
            "weights": entry["source"],
            "groups": entry.get("groups", []),
        }
    prefix, _, rest = name.partition("/")
    arch, _, tag = rest.partition(TAG_SEPARATOR.get(prefix, "."))
    entry = load_index(prefix)["architectures"].get(arch, {}) if prefix in TAG_SEPARATOR else {}
    default = entry.get("default_tag")
    return {
        "name": name,
        "family": entry.get("family", ""),
        "method": infer_method(tag or default or "", arch) if (tag or default) else "",
        "data": (infer_data(tag or default or "") or "") if (tag or default) else "",
        "params": entry.get("params"),
        "weights": tag or (f"{default} (default)" if default else "none (random init only)"),
        "groups": [],
    }


@dataclass
class BackboneFilter:
    """Filters over `describe` rows (`bob ls backbones`, a sweep file's backbone selectors): exact
    family, glob on pretraining method and data, catalog group, size cap."""

    family: str | None = None
    method: str | None = None
    data: str | None = None
    group: str | None = None
    max_params: str | None = None

    def active(self) -> bool:
        return any(vars(self).values())

    def keep(self, row: dict[str, Any]) -> bool:
        if self.family and row.get("family") != self.family:
            return False
        for key in ("method", "data"):
            pattern = getattr(self, key)
            if pattern and not fnmatch.fnmatchcase(str(row.get(key) or "").lower(), pattern.lower()):
                return False
        if self.group and self.group not in row.get("groups", ()):
            return False
        limit = parse_count(self.max_params) if self.max_params else None
        return limit is None or (row.get("params") is not None and row["params"] < limit)


def parse_count(text: str) -> int:
    """`30M`, `1.5B`, `800K` or a plain integer."""
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(text[-1:].upper(), 1)
    try:
        return int(float(text[:-1] if scale != 1 else text) * scale)
    except ValueError:
        raise UsageError(f"--max-params takes a count such as 30M, 1.5B or 25000000, got '{text}'.") from None


@cache
def catalog_entries() -> tuple[dict[str, Any], ...]:
    """Every curated entry of `entries/*.yaml`, validated: checkpoints as data, not classes."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out: list[dict[str, Any]] = []
    for path in sorted(resources.files("bob.backbones").joinpath("entries").iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".yaml"):
            continue
        for entry in yaml.load(path.read_text(), Loader=loader) or []:
            _validate_entry(entry, path.name)
            out.append(entry)
    return tuple(out)


def _validate_entry(entry: Any, source: str) -> None:
    name = entry.get("name", "?") if isinstance(entry, dict) else "?"
    where = f"backbone catalog {source}, entry '{name}'"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: not a mapping")
    missing, unknown = ENTRY_KEYS - set(entry), set(entry) - ENTRY_KEYS - OPTIONAL_KEYS
    if missing or unknown:
        raise ValueError(f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    if entry["adapter"] not in ADAPTERS or entry["family"] not in FAMILIES:
        raise ValueError(f"{where}: unknown adapter '{entry['adapter']}' or family '{entry['family']}'")


def _live(library: str):
    return lambda name: import_target(f"{ADAPTERS[library]}:is_model")(name)


BACKBONES.add_namespace(
    "timm",
    f"{ADAPTERS['timm']}:resolve",
    lambda: index_names("timm"),
    "every timm architecture, bare or as arch.tag (pretrained weights from the Hugging Face hub)",
    live=_live("timm"),
)
BACKBONES.add_namespace(
    "open_clip",
    f"{ADAPTERS['open_clip']}:resolve",
    lambda: index_names("open_clip"),
    "open_clip models as arch:pretrained-tag, e.g. open_clip/ViT-B-16:laion2b_s34b_b88k (visual tower)",
    live=_live("open_clip"),
)
BACKBONES.add_namespace(
    "torchvision",
    f"{ADAPTERS['torchvision']}:resolve",
    lambda: index_names("torchvision"),
    "torchvision classification models; arch.WEIGHTS picks a weights enum member (bare = IMAGENET1K_V1)",
    live=_live("torchvision"),
)


for _entry in catalog_entries():
    BACKBONES.register(_entry["name"], f"{ADAPTERS[_entry['adapter']]}:resolve", catalog=_entry)
_CATALOG_NAMES = frozenset(e["name"] for e in catalog_entries())


def _register_entry_points() -> None:
    """Backbones that installed packages declare under the `bob.backbones` entry-point group."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _CATALOG_NAMES or ep.name in BACKBONES.names(namespaces=False):
            logging.getLogger(__name__).warning("entry point '%s' shadows a catalog name; ignored", ep.name)
            continue
        dist = getattr(ep.dist, "name", None) if getattr(ep, "dist", None) else None
        BACKBONES.register(ep.name, USER_RESOLVER, factory=ep.value, entry_point=ep.name, distribution=dist)


_register_entry_points()
