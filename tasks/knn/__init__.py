"""`knn/<dataset>`: weighted k-nearest-neighbour classification on frozen pooled features.

DINO's protocol: L2-normalised features, cosine similarity to every train feature, the k most
similar vote for their class with weight exp(similarity / T). No training, no hyper-parameter search.
Metrics: top-1, top-5 (datasets with at least 5 classes) and mean per-class recall.
"""

from __future__ import annotations

from dataclasses import dataclass

from bob.errors import UsageError
from bob.task import Task, TaskArgs, run_arg


@dataclass
class KnnArgs(TaskArgs):
    k: int = run_arg(20, "number of neighbours")
    temperature: float = run_arg(0.07, "temperature T of the exp(sim / T) vote weights")

    def validate(self) -> None:
        super().validate()
        if self.k < 1:
            raise UsageError(f"k must be a positive integer, got {self.k}.")
        if self.temperature <= 0:
            raise UsageError(f"temperature must be positive, got {self.temperature}.")


class Knn(Task):
    suite = "knn"
    version = "1"
    main_metric = "top1"
    reads_feature_cache = True
    description = "frozen pooled features; cosine k-NN with DINO's temperature-weighted vote (k=20, T=0.07)"
    Args = KnnArgs
    args: KnnArgs
