"""Where a run's queries, database and ground truth come from: a retrieval dataset's own, or a
classification dataset turned into a class-as-relevance retrieval set (see the package docstring)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bob.context import RunContext
from bob.data.base import ImageSplit
from bob.data.relevance import RETRIEVAL_SPLIT, query_database_judgements
from bob.errors import UsageError
from bob.tasks.retrieval import RetrievalArgs
from bob.tasks.retrieval.metrics import QueryTruth

CLASS_LEVEL_ARGS = ("query_fraction", "max_per_class", "pool")  # meaningless on retrieval datasets

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


def own_queries(ctx: RunContext) -> QuerySet:
    """A retrieval dataset's queries (the first images of its one split), database and judgements."""
    num_queries, judgements = query_database_judgements(ctx.split(RETRIEVAL_SPLIT))
    features = ctx.pooled(RETRIEVAL_SPLIT).features
    truths = [QueryTruth(p, j) for p, j in zip(judgements.positives, judgements.junk, strict=True)]
    protocol = {
        "relevance": judgements.definition,
        "split": f"the dataset's own queries (first {num_queries} of its {RETRIEVAL_SPLIT} split) and database",
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
    features = np.concatenate([ctx.pooled(name).features for name in pool])
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
