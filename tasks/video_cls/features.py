"""Per-frame backbone features of video clips: the test views (clips × crops) and random training clips.

Frames go through `forward_pooled` in batches of `frame_batch`; a clip's feature is then its [T, D]
stack of frame features. Test views share frames (ten overlapping clips × three crops of the same
frames), so each video's frames are resized once and every distinct (crop, frame) is run through the
backbone once; the views are gathered from those rows afterwards (`gather_views`).

Spatial transform (both paths): frames resized so the short side is the crop size (bilinear with
antialias), cropped, scaled to [0, 1] and normalised with the backbone's mean / std. Training clips
use one random resized crop per clip, the same for all its frames (CVRL: area 0.3–1, aspect 0.5–2),
and no flip: a mirrored clip of "moving right" would be "moving left".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from bob.backbones.base import Backbone, check_pooled
from bob.data.video import (
    VideoSplit,
    Views,
    clip_frame_indices,
    crop_offsets,
    random_clip_start,
    uniform_clip_starts,
)
from bob.progress import Progress

RRC_SCALE = (0.3, 1.0)
RRC_RATIO = (0.5, 2.0)


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut and framed; part of every cache key."""

    clip_len: int
    stride: int
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "resize": "short side to size, bilinear antialias", "hflip": False}


def _to_float(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)


def _normalise(x: torch.Tensor, spec: ClipSpec) -> torch.Tensor:
    return F.normalize(x, list(spec.mean), list(spec.std))


def eval_clip_indices(num_frames: int, spec: ClipSpec, views: Views) -> np.ndarray:
    """[clips, T] frame indices of the uniformly spaced test clips."""
    starts = uniform_clip_starts(num_frames, spec.clip_len, spec.stride, views.clips)
    return np.stack([clip_frame_indices(s, num_frames, spec.clip_len, spec.stride) for s in starts])


def eval_crops(frames: np.ndarray, spec: ClipSpec, num_crops: int) -> torch.Tensor:
    """[crops, n, 3, S, S] normalised crops of every frame in `frames` (uint8 [n, H, W, 3])."""
    x = F.resize(_to_float(frames), spec.size, antialias=True)
    h, w = x.shape[-2:]
    crops = [
        x[..., top : top + spec.size, left : left + spec.size]
        for top, left in crop_offsets(h, w, spec.size, num_crops)
    ]
    return _normalise(torch.stack(crops), spec)


def random_train_clip(frames: np.ndarray, spec: ClipSpec, rng: np.random.Generator) -> torch.Tensor:
    """One random clip [T, 3, S, S]: random start, one random resized crop for all its frames.

    The crop box comes from torchvision's RandomResizedCrop.get_params, which draws from torch's
    global generator: callers seed it (see `train_view_features`).
    """
    start = random_clip_start(len(frames), spec.clip_len, spec.stride, rng)
    x = _to_float(frames[clip_frame_indices(start, len(frames), spec.clip_len, spec.stride)])
    top, left, h, w = RandomResizedCrop.get_params(x, list(RRC_SCALE), list(RRC_RATIO))
    x = F.resized_crop(x, top, left, h, w, [spec.size, spec.size], antialias=True)
    return _normalise(x, spec)


def _forward_frames(
    backbone: Backbone, x: torch.Tensor, frame_batch: int, device: torch.device | str
) -> torch.Tensor:
    """forward_pooled over [n, 3, S, S] in chunks; returns [n, D] on the CPU."""
    outs = []
    for i in range(0, len(x), frame_batch):
        chunk = x[i : i + frame_batch].to(device)
        feats = backbone.forward_pooled(chunk)
        check_pooled(backbone.meta.name, feats, len(chunk))
        outs.append(feats.float().cpu())
    return torch.cat(outs)


def eval_view_features(
    backbone: Backbone,
    split: VideoSplit,
    spec: ClipSpec,
    views: Views,
    frame_batch: int,
    device: torch.device | str,
    bar: Progress,
    videos: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of every distinct (crop, frame) the test views use, as rows [Σ crops·U_i, D] in the
    order video, crop, frame; and each video's frame count (what `gather_views` needs to cut them).
    `videos`: the videos to score, in that order (a data-parallel rank's shard); all by default."""
    rows, counts = [], []
    backbone.eval()
    with torch.inference_mode():
        for i in range(len(split)) if videos is None else videos:
            frames = split.frames(i)
            union = np.unique(eval_clip_indices(len(frames), spec, views))
            crops = eval_crops(frames[union], spec, views.crops)  # [crops, U, 3, S, S]
            feats = _forward_frames(backbone, crops.flatten(0, 1), frame_batch, device)
            rows.append(feats.numpy())
            counts.append(len(frames))
            bar.advance(1)
    return np.concatenate(rows), np.asarray(counts, np.int64)


def gather_views(
    rows: np.ndarray, frame_counts: np.ndarray, spec: ClipSpec, views: Views
) -> Iterator[np.ndarray]:
    """Per video, its views' per-frame features [crops·clips, T, D] (crop-major) from `eval_view_features` rows."""
    pos = 0
    for count in frame_counts:
        idx = eval_clip_indices(int(count), spec, views)
        union = np.unique(idx)
        block = rows[pos : pos + views.crops * len(union)].reshape(views.crops, len(union), -1)
        pos += views.crops * len(union)
        yield block[:, np.searchsorted(union, idx)].reshape(views.crops * views.clips, spec.clip_len, -1)
    if pos != len(rows):
        raise RuntimeError(f"view rows do not match the frame counts ({pos} used of {len(rows)})")


def train_view_features(
    backbone: Backbone,
    split: VideoSplit,
    spec: ClipSpec,
    clips_per_video: int,
    seed: int,
    frame_batch: int,
    device: torch.device | str,
    bar: Progress,
) -> np.ndarray:
    """[N, K, T, D] features of K seeded random training clips per video."""
    out = []
    backbone.eval()
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        for i in range(len(split)):
            frames = split.frames(i)
            clips = torch.cat([random_train_clip(frames, spec, rng) for _ in range(clips_per_video)])
            feats = _forward_frames(backbone, clips, frame_batch, device)
            out.append(feats.reshape(clips_per_video, spec.clip_len, -1).numpy())
            bar.advance(1)
    return np.stack(out)
