"""Training and inference of the referring head on an `RvosSplit`.

Frames are resized to `size`² and normalised with the backbone's mean and std. A frozen backbone's
levels are extracted once per video and reused by every step; a fine-tuned one runs every step.
Each step draws `batch_size` expressions, for each a window of `num_frames` consecutive frames
(ReferFormer samples 5 frames per clip); the target is the referred object's mask track. The steps
run in the one training loop (tasks/common/train_loop.py).
Inference decodes every frame of a video (in windows of `num_frames`), picks the query with the
highest mean score over the whole video and thresholds its upsampled mask at `mask_threshold`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from bob.progress import progress_bar
from bob.tasks.common.train_loop import TrainLoop
from bob.tasks.rvos.data import Expression, RvosSplit
from bob.tasks.rvos.metrics import j_and_f, track_scores
from bob.tasks.rvos.model import ReferringHead, best_query_masks, referring_loss


@dataclass(frozen=True)
class TrainConfig:
    iterations: int
    batch_size: int
    num_frames: int
    lr: float
    backbone_lr_mult: float
    weight_decay: float
    size: int


CACHE_BYTES = 2 * 1024**3  # frozen backbone levels kept in memory; beyond this they are recomputed


class VideoFrames:
    """Frames and object-id masks of a split at `size`², with cached backbone levels when frozen
    (up to `cache_bytes`: small sets are extracted once, large real sets are read window by window)."""

    def __init__(
        self,
        split: RvosSplit,
        model: ReferringHead,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.split, self.model, self.size, self.device = split, model, size, device
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self._levels: dict[int, list[torch.Tensor]] = {}
        self._free = cache_bytes

    def images(self, video: int, window: slice = slice(None)) -> torch.Tensor:
        x = torch.from_numpy(np.array(self.split.frames(video, window))).permute(0, 3, 1, 2).float() / 255
        x = F.interpolate(
            x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
        )
        return ((x - self.mean) / self.std).to(self.device)

    def targets(self, video: int, obj_id: int, window: slice = slice(None)) -> torch.Tensor:
        m = torch.from_numpy((self.split.masks(video, window) == obj_id).astype(np.float32))[:, None]
        return F.interpolate(m, size=(self.size, self.size), mode="nearest")[:, 0].to(self.device)

    def levels(self, video: int, window: slice) -> list[torch.Tensor]:
        if video in self._levels:
            return [m[window] for m in self._levels[video]]
        if not self.model.body.frozen or self._free <= 0:
            return self.model.backbone_maps(self.images(video, window))
        with torch.no_grad():
            maps = [m.detach() for m in self.model.backbone_maps(self.images(video))]
        self._free -= sum(m.numel() * m.element_size() for m in maps)
        self._levels[video] = maps
        return [m[window] for m in maps]

    def num_frames(self, video: int) -> int:
        return self.split.num_frames(video)


def _param_groups(model: ReferringHead, cfg: TrainConfig) -> list[dict[str, Any]]:
    backbone = [p for p in model.body.backbone.parameters() if p.requires_grad]
    ids = {id(p) for p in backbone}
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": head, "lr": cfg.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult})
    return groups


def _windows(data: VideoFrames, cfg: TrainConfig, seed: int) -> Iterator[list[tuple[Expression, slice]]]:
    """Endless training batches: `batch_size` expressions drawn with replacement, each with a random
    window of `num_frames` consecutive frames of its video (the whole video when shorter)."""
    rng = np.random.default_rng(seed)
    expressions = data.split.expressions
    while True:
        picks = []
        for i in rng.integers(len(expressions), size=cfg.batch_size):
            e = expressions[int(i)]
            total = data.num_frames(e.video)
            t = min(cfg.num_frames, total)
            start = int(rng.integers(total - t + 1))
            picks.append((e, slice(start, start + t)))
        yield picks


def train_head(
    model: ReferringHead, data: VideoFrames, text: dict[str, torch.Tensor], cfg: TrainConfig, seed: int
) -> dict[str, float]:
    """AdamW, constant learning rate, `cfg.iterations` steps of the one training loop; returns the
    first step's loss and the mean of the last 10% for the record."""
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def loss_of(picks: list[tuple[Expression, slice]]) -> tuple[torch.Tensor, dict[str, float]]:
        maps, texts, targets = [], [], []
        for e, window in picks:
            maps.append(data.levels(e.video, window))
            texts.append(text[e.text])
            targets.append(data.targets(e.video, e.obj_id, window))
        lengths = {len(t) for t in targets}
        if len(lengths) > 1:  # videos shorter than num_frames: train on the shortest window
            n = min(lengths)
            maps = [[m[:n] for m in v] for v in maps]
            targets = [t[:n] for t in targets]
        levels = [torch.cat([v[k] for v in maps]) for k in range(len(maps[0]))]
        scores, masks = model(levels, torch.stack(texts))
        return referring_loss(scores, masks, torch.stack(targets))

    loop = TrainLoop(
        model,
        opt,
        loss_of,
        _windows(data, cfg, seed),
        device=data.device,
        iterations=cfg.iterations,
        what="referring head",
        hint="lower lr",
        progress_unit="iters",
    ).run()
    history = loop.losses
    tail = history[-max(1, len(history) // 10) :]
    return {"loss_first": round(history[0], 4), "loss_last": round(float(np.mean(tail)), 4)}


@torch.no_grad()
def evaluate(
    model: ReferringHead,
    data: VideoFrames,
    text: dict[str, torch.Tensor],
    window: int,
    threshold: float,
    bound_th: float,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """J&F over every expression of the split; also per-expression scores for the record."""
    model.eval()
    per_object, rows = [], []
    with progress_bar("evaluating referring head", len(data.split.expressions), "expressions") as bar:
        for e in data.split.expressions:
            total = data.num_frames(e.video)
            scores, masks = [], []
            for start in range(0, total, window):
                levels = data.levels(e.video, slice(start, min(start + window, total)))
                s, m = model(levels, text[e.text][None])
                scores.append(s)
                masks.append(m)
            logits = best_query_masks(torch.cat(scores, 1), torch.cat(masks, 1))[0]  # [T, h, w]
            gt = data.split.masks(e.video) == e.obj_id
            up = F.interpolate(logits[:, None], size=gt.shape[-2:], mode="bilinear", align_corners=False)
            pred = (up[:, 0].sigmoid() > threshold).cpu().numpy()
            j, f = track_scores(gt, pred, bound_th)
            per_object.append((j, f))
            rows.append({"video": data.split.names[e.video], "expression": e.text, "j": j, "f": f})
            bar.advance(1)
    return j_and_f(per_object), rows
