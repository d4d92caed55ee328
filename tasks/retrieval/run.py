"""The retrieval protocol: queries against the database by cosine similarity, ranked and scored."""

from __future__ import annotations

import numpy as np

from bob.backbones.protocols import with_protocol
from bob.context import RunContext
from bob.progress import progress_bar
from bob.samples import SampleSet
from bob.task import TaskOutput
from bob.tasks.common.samples import mean_samples, save_samples
from bob.tasks.retrieval import Retrieval
from bob.tasks.retrieval.metrics import QueryTruth, RetrievalScorer
from bob.tasks.retrieval.queries import (
    bob_transform,
    check_query_args,
    class_queries,
    is_bob_midas,
    own_queries,
    reject_class_level_args,
)

# Datasets scored the revisited-Oxford way when `convention=auto` under the default protocol.
REVISITOP_DATASETS = frozenset({"roxford5k", "rparis6k"})
QUERY_CHUNK = 256  # queries scored per block: bounds memory at QUERY_CHUNK × database floats


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def score_queries(
    queries: np.ndarray,
    database: np.ndarray,
    truths: list[QueryTruth],
    ks: tuple[int, ...],
    convention: str,
    mrr_rule: str = "default",
) -> RetrievalScorer:
    """Cosine similarities block by block, each block ranked and scored, with a progress bar."""
    q, db = l2_normalise(queries), l2_normalise(database)
    scorer = RetrievalScorer(ks, convention, mrr_rule)
    with progress_bar("ranking the database", len(q), "queries") as bar:
        for start in range(0, len(q), QUERY_CHUNK):
            block = q[start : start + QUERY_CHUNK] @ db.T
            scorer.add(block, truths[start : start + QUERY_CHUNK])
            bar.advance(len(block))
    return scorer


def run(task: Retrieval, ctx: RunContext) -> TaskOutput:
    args = task.args
    bob = args.protocol == "bob"
    check_query_args(args, task.dataset)
    ctx.ref = with_protocol(ctx.ref, args.protocol)  # before any feature is read (MiDaS: BoB's encoder)
    if ctx.info.task_type == "retrieval":
        reject_class_level_args(args, task.dataset)
        queries, database, truths, protocol = own_queries(ctx, args)
    else:
        queries, database, truths, protocol = class_queries(ctx, args, task.dataset)
    convention = args.convention
    if convention == "auto":  # BoB scored every dataset with the revisitop code
        convention = "revisitop" if bob or task.dataset in REVISITOP_DATASETS else "standard"
    mrr_rule = "bob" if bob else "default"
    scorer = score_queries(queries, database, truths, tuple(args.ks), convention, mrr_rule)
    metrics = scorer.summary()
    if bob:
        midas = is_bob_midas(ctx.ref)
        protocol["transform"] = {
            "rule": "BoB's retrieval transform: bicubic Resize 256 -> CenterCrop 224, ImageNet mean/std "
            "(Resize 400 -> 384 for 384 px backbones; 460 -> 448 with the backbone's own statistics for "
            "448 px; MiDaS: 256 -> 256 or 400 -> 384 with mean/std 0.5)",
            **bob_transform(ctx.ref.data_config, midas).to_dict(),
        }
        if midas:
            protocol["descriptor"] = "MiDaS encoder's 1000-d timm head on the pooled feature (BoB's)"
    protocol.update(
        {
            "protocol": args.protocol,
            "mrr_rule": "BoB's compute_map: first relevant rank before junk removal, over every query"
            if bob
            else "first relevant rank after junk removal, over queries with a relevant item",
            "features": "pooled, L2-normalised",
            "similarity": "cosine (dot product of L2-normalised features)",
            "ranking": "descending score; ties broken by the lower database index",
            "convention": convention,
            "ks": list(args.ks),
            "junk": "removed from the ranking before every metric"
            + (" except MRR (BoB's rule)" if bob else ""),
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
