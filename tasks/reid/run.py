"""The re-ID protocol: the `test` split's queries ranked against its gallery, on frozen pooled features
or on a fine-tuned BNNeck embedding (train.py), scored with torchreid's `eval_market1501` (metrics.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bob.context import RunContext
from bob.errors import UsageError
from bob.progress import progress_bar
from bob.task import TaskOutput
from bob.tasks.common.samples import mean_samples, save_samples
from bob.tasks.reid import FINETUNE_ONLY, Reid, ReidArgs
from bob.tasks.reid.data import num_queries, reid_arrays
from bob.tasks.reid.metrics import evaluate_reid
from bob.tasks.reid.train import finetune_embedding

# (query pids, gallery pids, query cameras, gallery cameras)
Ids = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def run(task: Reid, ctx: RunContext) -> TaskOutput:
    args: ReidArgs = task.args  # type: ignore[assignment]
    if args.mode == "frozen":
        _reject_finetune_args(args)
    test = ctx.split("test")
    n_query = num_queries(test)
    pids, camids = reid_arrays(test)
    ids = (pids[:n_query], pids[n_query:], camids[:n_query], camids[n_query:])
    if valid_query_count(*ids) == 0:
        raise UsageError(
            f"Dataset '{task.dataset}': no query has a gallery image of the same person from another "
            "camera, so there is nothing to score. Check that query/ and bounding_box_test/ belong together."
        )
    if args.mode == "frozen":
        features = ctx.pooled("test").features
        protocol: dict[str, Any] = {"features": "pooled backbone features, frozen"}
    else:
        features, protocol = finetune_embedding(ctx, args, test)
    protocol["junk_images_dropped"] = int(getattr(test, "junk_dropped", 0))
    metrics, per_query_ap = _score(args, features[:n_query], features[n_query:], ids, protocol)
    samples = mean_samples(per_query_ap, "map", "query", (ids[0], ids[2]))
    return save_samples(ctx, TaskOutput(metrics, protocol), samples)


def valid_query_count(
    q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
) -> int:
    """Queries with at least one gallery image of their person from another camera."""
    count = 0
    for pid, cam in zip(q_pids, q_camids, strict=True):
        count += bool(np.any((g_pids == pid) & (g_camids != cam)))
    return count


def _reject_finetune_args(args: ReidArgs) -> None:
    """Training knobs given with frozen features would silently do nothing: refuse them."""
    defaults = {f.name: f.default for f in dataclasses.fields(ReidArgs)}
    given = [name for name in FINETUNE_ONLY if getattr(args, name) != defaults[name]]
    if given:
        raise UsageError(
            f"{', '.join(given)} only apply to mode=finetune; frozen features are not trained. Add "
            "--task-arg mode=finetune or drop them."
        )


def _score(
    args: ReidArgs, q_feats: np.ndarray, g_feats: np.ndarray, ids: Ids, protocol: dict[str, Any]
) -> tuple[dict[str, float], np.ndarray]:
    """mAP and CMC rank-k of the queries against the gallery, and each valid query's AP (what mAP
    averages); records the evaluation in `protocol`."""
    q_pids, g_pids, q_camids, g_camids = ids
    with progress_bar("ranking the gallery", len(q_feats), "queries") as bar:
        scores = evaluate_reid(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, args.distance, bar)
    metrics = scores.summary(args.ranks)
    protocol.update(
        {
            "mode": args.mode,
            "distance": args.distance,
            "distance_definition": "1 - cosine similarity of L2-normalised features"
            if args.distance == "cosine"
            else "squared Euclidean distance of raw features",
            "ranks": list(args.ranks),
            "evaluation": "torchreid eval_market1501: same person + same camera removed from each "
            "ranking; AP = mean precision at each correct match; CMC rank-k = first correct match "
            "within the top k",
            "ties": "equal distances ranked by the lower gallery index",
            "num_query": len(q_pids),
            "num_gallery": len(g_pids),
            "num_query_ids": len(np.unique(q_pids)),
            "gallery_distractors": int(np.count_nonzero(g_pids == 0)),
            "queries_valid": scores.num_valid,
            "queries_skipped": scores.skipped,
        }
    )
    return metrics, np.concatenate(scores.ap)
