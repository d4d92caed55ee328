"""The retrieval protocol: queries against the database by cosine similarity, ranked and scored."""

from __future__ import annotations

import numpy as np

from bob.context import RunContext
from bob.progress import progress_bar
from bob.samples import SampleSet
from bob.task import TaskOutput
from bob.tasks.common.samples import mean_samples, save_samples
from bob.tasks.retrieval import Retrieval
from bob.tasks.retrieval.metrics import QueryTruth, RetrievalScorer
from bob.tasks.retrieval.queries import class_queries, own_queries, reject_class_level_args

# Datasets scored the revisited-Oxford way when `convention=auto`.
REVISITOP_DATASETS = frozenset({"roxford5k", "rparis6k"})
QUERY_CHUNK = 256  # queries scored per block: bounds memory at QUERY_CHUNK × database floats


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def score_queries(
    queries: np.ndarray, database: np.ndarray, truths: list[QueryTruth], ks: tuple[int, ...], convention: str
) -> RetrievalScorer:
    """Cosine similarities block by block, each block ranked and scored, with a progress bar."""
    q, db = l2_normalise(queries), l2_normalise(database)
    scorer = RetrievalScorer(ks, convention)
    with progress_bar("ranking the database", len(q), "queries") as bar:
        for start in range(0, len(q), QUERY_CHUNK):
            block = q[start : start + QUERY_CHUNK] @ db.T
            scorer.add(block, truths[start : start + QUERY_CHUNK])
            bar.advance(len(block))
    return scorer


def run(task: Retrieval, ctx: RunContext) -> TaskOutput:
    args = task.args
    if ctx.info.task_type == "retrieval":
        reject_class_level_args(args, task.dataset)
        queries, database, truths, protocol = own_queries(ctx)
    else:
        queries, database, truths, protocol = class_queries(ctx, args, task.dataset)
    convention = args.convention
    if convention == "auto":
        convention = "revisitop" if task.dataset in REVISITOP_DATASETS else "standard"
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
    return save_samples(ctx, TaskOutput(metrics, protocol), query_samples(scorer, truths))


def query_samples(scorer: RetrievalScorer, truths: list[QueryTruth]) -> SampleSet:
    """Per scored query (one with a relevant item), its AP: the mean of these is the run's mAP."""
    scored = [t for t in truths if len(t.positives)]
    truth = (np.array([len(t.positives) for t in scored]), np.concatenate([t.positives for t in scored]))
    return mean_samples(scorer.per_query_ap, "map", "query", truth)
