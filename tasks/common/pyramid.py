"""Any bob backbone → a feature pyramid at strides 4, 8, 16, 32 (+ a stride-64 pool level): the dense suites' neck.

The pyramid is fed by the contract's `forward_features(x, levels)` and `feature_info`:
  - backbones with several strides (CNNs, Swin, ConvNeXt) give their last level at each of the
    strides 4, 8, 16, 32 that they have to torchvision's `FeaturePyramidNetwork` (top-down + lateral);
  - plain ViTs (every level at one stride) give their last block to a ViTDet simple feature pyramid:
    deconv ×4, deconv ×2, identity and max-pool ×½ of that one map, each followed by a 1×1 and a
    3×3 conv with LayerNorm (Li et al., 2022) → strides 4, 8, 16, 32.
Both add a stride-64 `pool` level (`LastLevelMaxPool`), like torchvision's and detectron2's FPNs.
Backbones that only accept their build size (ViTs, Swin) get the batch zero-padded to `pad_to`² and
their maps cropped back to the image.

`frozen=True` keeps the backbone in eval mode without gradients; `norm_eval=True` keeps its
BatchNorm statistics fixed while fine-tuning (mmdetection's default), the affine terms still train.
Detection, open-vocab, segmentation, rvos and vis all build on `BackboneWithPyramid`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.convnext import LayerNorm2d
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from bob.backbones.base import Backbone
from bob.backbones.meta import FeatureInfo
from bob.errors import BackboneContractError, UsageError

PYRAMID_STRIDES = (4, 8, 16, 32)


@dataclass(frozen=True)
class PyramidPlan:
    """Which backbone levels feed the neck, at which strides, and which neck."""

    levels: tuple[int, ...]
    strides: tuple[int, ...]  # of the neck's outputs (before `pool`)
    kind: str  # "fpn" | "simple"

    def describe(self) -> dict[str, object]:
        return {
            "levels": list(self.levels),
            "strides": [*self.strides, 2 * self.strides[-1]],
            "neck": self.kind,
        }


def plan_pyramid(info: Sequence[FeatureInfo], name: str = "backbone") -> PyramidPlan:
    """FPN over the last level of each stride in 4..32, or a simple pyramid for a single-stride model."""
    if not info:
        raise BackboneContractError(f"{name}: feature_info is empty; detection needs dense feature maps.")
    strides = {f.stride for f in info}
    if len(strides) == 1:
        stride = info[-1].stride
        return PyramidPlan((len(info) - 1,), (stride // 4, stride // 2, stride, stride * 2), "simple")
    last = {f.stride: i for i, f in enumerate(info)}  # the deepest level at each stride
    chosen = [s for s in sorted(last) if s in PYRAMID_STRIDES] or [s for s in sorted(last) if s >= 4][:4]
    if not chosen:
        raise BackboneContractError(
            f"{name}: no feature level with stride >= 4 (strides: {sorted(strides)})."
        )
    return PyramidPlan(tuple(last[s] for s in chosen), tuple(chosen), "fpn")


def _conv_ln(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), LayerNorm2d(cout))


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's neck: four scales of one stride-s map (s/4, s/2, s, 2s), then 1×1 and 3×3 convs."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        c = in_channels
        self.scales = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(c, c // 2, 2, 2),
                    LayerNorm2d(c // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(c // 2, c // 4, 2, 2),
                ),
                nn.ConvTranspose2d(c, c // 2, 2, 2),
                nn.Identity(),
                nn.MaxPool2d(2),
            ]
        )
        dims = (c // 4, c // 2, c, c)
        self.outputs = nn.ModuleList(
            [
                nn.Sequential(_conv_ln(d, out_channels, 1), _conv_ln(out_channels, out_channels, 3))
                for d in dims
            ]
        )
        self.top = LastLevelMaxPool()

    def forward(self, x: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        feature = list(x.values())[-1]
        maps = [out(scale(feature)) for scale, out in zip(self.scales, self.outputs, strict=True)]
        names = [str(i) for i in range(len(maps))]
        maps, names = self.top(maps, maps, names)
        return OrderedDict(zip(names, maps, strict=True))


def set_trainable(backbone: Backbone, frozen: bool, frozen_stages: int = 0) -> None:
    """Gradients for what `trainable()` names, unless `frozen`; none for the rest of the backbone, nor
    for the stem and the first `frozen_stages` stages (`stage_modules`)."""
    for p in backbone.parameters():
        p.requires_grad_(False)
    if not frozen:
        for p in backbone.trainable().parameters():
            p.requires_grad_(True)
        for module in stage_modules(backbone, frozen_stages):
            for p in module.parameters():
                p.requires_grad_(False)


def stage_modules(backbone: Backbone, stages: int) -> list[nn.Module]:
    """The stem and the first `stages` stages of a staged backbone, as mmdetection's `frozen_stages`
    counts them: stage k is the feature level at stride 4 * 2**(k-1); what is frozen is every module that
    runs before stage `stages + 1`'s module, i.e. the siblings registered before it and before each of
    its parents (ResNet: conv1, bn1, layer1 for 1; ConvNeXt: stem, stages.0). Empty for `stages` <= 0; a
    UsageError for a backbone without the levels to count."""
    if stages <= 0:
        return []
    by_stride = {info.stride: info.module for info in backbone.feature_info}
    needed = [4 * 2**k for k in range(stages + 1)]
    if any(s not in by_stride for s in needed):
        raise UsageError(
            f"{backbone.meta.name}: frozen_stages={stages} needs feature levels at strides {needed} "
            f"(the frozen stages, then a trained one); it has {sorted(by_stride)}."
        )
    modules = dict(backbone.named_modules())
    target = next(
        (n for n in modules if n and (n == by_stride[needed[-1]] or n.endswith("." + by_stride[needed[-1]]))),
        None,
    )
    if target is None:
        raise UsageError(f"{backbone.meta.name}: no module '{by_stride[needed[-1]]}' to count stages from.")
    frozen: list[nn.Module] = []
    parts = target.split(".")
    for depth in range(len(parts), 0, -1):
        parent, name = ".".join(parts[: depth - 1]), parts[depth - 1]
        for child_name, child in modules[parent].named_children():
            if child_name == name:
                break
            frozen.append(child)
    return frozen


def hold_backbone_mode(backbone: Backbone, frozen: bool, norm_eval: bool, frozen_stages: int = 0) -> None:
    """After `train()`: a frozen backbone stays in eval mode; with `norm_eval` its BatchNorms do; the
    frozen stem and stages stay in eval mode (mmdetection's `_freeze_stages`)."""
    if frozen:
        backbone.eval()
        return
    if norm_eval:
        for m in backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    for module in stage_modules(backbone, frozen_stages):
        module.eval()


class BackboneWithPyramid(nn.Module):
    """A bob backbone plus its neck: `forward(images) -> OrderedDict` of 256-channel maps, as torchvision wants."""

    def __init__(
        self,
        backbone: Backbone,
        out_channels: int = 256,
        frozen: bool = False,
        norm_eval: bool = True,
        pad_to: int | None = None,
        frozen_stages: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.frozen_stages = frozen_stages
        self.plan = plan_pyramid(backbone.feature_info, backbone.meta.name)
        self.frozen, self.norm_eval, self.pad_to = frozen, norm_eval, pad_to
        self.out_channels = out_channels
        channels = [backbone.feature_info[i].channels for i in self.plan.levels]
        if self.plan.kind == "simple":
            self.neck: nn.Module = SimpleFeaturePyramid(channels[0], out_channels)
        else:
            self.neck = FeaturePyramidNetwork(channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.feature_names = [str(i) for i in range(len(self.plan.strides))]
        set_trainable(backbone, frozen, frozen_stages)

    def train(self, mode: bool = True) -> BackboneWithPyramid:
        super().train(mode)
        hold_backbone_mode(self.backbone, self.frozen, self.norm_eval, self.frozen_stages)
        return self

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        if self.pad_to is not None and (h, w) != (self.pad_to, self.pad_to):
            x = nn.functional.pad(x, (0, self.pad_to - w, 0, self.pad_to - h))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            maps = self.backbone.forward_features(x, list(self.plan.levels))
        if self.pad_to is not None:
            maps = [
                m[..., : math.ceil(h / s), : math.ceil(w / s)]
                for m, s in zip(maps, self._level_strides(), strict=True)
            ]
        return self.neck(OrderedDict((str(i), m) for i, m in enumerate(maps)))

    def _level_strides(self) -> list[int]:
        return [self.backbone.feature_info[i].stride for i in self.plan.levels]


def accepts_any_size(backbone: Backbone, size: int) -> bool:
    """Whether the backbone runs on a non-square input (else batches are padded to its build size)."""
    probe = torch.zeros(1, 3, size, max(32, size - 32), device=next(backbone.parameters()).device)
    try:
        with torch.no_grad():
            backbone.eval().forward_features(probe, [-1])
    except (RuntimeError, AssertionError, ValueError):
        return False
    return True
