"""Finding feature levels of a model that does not declare them, and capturing them with hooks.

One probe forward pass records, for every block-level module, the spatial size of its output; for
every stride the last module (in completion order) producing it becomes a level. Capturing then
hooks exactly those modules and stops the forward pass once the deepest requested level is done.
Used by the torchvision adapter and for users' plain `nn.Module`s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bob.backbones.meta import FeatureInfo

STRIDES = (2, 4, 8, 16, 32, 64)

# (module name, output) -> (stride, channels) when the output is a feature level, else None.
Accept = Callable[[str, Any, int], "tuple[int, int] | None"]


class _StopForward(Exception):
    """Raised by a hook once the deepest requested level is computed, to skip the rest."""


def block_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Children of the root or of a Sequential/ModuleList: blocks, not branches inside a block.

    Adaptive pools are excluded: their output size is fixed, so their "stride" depends on the input.
    """
    out = []
    for parent_name, parent in [("", model), *model.named_modules()]:
        if parent is not model and not isinstance(parent, (nn.Sequential, nn.ModuleList)):
            continue
        for child_name, child in parent.named_children():
            if isinstance(child, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                continue
            out.append((f"{parent_name}.{child_name}" if parent_name else child_name, child))
    return out


def nchw_level(name: str, out: Any, probe_size: int) -> tuple[int, int] | None:
    """A block output at most one dot deep whose height divides the input by a power of two.

    Valid-padding nets (Inception) are off by a few pixels, hence the 20% tolerance.
    """
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or name.count(".") > 1:
        return None
    ratio = probe_size / out.shape[2]
    stride = min(STRIDES, key=lambda s: abs(s - ratio))
    return (stride, int(out.shape[1])) if abs(stride - ratio) / stride <= 0.2 else None


@dataclass
class Levels:
    modules: list[nn.Module]
    info: list[FeatureInfo]


def find_levels(
    model: nn.Module, probe_size: int, accept: Accept = nchw_level, one_per_block: bool = False
) -> Levels:
    """Probe one forward pass of a zero image. With `one_per_block`, every accepted module is its own
    level (ViT blocks, which all share one stride); otherwise the last module per stride wins."""
    found: dict[Any, tuple[str, nn.Module, int, int]] = {}

    def record(name: str, module: nn.Module, out: Any) -> None:
        level = accept(name, out, probe_size)
        if level is not None:
            found[len(found) if one_per_block else level[0]] = (name, module, level[0], level[1])

    handles = [
        m.register_forward_hook(lambda mod, _i, out, name=name: record(name, mod, out))
        for name, m in block_modules(model)
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, probe_size, probe_size))
    finally:
        for h in handles:
            h.remove()
    keys = sorted(found)
    return Levels(
        [found[k][1] for k in keys],
        [FeatureInfo(channels=found[k][3], stride=found[k][2], module=found[k][0]) for k in keys],
    )


def capture(
    model: nn.Module,
    x: torch.Tensor,
    modules: Sequence[nn.Module],
    convert: Callable[[int, torch.Tensor], torch.Tensor] = lambda _i, out: out,
) -> list[torch.Tensor]:
    """Outputs of `modules` (in order) for input `x`; the pass stops after the last one needed."""
    wanted: dict[nn.Module, list[int]] = {}
    for i, module in enumerate(modules):
        wanted.setdefault(module, []).append(i)
    captured: dict[int, torch.Tensor] = {}

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        for i in wanted[module]:
            captured[i] = convert(i, output)
        if len(captured) == len(modules):
            raise _StopForward

    handles = [m.register_forward_hook(hook) for m in wanted]
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return [captured[i] for i in range(len(modules))]
