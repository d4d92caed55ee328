"""Optimizer parameter groups with layer-wise learning-rate decay (BEiT / MAE / BoB fine-tuning).

A parameter at depth `i` of `L` layers trains at `lr · decay^(L − 1 − i)`: the classifier head and
the top of the backbone at the full rate, the stem at the smallest. Each group carries an
`lr_scale`, which timm's schedulers multiply into the scheduled rate.

Depth comes from one of two groupings, and the caller records which:
  - `timm group_matcher`: timm's own `param_groups_layer_decay`, for models that declare a
    `group_matcher` (every timm architecture bob wraps);
  - `feature_info stages`: for everything else, the backbone's feature levels in order. Walking the
    parameters in registration order, a parameter's depth is the number of feature levels whose
    last parameter comes before it (levels that own no parameters, such as a ReLU, are skipped).
Weight decay follows timm's rule in both: none on biases, norms and other 1-D parameters, nor on
what the model lists in `no_weight_decay()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timm.optim import param_groups_layer_decay
from torch import nn

from bob.backbones.base import Backbone


@dataclass
class ParamGroups:
    groups: list[dict[str, Any]]
    grouping: str  # "timm group_matcher" | "feature_info stages"
    num_layers: int  # distinct depths (lr scales) in the backbone, the head's included


def layer_decay_groups(
    backbone: Backbone, head: nn.Module, weight_decay: float, layer_decay: float
) -> ParamGroups:
    """Groups for every trainable parameter of `backbone.trainable()` plus `head` (scale 1)."""
    model = backbone.trainable()
    if hasattr(model, "group_matcher"):
        no_wd = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
        groups = param_groups_layer_decay(
            model, weight_decay=weight_decay, no_weight_decay_list=no_wd, layer_decay=layer_decay
        )
        num_layers = len({g["lr_scale"] for g in groups}) if layer_decay != 1.0 else 1
        grouping = "timm group_matcher"
    else:
        groups, num_layers = _stage_groups(backbone, model, weight_decay, layer_decay)
        grouping = "feature_info stages"
    groups = groups + _plain_groups(head, weight_decay, lr_scale=1.0)
    _check_coverage(groups, model, head)
    return ParamGroups(groups, grouping, num_layers)


def stage_depths(backbone: Backbone, model: nn.Module) -> dict[str, int]:
    """Depth of every trainable parameter of `model` by the backbone's feature levels (see module doc)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    position = {n: i for i, n in enumerate(names)}
    ends = set()
    for level in backbone.feature_info:
        owned = [position[n] for n in names if level.module and n.startswith(level.module + ".")]
        if owned:
            ends.add(max(owned))
    ends_sorted = sorted(ends)
    return {n: sum(1 for e in ends_sorted if e < position[n]) for n in names}


def _stage_groups(
    backbone: Backbone, model: nn.Module, weight_decay: float, layer_decay: float
) -> tuple[list[dict[str, Any]], int]:
    depths = stage_depths(backbone, model)
    num_layers = max(depths.values(), default=0) + 1
    buckets: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth, decay = depths[name], param.ndim > 1
        group = buckets.setdefault(
            (depth, decay),
            {
                "lr_scale": layer_decay ** (num_layers - 1 - depth),
                "weight_decay": weight_decay if decay else 0.0,
                "params": [],
            },
        )
        group["params"].append(param)
    return list(buckets.values()), num_layers


def _plain_groups(module: nn.Module, weight_decay: float, lr_scale: float) -> list[dict[str, Any]]:
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in module.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"lr_scale": lr_scale, "weight_decay": weight_decay, "params": decay}]
    return [*groups, {"lr_scale": lr_scale, "weight_decay": 0.0, "params": rest}] if rest else groups


def _check_coverage(groups: list[dict[str, Any]], *modules: nn.Module) -> None:
    """Every trainable parameter in exactly one group: a parameter left out would silently stay frozen."""
    grouped = [id(p) for g in groups for p in g["params"]]
    wanted = {id(p) for m in modules for p in m.parameters() if p.requires_grad}
    if len(grouped) != len(set(grouped)) or set(grouped) != wanted:
        raise RuntimeError("layer-decay grouping does not cover each trainable parameter exactly once")
