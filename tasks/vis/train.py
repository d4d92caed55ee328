"""Frozen per-frame backbone maps, the training of the neck + query head (in the one training loop,
tasks/common/train_loop.py), and prediction as YouTube-VIS results."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_util
from torch import nn
from torch.nn import functional as F

from bob.backbones.base import Backbone
from bob.errors import BackboneContractError
from bob.progress import progress_bar
from bob.tasks.common.pyramid import BackboneWithPyramid
from bob.tasks.common.train_loop import AfterStep, TrainLoop
from bob.tasks.vis import VisArgs
from bob.tasks.vis.data import VisSplit
from bob.tasks.vis.model import ClipQueryHead, clip_loss

MEMORY_STRIDE = 16


class FrameMaps:
    """The backbone's maps of every frame, computed once (the backbone is frozen), and the trainable neck."""

    def __init__(self, backbone: Backbone, dim: int, size: int, device: torch.device | str) -> None:
        self.body = BackboneWithPyramid(backbone, dim, frozen=True).to(device)
        self.size, self.device = size, device
        strides = list(self.body.plan.strides)
        self.mask_stride = strides[0]
        self.memory_stride = min(strides, key=lambda s: abs(s - MEMORY_STRIDE))
        self.mask_key, self.memory_key = str(0), str(strides.index(self.memory_stride))
        if size % max(strides) or size // self.mask_stride < 2:
            raise BackboneContractError(
                f"{backbone.meta.name}: pyramid strides {strides} do not fit image_size {size}."
            )
        config = backbone.data_config
        self.mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def extract(self, split: VisSplit, name: str) -> list[list[torch.Tensor]]:
        """Per video, the backbone's level maps of all its frames (each [T, C, h, w])."""
        backbone = self.body.backbone.eval()
        out = []
        with progress_bar(f"backbone maps ({name})", len(split), "videos") as bar:
            for i in range(len(split)):
                x = torch.from_numpy(np.array(split.frames(i))).to(self.device)
                x = x.permute(0, 3, 1, 2).float() / 255.0
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
                levels = backbone.forward_features((x - self.mean) / self.std, list(self.body.plan.levels))
                out.append([m.detach() for m in levels])
                bar.advance(1)
        return out

    def neck(self, levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory maps, mask maps) of one clip, each [T, C, h, w]."""
        maps = self.body.neck(OrderedDict((str(i), m) for i, m in enumerate(levels)))
        return maps[self.memory_key], maps[self.mask_key]


def _targets(split: VisSplit, index: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels [G], soft masks [G, T, side²]) of one video at the mask maps' resolution (area-averaged)."""
    labels, masks = split.masks(index)
    m = torch.from_numpy(masks).float()
    g, t = m.shape[:2]
    if g:
        m = F.interpolate(m.flatten(0, 1)[:, None], size=(side, side), mode="area")
    return torch.from_numpy(labels), m.reshape(g, t, side * side)


def _epoch_batches(rng: np.random.Generator, n: int, batch_size: int) -> list[np.ndarray]:
    """One epoch's clip indexes: a fresh permutation, cut into batches (the last may be short)."""
    order = rng.permutation(n)
    return [order[start : start + batch_size] for start in range(0, n, batch_size)]


def train_head(
    maps: FrameMaps,
    split: VisSplit,
    frame_maps: list[list[torch.Tensor]],
    args: VisArgs,
    num_classes: int,
    max_frames: int,
    seed: int,
) -> tuple[ClipQueryHead, dict[str, Any]]:
    """Train the neck and the head for `args.epochs` in the one training loop (AdamW, cosine decay per
    step); returns the head and {steps, first and last loss}."""
    device = maps.device
    head = ClipQueryHead(args.dim, num_classes, args.num_queries, args.decoder_layers, max_frames).to(device)
    side = maps.size // maps.mask_stride
    targets = [_targets(split, i, side) for i in range(len(split))]
    params = [p for p in (*maps.body.neck.parameters(), *head.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = -(-len(split) // args.batch_size)
    total = args.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    weights = (args.class_weight, args.dice_weight, args.mask_weight)
    rng = np.random.default_rng(seed)

    def loss_of(batch: np.ndarray) -> torch.Tensor:
        loss = torch.zeros((), device=device)
        for i in batch:  # clips differ in length on real data: one clip at a time, loss averaged
            memory, mask_maps = maps.neck(frame_maps[i])
            logits, masks = head(memory[None], mask_maps[None])
            labels, target = (v.to(device) for v in targets[i])
            loss = loss + clip_loss(
                logits[0], masks[0].flatten(2), labels, target, weights, args.no_object_weight
            )
        return loss / len(batch)

    loop = TrainLoop(
        nn.ModuleList([maps.body.neck, head]),  # the backbone stays frozen, in eval mode
        optimizer,
        loss_of,
        lambda epoch: _epoch_batches(rng, len(split), args.batch_size),
        device=device,
        epochs=args.epochs,
        hooks=[AfterStep(lambda _: schedule.step())],
        what="vis head",
        hint="try a lower lr",
        total_steps=total,
    ).run()
    losses = loop.losses
    return head, {"steps": total, "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4)}


@torch.no_grad()
def predict(
    maps: FrameMaps,
    head: ClipQueryHead,
    split: VisSplit,
    frame_maps: list[list[torch.Tensor]],
    threshold: float,
) -> list[dict[str, Any]]:
    """One YouTube-VIS result per query and test video: best class, its probability, per-frame RLE masks."""
    maps.body.neck.eval()
    head.eval()
    results = []
    with progress_bar("predicting tracks", len(split), "videos") as bar:
        for i in range(len(split)):
            t, h, w = split.sizes[i]
            memory, mask_maps = maps.neck(frame_maps[i])
            logits, masks = head(memory[None], mask_maps[None])
            probs = logits[0].softmax(-1)[:, :-1]
            scores, cats = probs.max(-1)
            up = (
                F.interpolate(masks[0], size=(h, w), mode="bilinear", align_corners=False).sigmoid()
                > threshold
            )
            up = up.cpu().numpy()
            for q in range(len(scores)):
                segs = []
                for f in range(t):
                    if up[q, f].any():
                        rle = mask_util.encode(np.asfortranarray(up[q, f].astype(np.uint8)))
                        segs.append({"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")})
                    else:
                        segs.append(None)
                if any(s is not None for s in segs):
                    results.append(
                        {
                            "video_id": i + 1,
                            "category_id": int(cats[q]) + 1,
                            "score": float(scores[q]),
                            "segmentations": segs,
                        }
                    )
            bar.advance(1)
    return results
