"""Composite backbones (CBNetV2, Liang et al. 2022): `composite(<backbone>)`.

Two copies of one staged backbone, an assisting one and a lead one, start from the same weights. The
assisting backbone runs first; its feature maps then flow into the lead's stages through composite
connections, Dense Higher-Level Composition (DHLC): the input of the lead's level `l` (every level
after the first) gets

    Σ_{i ≥ l}  upsample(BN(conv1x1(assist_i)))

resized (nearest) to that input's spatial size and projected to its channels. The lead's outputs
are the composite's outputs, so `forward_pooled`, `forward_features` and `feature_info` follow the
usual contract and the detection and segmentation suites run on a composite unchanged.

Where the composition enters: the input of the module that produces each feature level, found by
the name in `feature_info` — a whole stage for timm's staged models (ResNet `layer2`, ConvNeXt
`stages.1`), the last block of each stride group for backbones whose levels come from bob's probe
(torchvision). The composition needs NCHW maps at those inputs; transformers whose blocks take
tokens are refused with a clear error.

Choices (named in the result's backbone args and the docs):
  - each connection's BatchNorm starts with γ = 0 (`zero_init=True`), so an untrained composite
    computes exactly the single lead backbone and pretrained features are intact at step 0;
  - the lead keeps its own stem and first level (CBNetV2's code shares them with the assistant,
    `cb_del_stages=1`), and there is no assisting-backbone supervision loss (a detector-side option
    in CBNetV2).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bob.backbones.base import Backbone, BackboneRef
from bob.backbones.catalog import composite_inner
from bob.errors import BackboneContractError, UsageError

PROBE_SIZE = 64


def _find_module(backbone: nn.Module, name: str) -> tuple[str, nn.Module]:
    """The submodule named `name`, relative to the backbone or to any of its wrapped models."""
    if not name:
        raise KeyError(name)
    matches = [(n, m) for n, m in backbone.named_modules() if n == name or n.endswith("." + name)]
    if not matches:
        raise KeyError(name)
    return min(matches, key=lambda nm: len(nm[0]))


def _after(name: str, module: nn.Module, previous: str) -> tuple[str, nn.Module]:
    """A level's module that contains the previous level's (a probe's whole `features` Sequential)
    would take the image as input; its last child is the block that produces the level."""
    while previous.startswith(name + ".") and len(list(module.children())) > 0:
        child_name, module = list(module.named_children())[-1]
        name = f"{name}.{child_name}"
    return name, module


class _Connection(nn.Module):
    """conv1x1 + BN from one assisting level to one lead input; resized in `forward`."""

    def __init__(self, in_channels: int, out_channels: int, zero_init: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        if zero_init:
            nn.init.zeros_(self.norm.weight)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.norm(self.proj(x)), size=size, mode="nearest")


class CompositeBackbone(Backbone):
    """Assisting + lead copies of one backbone with DHLC composite connections into the lead."""

    def __init__(self, assist: Backbone, lead: Backbone, name: str, zero_init: bool = True) -> None:
        n = len(assist.feature_info)
        if n < 2:
            raise BackboneContractError(
                f"{name}: a composite needs a backbone with at least two feature levels to connect; "
                f"{assist.meta.name} has {n}."
            )
        meta = replace(
            assist.meta,
            name=name,
            resolved_name=f"composite({assist.meta.resolved_name})",
            adapter=f"composite+{assist.meta.adapter}",
            architecture=f"composite({assist.meta.architecture})",
        )
        super().__init__(meta, assist.data_config, assist.feature_info)
        self.assist, self.lead = assist, lead
        self._targets = self._lead_targets(lead)
        inputs = self._probe_inputs()
        # connections[l][j]: from assisting level l + j (≥ l) into the input of lead level l
        self.connections = nn.ModuleDict(
            {
                str(level): nn.ModuleList(
                    _Connection(self.feature_info[i].channels, inputs[level], zero_init)
                    for i in range(level, n)
                )
                for level in range(1, n)
            }
        )
        self._assist_maps: list[torch.Tensor] | None = None
        for level, module in self._targets.items():
            module.register_forward_pre_hook(self._hook(level))
        self.meta.params = sum(p.numel() for p in self.parameters())

    def _lead_targets(self, lead: Backbone) -> dict[int, nn.Module]:
        targets = {}
        previous = _find_module(lead, lead.feature_info[0].module)[0] if lead.feature_info[0].module else ""
        for level, info in enumerate(lead.feature_info[1:], start=1):
            try:
                name, module = _after(*_find_module(lead, info.module), previous)
                targets[level], previous = module, name
            except KeyError:
                raise BackboneContractError(
                    f"{self.meta.name}: feature level {level} of {lead.meta.name} names module "
                    f"'{info.module}', which the model does not have; a composite needs every level "
                    "tied to a named module (feature_info[i].module)."
                ) from None
        return targets

    def _probe_inputs(self) -> dict[int, int]:
        """Channels of the tensor entering each target module, from one pass on a small image."""
        seen: dict[int, tuple[int, ...]] = {}

        def record(level: int):
            def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
                first = args[0] if args else None
                seen.setdefault(level, tuple(first.shape) if isinstance(first, torch.Tensor) else ())

            return hook

        handles = [module.register_forward_pre_hook(record(level)) for level, module in self._targets.items()]
        size = self.data_config.input_size if self.data_config.input_size <= 256 else PROBE_SIZE
        was_training = self.lead.training
        try:
            self.lead.eval()
            with torch.no_grad():
                self.lead.forward_features(torch.zeros(1, 3, size, size))
        finally:
            self.lead.train(was_training)
            for handle in handles:
                handle.remove()
        out = {}
        for level in self._targets:
            shape = seen.get(level)
            if shape is None or len(shape) != 4:
                got = "was never called" if shape is None else f"takes a tensor of shape {list(shape)}"
                raise BackboneContractError(
                    f"{self.meta.name}: the module of feature level {level} "
                    f"('{self.feature_info[level].module}') {got}; composite connections need NCHW maps "
                    "at each level's input (CNNs and ConvNeXt-style stages; not token-based transformers)."
                )
            out[level] = int(shape[1])
        return out

    def _hook(self, level: int):
        def add_composite(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if self._assist_maps is None:
                return None
            x = args[0]
            size = (int(x.shape[-2]), int(x.shape[-1]))
            maps = self._assist_maps[level:]
            extra = sum(conn(m, size) for conn, m in zip(self.connections[str(level)], maps, strict=True))
            return (x + extra, *args[1:])

        return add_composite

    def _with_assist(self, x: torch.Tensor, run):
        self._assist_maps = self.assist.forward_features(x)
        try:
            return run()
        finally:
            self._assist_maps = None

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self._with_assist(x, lambda: self.lead.forward_pooled(x))

    def forward_features(self, x: torch.Tensor, levels: Sequence[int] | None = None) -> list[torch.Tensor]:
        indices = self.resolve_levels(levels)
        return self._with_assist(x, lambda: self.lead.forward_features(x, indices))


def resolve(name: str, inner_ref: BackboneRef, zero_init: bool = True) -> BackboneRef:
    """Wrap the resolved inner backbone; the composite's identity is the inner one's plus its own."""
    if composite_inner(inner_ref.name) is not None:
        raise UsageError(f"{name}: composites of composites are not supported; compose a plain backbone.")

    def build(ref: BackboneRef, input_size: int | None) -> Backbone:
        assist = inner_ref.build(input_size)
        lead = copy.deepcopy(assist)
        return CompositeBackbone(assist, lead, ref.name, zero_init=zero_init)

    return BackboneRef(
        name=name,
        resolved_name=f"composite({inner_ref.resolved_name})",
        adapter=f"composite+{inner_ref.adapter}",
        weights=inner_ref.weights,
        data_config=inner_ref.data_config,
        args={**inner_ref.args, "composite": {"connections": "dhlc", "zero_init": zero_init}},
        library_version=inner_ref.library_version,
        builder=build,
        catalog=None,
        text_tower=False,  # the composite is a vision trunk; its lead's text tower (if any) is not wired
    )
