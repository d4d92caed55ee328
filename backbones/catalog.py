"""The backbone registry: open namespaces over timm and torchvision, plus curated entries.

Listing and validating names reads the static indexes in `index/` (built by
scripts/build_backbone_index.py), so `bob ls backbones` never imports torch. An index entry also
carries each architecture's parameter count (without classifier) and family.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from bob.registry import Registry, import_target

BACKBONES: Registry = Registry("backbone")

ADAPTERS = {
    "timm": "bob.backbones.timm_backbone",
    "torchvision": "bob.backbones.torchvision_backbone",
}


@cache
def load_index(library: str) -> dict[str, Any]:
    """The shipped index for `library`: {"version": …, "architectures": {arch: {tags, default_tag, params, family}}}."""
    text = resources.files("bob.backbones").joinpath("index", f"{library}.json").read_text()
    return json.loads(text)


@cache
def index_names(library: str) -> tuple[str, ...]:
    """Every resolvable name of a library: bare architectures and `arch.tag` pairs."""
    names: list[str] = []
    for arch, entry in sorted(load_index(library)["architectures"].items()):
        names.append(arch)
        names.extend(f"{arch}.{tag}" for tag in entry["tags"])
    return tuple(names)


def describe(name: str) -> dict[str, Any]:
    """What `bob ls backbones` shows for a name, without importing torch."""
    prefix, _, rest = name.partition("/")
    arch, _, tag = rest.partition(".")
    entry = load_index(prefix)["architectures"].get(arch, {}) if prefix in ADAPTERS else {}
    default = entry.get("default_tag")
    return {
        "name": name,
        "family": entry.get("family", ""),
        "params": entry.get("params"),
        "weights": tag or (f"{default} (default)" if default else "none (random init only)"),
    }


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
    "torchvision",
    f"{ADAPTERS['torchvision']}:resolve",
    lambda: index_names("torchvision"),
    "torchvision classification models; arch.WEIGHTS picks a weights enum member (bare = IMAGENET1K_V1)",
    live=_live("torchvision"),
)
