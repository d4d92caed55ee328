"""`reid/<dataset>`: person re-identification, queries ranked against a gallery; mAP and CMC rank-k.

Two modes:

- **frozen** (default): the backbone's pooled features of the `test` split (queries first, then the
  gallery; from the feature cache), cosine distance of the L2-normalised features, no training.
- **finetune**: the backbone is trained on the `train` split of the dataset, or of another re-ID dataset
  (`train_on=`, the cross-domain Market↔Duke protocol), as a BNNeck embedding: pooled features →
  BatchNorm → bias-free linear classifier over the train identities, label-smoothed cross-entropy plus
  an optional batch-hard triplet loss on the pooled features, P identities × K images per batch
  (train.py). Queries and gallery are then embedded with the BatchNorm'd features.

Evaluation is torchreid's `eval_market1501` (metrics.py): same person and same camera removed from
each ranking, queries without a valid match skipped and counted. The protocol is run.py; the splits
with person and camera ids and the Market/Duke layouts are data.py, the generated sets shapes.py.
`mode=finetune` trains data-parallel under `bob run --gpus-per-run N` (train.py says how).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.data import DATASETS, dataset_info
from bob.errors import UsageError
from bob.task import Task, TaskArgs, run_arg

MODES = ("frozen", "finetune")
DISTANCES = ("cosine", "euclidean")  # the keys of metrics.DISTANCES, named here so parsing stays numpy-free
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
        info = dataset_info(self.train_on)  # unknown names raise with close matches
        if info.task_type != "reid":
            reid = [e.name for e in DATASETS.entries() if e.meta["info"].task_type == "reid"]
            raise UsageError(
                f"train_on='{self.train_on}' is not a re-ID dataset; re-ID datasets are: {', '.join(reid)}."
            )


class Reid(Task):
    suite = "reid"
    version = "1"
    main_metric = "map"
    reads_feature_cache = ("mode", "frozen")
    data_parallel = True  # mode=finetune: P×K batches split over the ranks by identities (train.py)
    not_data_parallel: ClassVar[dict[tuple[str, str], str]] = {
        ("mode", "frozen"): "ranks frozen pooled features (nothing to train data-parallel)",
    }
    task_types: ClassVar[tuple[str, ...]] = ("reid",)
    description = (
        "person re-ID: query vs gallery (same person + camera removed), cosine distance; mAP, CMC "
        "rank-1/5/10 (torchreid eval_market1501); frozen features or a fine-tuned BNNeck embedding"
    )
    Args = ReidArgs
    check_dataset: ClassVar[str] = "shapes-reid-mini"  # `bob check`'s mock run needs a re-ID set
