"""`retrieval/<dataset>`: image retrieval with frozen, L2-normalised pooled features and cosine ranking.

No training (BoB's protocol, `main_ret.py`): every query is scored against every database image by the
dot product of L2-normalised pooled features, and the database is ranked by that score (ties: lower
database index first). Metrics: mAP, MRR, precision@k and recall@k, k in (1, 5, 10) by default; see
retrieval_metrics.py for the exact definitions and the two AP conventions.

Two kinds of dataset, one suite:

- **retrieval datasets** (task type "retrieval": revisited Oxford/Paris, Copydays, the generated
  `skimage-views`) bring one `test` split, queries first and database after, with their own ground
  truth (bob.data.relevance). The revisited
  Oxford/Paris sets are scored with the Medium protocol (easy + hard relevant, junk removed from the
  ranking) and the revisited-Oxford conventions.
- **classification datasets** become class-as-relevance retrieval sets (BoB's "TwoLevel" protocol for
  CUB-200, iNat, INSTRE, ObjectNet): the images of the `pool` splits (default train + test, whose
  features the linear probe and k-NN already cached) are sorted by file name within each class (in-memory
  sets: by split, then index); optionally only the first `max_per_class` are kept; the first
  floor(`query_fraction` · n) of each class are queries and the rest is the database. Relevant = same class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from bob.errors import UsageError
from bob.task import Task, TaskArgs, TaskOutput, run_arg
from bob.tasks.retrieval.metrics import CONVENTIONS, QueryTruth, RetrievalScorer

if TYPE_CHECKING:
    from bob.context import RunContext
    from bob.data.base import ImageSplit

# Datasets scored the revisited-Oxford way when `convention=auto`.
REVISITOP_DATASETS = frozenset({"roxford5k", "rparis6k"})
CLASS_LEVEL_ARGS = ("query_fraction", "max_per_class", "pool")  # meaningless on retrieval datasets
QUERY_CHUNK = 256  # queries scored per block: bounds memory at QUERY_CHUNK × database floats


@dataclass
class RetrievalArgs(TaskArgs):
    convention: str = run_arg(
        "auto", "metric convention: standard | revisitop | auto (revisitop on roxford5k/rparis6k)"
    )
    ks: tuple[int, ...] = run_arg((1, 5, 10), "cut-offs k of precision@k and recall@k, e.g. 1,5,10")
    query_fraction: float = run_arg(0.2, "class-as-relevance: share of each class (floored) used as queries")
    max_per_class: int | None = run_arg(
        None,
        "class-as-relevance: keep the first N sorted images per class (BoB: iNat 5, INSTRE/ObjectNet 50)",
    )
    pool: tuple[str, ...] | None = run_arg(
        None, "class-as-relevance: splits pooled into one retrieval set (default: train,test)"
    )

    def validate(self) -> None:
        super().validate()
        if self.convention not in ("auto", *CONVENTIONS):
            raise UsageError(f"convention must be auto, {' or '.join(CONVENTIONS)}; got '{self.convention}'.")
        if not self.ks or any(k < 1 for k in self.ks):
            raise UsageError(f"ks must be positive integers, e.g. ks=1,5,10; got {self.ks}.")
        if not 0.0 < self.query_fraction < 1.0:
            raise UsageError(f"query_fraction must be in (0, 1), got {self.query_fraction}.")
        if self.max_per_class is not None and self.max_per_class < 2:
            raise UsageError(
                f"max_per_class must be at least 2 (a query and a database image), got {self.max_per_class}."
            )
        if self.pool is not None and not self.pool:
            raise UsageError("pool names no split; give e.g. pool=train,test.")


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


# ------------------------------------------------------------------------------------------ scoring


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def score_queries(
    queries: np.ndarray, database: np.ndarray, truths: list[QueryTruth], ks: tuple[int, ...], convention: str
) -> RetrievalScorer:
    """Cosine similarities block by block, each block ranked and scored, with a progress bar."""
    from bob.progress import progress_bar

    q, db = l2_normalise(queries), l2_normalise(database)
    scorer = RetrievalScorer(ks, convention)
    with progress_bar("ranking the database", len(q), "queries") as bar:
        for start in range(0, len(q), QUERY_CHUNK):
            block = q[start : start + QUERY_CHUNK] @ db.T
            scorer.add(block, truths[start : start + QUERY_CHUNK])
            bar.advance(len(block))
    return scorer


class Retrieval(Task):
    suite = "retrieval"
    version = "1"
    main_metric = "map"
    reads_feature_cache = True
    task_types: ClassVar[tuple[str, ...]] = ("retrieval", "classification")
    description = (
        "frozen L2-normalised features, cosine ranking; mAP, MRR, P@k, R@k (classes as relevance on "
        "classification sets)"
    )
    Args = RetrievalArgs

    def run(self, ctx: RunContext) -> TaskOutput:
        args: RetrievalArgs = self.args  # type: ignore[assignment]
        if ctx.info.task_type == "retrieval":
            self._reject_class_level_args(args)
            queries, database, truths, protocol = self._query_database(ctx)
        else:
            queries, database, truths, protocol = self._class_as_relevance(ctx, args)
        convention = args.convention
        if convention == "auto":
            convention = "revisitop" if self.dataset in REVISITOP_DATASETS else "standard"
        scorer = score_queries(queries, database, truths, tuple(args.ks), convention)
        metrics = scorer.summary()
        protocol.update(
            {
                "features": "pooled, L2-normalised",
                "similarity": "cosine (dot product of L2-normalised features)",
                "ranking": "descending score; ties broken by the lower database index",
                "convention": convention,
                "ks": list(args.ks),
                "junk": "removed from the ranking before every metric",
                "num_queries": len(truths),
                "num_database": len(database),
                "queries_without_relevant": scorer.skipped,
                "queries_scored": len(scorer.rows),
            }
        )
        return TaskOutput(metrics, protocol)

    def _reject_class_level_args(self, args: RetrievalArgs) -> None:
        defaults = {f.name: f.default for f in dataclasses.fields(RetrievalArgs)}
        given = [name for name in CLASS_LEVEL_ARGS if getattr(args, name) != defaults[name]]
        if given:
            raise UsageError(
                f"{', '.join(given)} only apply to class-as-relevance retrieval on classification datasets; "
                f"'{self.dataset}' brings its own queries and database. Drop "
                f"{'that task arg' if len(given) == 1 else 'those task args'}."
            )

    def _query_database(self, ctx: RunContext):
        from bob.data.relevance import RETRIEVAL_SPLIT, query_database_judgements

        num_queries, judgements = query_database_judgements(ctx.split(RETRIEVAL_SPLIT))
        features = ctx.pooled(RETRIEVAL_SPLIT).features
        truths = [QueryTruth(p, j) for p, j in zip(judgements.positives, judgements.junk, strict=True)]
        protocol = {
            "relevance": judgements.definition,
            "split": f"the dataset's own queries (first {num_queries} of its {RETRIEVAL_SPLIT} split) and database",
        }
        return features[:num_queries], features[num_queries:], truths, protocol

    def _class_as_relevance(self, ctx: RunContext, args: RetrievalArgs):
        pool = self._pool_splits(ctx, args)
        splits = [ctx.split(name) for name in pool]
        labels = np.concatenate([s.labels for s in splits])
        keys = [key for s, name in zip(splits, pool, strict=True) for key in sort_keys(s, name)]
        q_idx, db_idx = class_query_split(labels, keys, args.query_fraction, args.max_per_class)
        if len(q_idx) == 0:
            raise UsageError(
                f"Dataset '{self.dataset}' yields no query: with query_fraction={args.query_fraction} a class "
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

    def _pool_splits(self, ctx: RunContext, args: RetrievalArgs) -> tuple[str, ...]:
        available = ctx.info.splits
        if args.pool is None:
            pool = tuple(s for s in ("train", "test") if s in available) or available
        else:
            pool = tuple(args.pool)
        unknown = [s for s in pool if s not in available]
        if unknown or len(set(pool)) != len(pool):
            raise UsageError(
                f"pool={','.join(pool)} is not a list of distinct splits of '{self.dataset}'; its splits are: "
                f"{', '.join(available)}."
            )
        return pool
