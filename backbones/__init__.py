"""Backbone adapters: one module per family, answering one contract (see base.py).

    >>> from bob.backbones import resolve_backbone
    >>> ref = resolve_backbone("torchvision/mobilenet_v2", weights="pretrained")
    >>> model = ref.build()          # a bob.backbones.base.Backbone
    >>> model.forward_pooled(x)      # [B, D]

Names: a curated catalog entry (`dino/vit_small_patch16`), a library namespace (`timm/…`,
`torchvision/…`, `open_clip/…`), an installed package's `bob.backbones` entry point, or your own
factory (`path/to/file.py:fn`, `package.module:fn`; see user.py), or `composite(<any of these>)`
(two copies joined CBNetV2-style; see composite.py). Importing this package is cheap:
adapters (and torch) load only when a backbone is resolved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bob.backbones.catalog import (
    BACKBONES,
    COMPOSITE_RESOLVER,
    USER_RESOLVER,
    composite_inner,
    is_factory_name,
)
from bob.registry import import_target
from bob.weights import WeightsRequest

if TYPE_CHECKING:
    from bob.backbones.base import Backbone, BackboneRef

__all__ = ["BACKBONES", "build_backbone", "resolve_backbone"]


def resolve_backbone(
    name: str, weights: str = "pretrained", args: dict[str, Any] | None = None, seed: int = 0
) -> BackboneRef:
    """Resolve a backbone name to exact weights and transform without building the model."""
    request = WeightsRequest.parse(weights)
    inner = composite_inner(name)
    # Like every adapter, composites and user factories load through their registry target on first
    # use: they import torch, and this package is imported by every listing.
    if inner is not None:
        args = dict(args or {})
        zero_init = bool(args.pop("composite_zero_init", True))
        inner_ref = resolve_backbone(inner, weights, args, seed)
        return import_target(COMPOSITE_RESOLVER)(name, inner_ref, zero_init=zero_init)
    if is_factory_name(name):
        return import_target(USER_RESOLVER)(name, request, dict(args or {}), seed)
    entry = BACKBONES.get(name, live=True)
    resolve = entry.load()
    if "factory" in entry.meta:  # an installed package's entry point
        ref = resolve(entry.meta["factory"], request, dict(args or {}), seed, catalog=dict(entry.meta))
        ref.name = name
        return ref
    catalog = entry.meta.get("catalog")
    target = catalog["target"] if catalog else entry.meta.get("name", name)
    ref = resolve(target, request, dict(args or {}), seed, catalog=catalog)
    ref.name = name
    ref.catalog = catalog
    return ref


def build_backbone(
    name: str,
    weights: str = "pretrained",
    args: dict[str, Any] | None = None,
    seed: int = 0,
    input_size: int | None = None,
) -> Backbone:
    """Resolve and build in one call."""
    return resolve_backbone(name, weights, args, seed).build(input_size)
