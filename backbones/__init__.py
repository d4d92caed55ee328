"""Backbone adapters: one module per family, answering one contract (see base.py).

    >>> from bob.backbones import resolve_backbone
    >>> ref = resolve_backbone("torchvision/mobilenet_v2", weights="pretrained")
    >>> model = ref.build()          # a bob.backbones.base.Backbone
    >>> model.forward_pooled(x)      # [B, D]

Importing this package is cheap: adapters (and torch) load only when a backbone is resolved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bob.backbones.catalog import BACKBONES

if TYPE_CHECKING:
    from bob.backbones.base import Backbone, BackboneRef

__all__ = ["BACKBONES", "build_backbone", "resolve_backbone"]


def resolve_backbone(
    name: str, weights: str = "pretrained", args: dict[str, Any] | None = None, seed: int = 0
) -> BackboneRef:
    """Resolve a backbone name to exact weights and transform without building the model."""
    from bob.weights import WeightsRequest

    entry = BACKBONES.get(name, live=True)
    resolve = entry.load()
    request = WeightsRequest.parse(weights)
    return resolve(entry.meta.get("name", name), request, dict(args or {}), seed)


def build_backbone(
    name: str,
    weights: str = "pretrained",
    args: dict[str, Any] | None = None,
    seed: int = 0,
    input_size: int | None = None,
) -> Backbone:
    """Resolve and build in one call."""
    return resolve_backbone(name, weights, args, seed).build(input_size)
