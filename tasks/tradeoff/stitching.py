"""Stitchable networks (SN-Net, Pan et al. CVPR 2023): two ViTs of one family joined at chosen blocks.

A stitch `(i, j)` of a front anchor A and an end anchor B runs A's embedding and blocks 0..i, one
linear **stitching layer** (A's width → B's width, on every token), then B's blocks j+1..L-1, B's
final norm and B's pooling (class token or average, as B pools). Stitches are enumerated as SN-Net's
paired sliding windows: windows of `kernel` consecutive block indices every `stride` blocks, and
every (i, j) pair inside a window (kernel 2, stride 1 → 34 stitches for two 12-block ViTs).

The stitching layer is initialised by least squares (SN-Net's `ps_inv`): on a few images, the
tokens after A's block i are regressed onto the tokens after B's block j, `W = lstsq([X, 1], Y)`.
Training the layer briefly afterwards (`stitch_steps`) is train.py's work. This module needs timm's
`VisionTransformer` (DeiT, ViT, and their kin) for its block-wise API.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from bob.backbones.base import Backbone
from bob.errors import UsageError


def paired_stitches(depth_front: int, depth_end: int, kernel: int, stride: int) -> list[tuple[int, int]]:
    """SN-Net's sliding-window pairs (i, j): every pair of block indices inside one window."""
    if kernel < 1 or stride < 1:
        raise UsageError(f"stitch_kernel and stitch_stride must be positive, got {kernel} and {stride}.")
    depth = min(depth_front, depth_end)
    if kernel > depth:
        raise UsageError(f"stitch_kernel {kernel} is larger than the anchors' depth {depth}.")
    pairs: set[tuple[int, int]] = set()
    for start in range(0, depth - kernel + 1, stride):
        window = range(start, start + kernel)
        pairs.update((i, j) for i in window for j in window)
    return sorted(pairs)


def vit_trunk(backbone: Backbone) -> nn.Module:
    """The timm VisionTransformer inside a bob backbone, or a usage error naming the backbone."""
    model = getattr(backbone, "model", None)
    needed = ("patch_embed", "_pos_embed", "blocks", "norm", "forward_head")
    if model is None or not all(hasattr(model, a) for a in needed):
        raise UsageError(
            f"{backbone.meta.name}: stitching needs a timm VisionTransformer (DeiT, ViT…) with a block-wise "
            "API (patch_embed, blocks, norm, forward_head); pick anchors such as timm/deit_tiny_patch16_224."
        )
    return model


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = model._pos_embed(model.patch_embed(x))
    return model.norm_pre(model.patch_drop(x))


class StitchedViT(nn.Module):
    """Front anchor blocks 0..i → stitching Linear → end anchor blocks j+1.. → end's norm and pooling."""

    def __init__(self, front: nn.Module, end: nn.Module, i: int, j: int, layer: nn.Linear, name: str) -> None:
        super().__init__()
        self.front, self.end, self.i, self.j, self.layer = front, end, i, j, layer
        self.meta = SimpleNamespace(name=name)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = self.front.blocks[: self.i + 1](_embed(self.front, x))
        x = self.end.blocks[self.j + 1 :](self.layer(x))
        return self.end.forward_head(self.end.norm(x), pre_logits=True)

    forward = forward_pooled


class AnchorViT(nn.Module):
    """One anchor through the same block-wise path (its pooled features, as the stitches compute them)."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model, self.meta = model, SimpleNamespace(name=name)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = self.model.blocks(_embed(self.model, x))
        return self.model.forward_head(self.model.norm(x), pre_logits=True)

    forward = forward_pooled


@torch.no_grad()
def block_tokens(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Tokens after every block of `model` for images `x`: a list of [B, T, D]."""
    out, h = [], _embed(model, x)
    for block in model.blocks:
        h = block(h)
        out.append(h)
    return out


def least_squares_layer(x: torch.Tensor, y: torch.Tensor) -> nn.Linear:
    """The Linear (with bias) minimising ||[x, 1] W - y||² over all tokens; x: [N, T, Dx], y: [N, T, Dy]."""
    if x.shape[:2] != y.shape[:2]:
        raise UsageError(
            f"stitching needs the same token count in both anchors, got {x.shape[1]} and {y.shape[1]} "
            "(same patch size and input resolution)."
        )
    a = x.reshape(-1, x.shape[-1]).double()
    a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], dim=1)
    sol = torch.linalg.lstsq(a, y.reshape(-1, y.shape[-1]).double()).solution  # [Dx + 1, Dy]
    layer = nn.Linear(x.shape[-1], y.shape[-1])
    layer.weight.data.copy_(sol[:-1].T.float())
    layer.bias.data.copy_(sol[-1].float())
    return layer
