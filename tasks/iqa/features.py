"""Frozen multi-scale features for IQA, extracted once per (backbone, transform, split) and cached.

  - `nr`: every requested level of `forward_features` is global-average-pooled and the pooled
    vectors are concatenated: [N, sum C_l]. TOPIQ reads a ResNet's whole pyramid for the same reason:
    distortions live in the shallow levels, content in the deep ones.
  - `fr`: LPIPS-style distances between the distorted image and its reference. At each level l the
    maps are unit-normalised along channels at every position (x / (||x||_2 + 1e-10), as LPIPS'
    `normalize_tensor`), then the squared difference is averaged over positions, one number per
    channel: d_l,c = mean_hw (x̂_d - x̂_r)²_c. The [N, sum C_l] vector is what LPIPS' learned `lin`
    layers weight; here a linear regressor does (see heads.py).
Both go through the feature cache with keys that name the output kind and levels, next to the split's
fingerprint (which covers the scores, references and reference links). The reference and the
distorted image get the same eval transform, so their maps stay pixel-aligned.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from bob.backbones.base import Backbone
from bob.context import RunContext
from bob.features import split_batches
from bob.progress import Progress, progress_bar
from bob.tasks.iqa.data import IQASplit
from bob.transforms import eval_transform

NORM_EPS = 1e-10  # LPIPS' normalize_tensor


def unit_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)


def level_distances(dist: list[torch.Tensor], ref: list[torch.Tensor]) -> torch.Tensor:
    """[B, sum C_l]: per level and channel, the spatial mean of the squared normalised difference."""
    return torch.cat(
        [
            (unit_normalise(d) - unit_normalise(r)).pow(2).mean(dim=(2, 3))
            for d, r in zip(dist, ref, strict=True)
        ],
        dim=1,
    )


def pooled_levels(maps: list[torch.Tensor]) -> torch.Tensor:
    """[B, sum C_l]: global average pooling of each level, concatenated."""
    return torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1)


def _extract_nr(ctx: RunContext, split: IQASplit, levels: list[int], bar: Progress) -> np.ndarray:
    backbone = ctx.backbone().eval()
    rows = []
    with torch.inference_mode():
        for x in split_batches(split, ctx.data_config, ctx.batch_size, ctx.num_workers, ctx.device):
            rows.append(
                pooled_levels(backbone.forward_features(x.to(ctx.device), levels)).float().cpu().numpy()
            )
            bar.advance(len(x))
    return np.concatenate(rows)


def _extract_fr(ctx: RunContext, split: IQASplit, levels: list[int], bar: Progress) -> np.ndarray:
    """Distorted images in reference order, so each reference is forwarded about once."""
    backbone = ctx.backbone().eval()
    transform = eval_transform(ctx.data_config)
    order = np.argsort(split.ref_index, kind="stable")
    ordered = split.images.subset(order, split.split)
    ref_maps: OrderedDict[int, list[torch.Tensor]] = OrderedDict()

    def reference(r: int) -> list[torch.Tensor]:
        if r not in ref_maps:
            x = transform(split.references.image(r)).unsqueeze(0).to(ctx.device)
            ref_maps[r] = backbone.forward_features(x, levels)
            while len(ref_maps) > 8:
                ref_maps.popitem(last=False)
        return ref_maps[r]

    out = np.empty((len(split), 0), np.float32)
    pos = 0
    with torch.inference_mode():
        for x in split_batches(ordered, ctx.data_config, ctx.batch_size, ctx.num_workers, ctx.device):
            refs = split.ref_index[order[pos : pos + len(x)]]
            maps = backbone.forward_features(x.to(ctx.device), levels)
            ref_batch = [torch.cat([reference(int(r))[i] for r in refs]) for i in range(len(levels))]
            d = level_distances(maps, ref_batch).float().cpu().numpy()
            if out.shape[1] == 0:
                out = np.empty((len(split), d.shape[1]), np.float32)
            out[order[pos : pos + len(x)]] = d
            pos += len(x)
            bar.advance(len(x))
    return out


def iqa_features(ctx: RunContext, split: IQASplit, mode: str, levels: list[int] | None) -> np.ndarray:
    """[N, D] features of `split` for `mode` (nr | fr), row-aligned with the split; cached."""
    # Keyed on the levels as asked (resolving them needs the model, which a cache hit never builds).
    level_key: Any = list(levels) if levels is not None else "all"
    output = {"nr": "iqa-nr:gap-per-level", "fr": "iqa-fr:lpips-sqdiff-per-channel"}[mode]

    def extract(backbone: Backbone) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        use = backbone.resolve_levels(levels)
        with progress_bar(f"{mode} features {split.dataset}/{split.split}", len(split), "images") as bar:
            features = (_extract_nr if mode == "nr" else _extract_fr)(ctx, split, use, bar)
        return features, split.labels, {}

    key_spec = {
        "transform": ctx.data_config.to_dict(),
        "levels": level_key,
        "dataset": {k: v for k, v in split.describe().items() if k != "num_classes"},
        "dtype": "float32",
    }
    return ctx.cached(f"{split.split}:{mode}", key_spec, extract, description=output).features
