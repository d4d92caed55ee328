"""`reid/<dataset>`: person re-identification, queries ranked against a gallery; mAP and CMC rank-k.

Two modes:

- **frozen** (default): the backbone's pooled features of the `test` split (queries first, then the
  gallery; from the feature cache), cosine distance of the L2-normalised features, no training.
- **finetune**: the backbone is trained on the `train` split of the dataset, or of another re-ID dataset
  (`train_on=`, the cross-domain Market↔Duke protocol), as a BNNeck embedding: pooled features →
  BatchNorm → bias-free linear classifier over the train identities, label-smoothed cross-entropy plus
  an optional batch-hard triplet loss on the pooled features, P identities × K images per batch
  (tasks/reid_train.py). Queries and gallery are then embedded with the BatchNorm'd features.

Evaluation is torchreid's `eval_market1501` (tasks/reid_metrics.py): same person and same camera
removed from each ranking, queries without a valid match skipped and counted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bob.errors import UsageError
from bob.task import Task, TaskArgs, TaskOutput, run_arg
from bob.tasks.reid.metrics import DISTANCES

if TYPE_CHECKING:
    from bob.context import RunContext

MODES = ("frozen", "finetune")
FINETUNE_ONLY = (
    "train_on",
    "epochs",
    "lr",
    "weight_decay",
    "ids_per_batch",
    "images_per_id",
    "triplet_weight",
    "margin",
    "label_smoothing",
)


@dataclass
class ReidArgs(TaskArgs):
    mode: str = run_arg("frozen", "frozen (pooled features, no training) | finetune (BNNeck embedding)")
    distance: str = run_arg("cosine", "cosine (L2-normalised features) | euclidean (squared, raw features)")
    ranks: tuple[int, ...] = run_arg((1, 5, 10), "CMC ranks k reported as rank<k>, e.g. 1,5,10")
    train_on: str | None = run_arg(
        None, "finetune: re-ID dataset whose train split trains the embedding (default: this dataset)"
    )
    epochs: int = run_arg(10, "finetune: training epochs")
    lr: float = run_arg(3.5e-4, "finetune: Adam learning rate (linear warm-up 1 epoch, cosine decay)")
    weight_decay: float = run_arg(5e-4, "finetune: Adam L2 weight decay")
    ids_per_batch: int = run_arg(8, "finetune: identities P per batch")
    images_per_id: int = run_arg(4, "finetune: images K per identity per batch (batch = P·K)")
    triplet_weight: float = run_arg(1.0, "finetune: weight of the batch-hard triplet loss (0 = CE only)")
    margin: float = run_arg(0.3, "finetune: triplet margin")
    label_smoothing: float = run_arg(0.1, "finetune: label smoothing of the identity cross-entropy")

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise UsageError(f"mode must be {' or '.join(MODES)}, got '{self.mode}'.")
        if self.distance not in DISTANCES:
            raise UsageError(f"distance must be {' or '.join(DISTANCES)}, got '{self.distance}'.")
        if not self.ranks or any(k < 1 for k in self.ranks):
            raise UsageError(f"ranks must be positive integers, e.g. ranks=1,5,10; got {self.ranks}.")
        for name in ("epochs", "ids_per_batch", "images_per_id"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.ids_per_batch < 2:
            raise UsageError("ids_per_batch must be at least 2 (a batch needs negatives).")
        if self.lr <= 0 or self.weight_decay < 0 or self.triplet_weight < 0 or self.margin < 0:
            raise UsageError("lr must be positive; weight_decay, triplet_weight and margin non-negative.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UsageError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.train_on is not None:
            self._check_train_on()

    def _check_train_on(self) -> None:
        from bob.data import DATASETS, dataset_info

        info = dataset_info(self.train_on)  # unknown names raise with close matches
        if info.task_type != "reid":
            reid = [e.name for e in DATASETS.entries() if e.meta["info"].task_type == "reid"]
            raise UsageError(
                f"train_on='{self.train_on}' is not a re-ID dataset; re-ID datasets are: {', '.join(reid)}."
            )


def valid_query_count(q_pids, g_pids, q_camids, g_camids) -> int:
    """Queries with at least one gallery image of their person from another camera."""
    count = 0
    for pid, cam in zip(q_pids, q_camids, strict=True):
        count += bool(np.any((g_pids == pid) & (g_camids != cam)))
    return count


class Reid(Task):
    suite = "reid"
    version = "1"
    main_metric = "map"
    reads_feature_cache = ("mode", "frozen")
    task_types: ClassVar[tuple[str, ...]] = ("reid",)
    description = (
        "person re-ID: query vs gallery (same person + camera removed), cosine distance; mAP, CMC "
        "rank-1/5/10 (torchreid eval_market1501); frozen features or a fine-tuned BNNeck embedding"
    )
    Args = ReidArgs
    check_dataset: ClassVar[str] = "shapes-reid-mini"  # `bob check`'s mock run needs a re-ID set

    def run(self, ctx: RunContext) -> TaskOutput:
        from bob.data.reid import num_queries, reid_arrays

        args: ReidArgs = self.args  # type: ignore[assignment]
        if args.mode == "frozen":
            self._reject_finetune_args(args)
        test = ctx.split("test")
        n_query = num_queries(test)
        pids, camids = reid_arrays(test)
        q_pids, g_pids, q_camids, g_camids = (
            pids[:n_query],
            pids[n_query:],
            camids[:n_query],
            camids[n_query:],
        )
        n_valid = valid_query_count(q_pids, g_pids, q_camids, g_camids)
        if n_valid == 0:
            raise UsageError(
                f"Dataset '{self.dataset}': no query has a gallery image of the same person from another "
                "camera, so there is nothing to score. Check that query/ and bounding_box_test/ belong together."
            )
        if args.mode == "frozen":
            features = ctx.pooled("test").features
            protocol: dict[str, Any] = {"features": "pooled backbone features, frozen"}
        else:
            from bob.tasks.reid.train import finetune_embedding

            features, protocol = finetune_embedding(ctx, args, test)
        q_feats, g_feats = features[:n_query], features[n_query:]
        protocol["junk_images_dropped"] = int(getattr(test, "junk_dropped", 0))
        return TaskOutput(
            *self._score(args, q_feats, g_feats, (q_pids, g_pids, q_camids, g_camids), protocol)
        )

    def _reject_finetune_args(self, args: ReidArgs) -> None:
        defaults = {f.name: f.default for f in dataclasses.fields(ReidArgs)}
        given = [name for name in FINETUNE_ONLY if getattr(args, name) != defaults[name]]
        if given:
            raise UsageError(
                f"{', '.join(given)} only apply to mode=finetune; frozen features are not trained. Add "
                "--task-arg mode=finetune or drop them."
            )

    def _score(self, args: ReidArgs, q_feats, g_feats, ids, protocol: dict[str, Any]):
        from bob.progress import progress_bar
        from bob.tasks.reid.metrics import evaluate_reid

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
        return metrics, protocol
