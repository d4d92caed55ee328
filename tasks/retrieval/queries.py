"""Where a run's queries, database and ground truth come from: a retrieval dataset's own, or a
classification dataset turned into a class-as-relevance retrieval set (see the package docstring)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from bob.backbones.base import Backbone, BackboneRef
from bob.backbones.meta import DataConfig
from bob.context import RunContext
from bob.data.base import ImageSplit
from bob.data.relevance import RETRIEVAL_SPLIT, query_database_judgements
from bob.errors import UsageError
from bob.features import extract_pooled, pixel_batches
from bob.progress import progress_bar
from bob.tasks.retrieval import BOXED_QUERY_DATASETS, RetrievalArgs
from bob.tasks.retrieval.data import CroppedFileSplit
from bob.tasks.retrieval.metrics import QueryTruth
from bob.transforms import Normalizer

CLASS_LEVEL_ARGS = ("query_fraction", "max_per_class", "pool")  # meaningless on retrieval datasets

# BoB's retrieval transform (bob-retrieval main_ret.py): bicubic resize of the shorter side, centre
# crop, ImageNet statistics. The crop is 224 after a resize to 256, except for backbones whose own
# resolution is 384 (resize 400) or 448 (OpenAI CLIP RN50x64: resize 460, with CLIP's statistics).
# MiDaS (its two branches): 256 -> 256 and 400 -> 384, with mean/std 0.5.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
BOB_RESIZE = {224: 256, 384: 400, 448: 460}
BOB_MIDAS_RESIZE = {256: 256, 384: 400}
BOB_OWN_STATS = frozenset({448})  # the sizes where BoB kept the backbone's own mean/std (CLIP's)
# BoB's OxfordParisDataset shrinks every ROxford/RParis image to fit 224 px (PIL thumbnail) first.
BOB_THUMBNAIL = 224


def is_bob_midas(ref: BackboneRef) -> bool:
    """BoB's MiDaS encoder, as `with_protocol(ref, "bob")` resolves it (the hf adapter's timm SwinV2
    with its 1000-d head as native classifier; SAM, the adapter's other model, stays as it is)."""
    return ref.adapter == "hf" and ref.args.get("protocol") == "bob"


def bob_transform(own: DataConfig, midas: bool = False) -> DataConfig:
    """BoB's retrieval transform for a backbone whose own eval transform is `own`."""
    table = BOB_MIDAS_RESIZE if midas else BOB_RESIZE
    size = own.input_size if own.input_size in table else min(table)
    resize = table[size]
    crop_pct = size / resize
    while math.floor(size / crop_pct) < resize:  # floating point: make floor(size / crop_pct) == resize
        crop_pct = math.nextafter(crop_pct, 0.0)
    if midas:
        mean, std = HALF, HALF
    elif size in BOB_OWN_STATS:
        mean, std = own.mean, own.std
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return dataclasses.replace(
        own,
        input_size=size,
        crop_pct=crop_pct,
        interpolation="bicubic",
        crop_mode="center",
        mean=mean,
        std=std,
    )


def descriptor_head(backbone: Backbone, midas: bool) -> torch.nn.Module | None:
    """BoB's MiDaS descriptor is the encoder's 1000-d timm head on the pooled feature (`model(x)` in
    bob-retrieval utils.extract_features); every other backbone's is the pooled feature itself."""
    if not midas:
        return None
    native = backbone.native_classifier()
    if native is None:
        raise UsageError("protocol=bob on MiDaS needs the encoder's 1000-d head, which this backbone lacks.")
    return native[0]


def split_features(ctx: RunContext, split_name: str, args: RetrievalArgs) -> np.ndarray:
    """Pooled features of a split: the run's own transform (the shared feature cache), or under
    protocol=bob BoB's transform, cached under a key of its own."""
    if args.protocol != "bob":
        return ctx.pooled(split_name).features
    split = ctx.split(split_name)
    midas = is_bob_midas(ctx.ref)
    cfg = bob_transform(ctx.ref.data_config, midas).with_overrides(pipeline=ctx.data_config.pipeline)
    key_spec = {
        "transform": cfg.to_dict(),
        "dataset": {k: v for k, v in split.describe().items() if k != "num_classes"},
        "dtype": "float32",
        **({"descriptor": "the encoder's 1000-d head on the pooled feature"} if midas else {}),
    }

    def extract(shared: Backbone) -> tuple[Any, Any, dict[str, Any]]:
        same_size = cfg.input_size == ctx.data_config.input_size
        backbone = shared if same_size else ctx.build_backbone(input_size=cfg.input_size)
        backbone.eval()
        head = descriptor_head(backbone, midas)
        if ctx.extraction.channels_last:
            backbone.to(memory_format=torch.channels_last)
        batches = pixel_batches(split, cfg, ctx.batch_size, ctx.num_workers, ctx.device)
        with progress_bar(
            f"extracting {split.dataset}/{split_name} (BoB transform)", len(split), "images"
        ) as bar:
            features = extract_pooled(
                backbone,
                batches,
                len(split),
                ctx.device,
                bar,
                prepare=Normalizer(cfg, channels_last=ctx.extraction.channels_last),
                extraction=ctx.extraction,
            )
        if head is not None:
            with torch.inference_mode():
                features = head.float().cpu()(torch.from_numpy(features)).numpy()
        return features, split.labels, {}

    return ctx.cached(split_name, key_spec, extract, description="pooled, BoB retrieval transform").features


def check_query_args(args: RetrievalArgs, dataset: str) -> None:
    if args.crop_queries is not None and dataset not in BOXED_QUERY_DATASETS:
        raise UsageError(
            f"crop_queries only applies to {', '.join(sorted(BOXED_QUERY_DATASETS))}, whose queries have "
            f"a box; '{dataset}' has none. Drop that task arg."
        )


