"""Any bob backbone → decode head → per-pixel class logits at the input resolution.

Three heads, chosen by the `head` task arg:
  - `fpn`: Semantic FPN (Kirillov et al., 2019; mmseg's `FPNHead`, PVT's ADE20K head). The
    backbone's pyramid comes from the shared `BackboneWithPyramid` (tasks/common/pyramid.py):
    torchvision's FPN over the deepest level at strides 4..32 (CNNs, ConvNeXt, Swin), or ViTDet's
    simple pyramid on the last block of a plain ViT. Each level goes through log2(stride/4) blocks of 3×3 conv + BN + ReLU
    (at least one), each followed by ×2 bilinear upsampling until stride 4; the levels are summed,
    then dropout 0.1 and a 1×1 conv give the logits at stride 4.
  - `fcn`: mmseg's `FCNHead` on the last feature level (PixPro's / MoCo's Cityscapes head): two
    3×3 conv + BN + ReLU, the input concatenated back and fused by a third, dropout 0.1, 1×1 conv.
  - `linear`: BatchNorm + 1×1 conv on the last level (the linear protocol of DINOv2 and others).
Logits are upsampled bilinearly (align_corners=False, as mmseg) to the input and cropped to the
image. Images come in as 0..1 floats and are normalised here with the backbone's own mean and std;
batches are zero-padded (after normalisation, like mmseg) to a multiple of 32, or, for backbones that
only run at their build size (ViTs), to `pad_to`² with the maps cropped back to the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bob.backbones.base import Backbone
from bob.tasks.common.pyramid import BackboneWithPyramid, hold_backbone_mode, set_trainable
from bob.tasks.segmentation import HEADS

SIZE_DIVISOR = 32


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SemanticFPNHead(nn.Module):
    """mmseg `FPNHead`: per-level conv + ×2 upsampling towards the finest stride, summed, 1×1 classifier."""

    def __init__(
        self,
        in_channels: int,
        strides: tuple[int, ...],
        channels: int,
        num_classes: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.strides = strides
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            steps = max(1, int(math.log2(stride) - math.log2(strides[0])))
            layers: list[nn.Module] = []
            for k in range(steps):
                layers.append(_conv_bn_relu(in_channels if k == 0 else channels, channels))
                if stride != strides[0]:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](maps[0])
        for head, feature in zip(self.scale_heads[1:], maps[1:], strict=True):
            up = head(feature)
            if up.shape[-2:] != out.shape[-2:]:  # odd sizes: ceil'd strides do not double exactly
                up = F.interpolate(up, size=out.shape[-2:], mode="bilinear", align_corners=False)
            out = out + up
        return self.classifier(self.dropout(out))


class FCNHead(nn.Module):
    """mmseg `FCNHead` (num_convs=2, concat_input=True, kernel 3, dropout 0.1)."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.convs = nn.Sequential(_conv_bn_relu(in_channels, channels), _conv_bn_relu(channels, channels))
        self.fuse = _conv_bn_relu(in_channels + channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        x = maps[-1]
        out = self.fuse(torch.cat([x, self.convs(x)], dim=1))
        return self.classifier(self.dropout(out))


class LinearHead(nn.Module):
    """BatchNorm + 1×1 conv: a per-pixel linear classifier on the last level."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.norm(maps[-1]))


class LastLevel(nn.Module):
    """The backbone's last feature level, with the same frozen / norm_eval / pad_to semantics as
    `BackboneWithPyramid`."""

    def __init__(self, backbone: Backbone, frozen: bool, norm_eval: bool, pad_to: int | None) -> None:
        super().__init__()
        self.backbone, self.frozen, self.norm_eval, self.pad_to = backbone, frozen, norm_eval, pad_to
        self.stride = backbone.feature_info[-1].stride
        self.channels = backbone.feature_info[-1].channels
        set_trainable(backbone, frozen)

    def train(self, mode: bool = True) -> LastLevel:
        super().train(mode)
        hold_backbone_mode(self.backbone, self.frozen, self.norm_eval)
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        if self.pad_to is not None and (h, w) != (self.pad_to, self.pad_to):
            x = F.pad(x, (0, self.pad_to - w, 0, self.pad_to - h))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            (feature,) = self.backbone.forward_features(x, [-1])
        return [feature[..., : math.ceil(h / self.stride), : math.ceil(w / self.stride)]]


class Segmenter(nn.Module):
    """Backbone + head: `forward(images in 0..1, [B,3,H,W]) -> logits [B,K,H,W]`."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        head: str = "fpn",
        fpn_channels: int = 256,
        head_channels: int = 128,
        frozen: bool = False,
        norm_eval: bool = False,
        pad_to: int | None = None,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.head_kind, self.pad_to = head, pad_to
        if head == "fpn":
            self.body: nn.Module = BackboneWithPyramid(
                backbone, fpn_channels, frozen=frozen, norm_eval=norm_eval, pad_to=pad_to
            )
            self.strides = tuple(self.body.plan.strides)
            self.head: nn.Module = SemanticFPNHead(fpn_channels, self.strides, head_channels, num_classes)
        else:
            self.body = LastLevel(backbone, frozen=frozen, norm_eval=norm_eval, pad_to=pad_to)
            self.strides = (self.body.stride,)
            channels = self.body.channels
            self.head = (
                FCNHead(channels, head_channels, num_classes)
                if head == "fcn"
                else LinearHead(channels, num_classes)
            )
        config = backbone.data_config
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"head": self.head_kind, "head_strides": list(self.strides)}
        if self.head_kind == "fpn":
            out["pyramid"] = self.body.plan.describe()  # type: ignore[union-attr]
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        x = (images - self.mean) / self.std
        if self.pad_to is None:
            ph, pw = (-h) % SIZE_DIVISOR, (-w) % SIZE_DIVISOR
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph))
        maps = self.body(x)
        if isinstance(maps, dict):  # the pyramid's levels, finest first, without its extra `pool`
            maps = list(maps.values())[: len(self.strides)]
        logits = self.head(maps)
        size = (logits.shape[-2] * self.strides[0], logits.shape[-1] * self.strides[0])
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits[..., :h, :w]