# (query features, database features, the queries' truths, what the protocol records)
QuerySet = tuple[np.ndarray, np.ndarray, list[QueryTruth], dict[str, Any]]


def reject_class_level_args(args: RetrievalArgs, dataset: str) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(RetrievalArgs)}
    given = [name for name in CLASS_LEVEL_ARGS if getattr(args, name) != defaults[name]]
    if given:
        raise UsageError(
            f"{', '.join(given)} only apply to class-as-relevance retrieval on classification datasets; "
            f"'{dataset}' brings its own queries and database. Drop "
            f"{'that task arg' if len(given) == 1 else 'those task args'}."
        )


def query_split_name(ctx: RunContext, args: RetrievalArgs) -> tuple[str, dict[str, Any]]:
    """The split to score (ROxford/RParis: with cropped or whole queries, BoB's thumbnails under
    protocol=bob) and what the protocol records about it."""
    split = ctx.split(RETRIEVAL_SPLIT)
    if not isinstance(split, CroppedFileSplit):
        return RETRIEVAL_SPLIT, {}
    crop = args.queries_cropped()
    thumbnail = BOB_THUMBNAIL if args.protocol == "bob" else None
    record = {
        "queries": "cropped to their box" if crop else "whole images",
        "thumbnail": f"every image shrunk to fit {thumbnail} px (PIL thumbnail, Lanczos) before the transform"
        if thumbnail
        else None,
    }
    if crop and thumbnail is None:
        return RETRIEVAL_SPLIT, record
    name = f"{RETRIEVAL_SPLIT}:{'cropped' if crop else 'whole'}" + (f"-thumb{thumbnail}" if thumbnail else "")
    ctx.add_split(name, split.variant(crop, thumbnail))
    return name, record


def own_queries(ctx: RunContext, args: RetrievalArgs) -> QuerySet:
    """A retrieval dataset's queries (the first images of its one split), database and judgements."""
    split_name, record = query_split_name(ctx, args)
    num_queries, judgements = query_database_judgements(ctx.split(split_name))
    features = split_features(ctx, split_name, args)
    truths = [QueryTruth(p, j) for p, j in zip(judgements.positives, judgements.junk, strict=True)]
    protocol = {
        "relevance": judgements.definition,
        "split": f"the dataset's own queries (first {num_queries} of its {RETRIEVAL_SPLIT} split) and database",
        **record,
    }
    return features[:num_queries], features[num_queries:], truths, protocol


# ------------------------------------------------------------------------- class-as-relevance split


def sort_keys(split: ImageSplit, split_name: str) -> list[str]:
    """The names images are sorted by within a class: relative file path, else split and index."""
    paths = getattr(split, "paths", None)
    root = getattr(split, "root", None)
    if paths is not None and root is not None:
        return [p.relative_to(root).as_posix() if p.is_relative_to(root) else p.as_posix() for p in paths]
    return [f"{split_name}/{i:09d}" for i in range(len(split))]


def class_query_split(
    labels: np.ndarray, keys: list[str], query_fraction: float = 0.2, max_per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, database indices) into the pool: per class, sorted by key, first share = queries."""
    queries, database = [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[np.argsort([keys[i] for i in members], kind="stable")]
        if max_per_class is not None:
            members = members[:max_per_class]
        n_queries = int(len(members) * query_fraction // 1)
        queries.append(members[:n_queries])
        database.append(members[n_queries:])
    return np.concatenate(queries).astype(np.int64), np.concatenate(database).astype(np.int64)


def class_queries(ctx: RunContext, args: RetrievalArgs, dataset: str) -> QuerySet:
    """The pooled splits of a classification dataset as queries and database; relevant = same class."""
    pool = pool_splits(ctx, args, dataset)
    splits = [ctx.split(name) for name in pool]
    labels = np.concatenate([s.labels for s in splits])
    keys = [key for s, name in zip(splits, pool, strict=True) for key in sort_keys(s, name)]
    q_idx, db_idx = class_query_split(labels, keys, args.query_fraction, args.max_per_class)
    if len(q_idx) == 0:
        raise UsageError(
            f"Dataset '{dataset}' yields no query: with query_fraction={args.query_fraction} a class "
            f"needs at least {int(np.ceil(1 / args.query_fraction))} images to give one. Raise "
            "query_fraction or max_per_class, or pool more splits (pool=train,test)."
        )
    features = np.concatenate([split_features(ctx, name, args) for name in pool])
    by_class = {int(c): db_idx[labels[db_idx] == c] for c in np.unique(labels)}
    position = np.empty(len(labels), dtype=np.int64)
    position[db_idx] = np.arange(len(db_idx))
    truths = [QueryTruth(position[by_class[int(labels[i])]]) for i in q_idx]
    protocol = {
        "relevance": "same class (class-as-relevance)",
        "split": f"per class, sorted by file name (in-memory data: split, index), first "
        f"floor({args.query_fraction} · n) images are queries, the rest is the database",
        "pool": list(pool),
        "query_fraction": args.query_fraction,
        "max_per_class": args.max_per_class,
        "num_pool": len(labels),
    }
    return features[q_idx], features[db_idx], truths, protocol


def pool_splits(ctx: RunContext, args: RetrievalArgs, dataset: str) -> tuple[str, ...]:
    available = ctx.info.splits
    if args.pool is None:
        pool = tuple(s for s in ("train", "test") if s in available) or available
    else:
        pool = tuple(args.pool)
    unknown = [s for s in pool if s not in available]
    if unknown or len(set(pool)) != len(pool):
        raise UsageError(
            f"pool={','.join(pool)} is not a list of distinct splits of '{dataset}'; its splits are: "
            f"{', '.join(available)}."
        )
    return pool
