"""`knn/<dataset>`: weighted k-nearest-neighbour classification on frozen pooled features.

DINO's protocol: L2-normalised features, cosine similarity to every train feature, the k most
similar vote for their class with weight exp(similarity / T). No training, no hyper-parameter search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bob.errors import UsageError
from bob.task import Task, TaskArgs, TaskOutput, run_arg
from bob.tasks.common.metrics import classification_metrics

if TYPE_CHECKING:
    from bob.context import RunContext


@dataclass
class KNNArgs(TaskArgs):
    k: int = run_arg(20, "number of neighbours")
    temperature: float = run_arg(0.07, "temperature T of the exp(sim / T) vote weights")

    def validate(self) -> None:
        super().validate()
        if self.k < 1:
            raise UsageError(f"k must be a positive integer, got {self.k}.")
        if self.temperature <= 0:
            raise UsageError(f"temperature must be positive, got {self.temperature}.")


def knn_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    device: Any = "cpu",
    chunk: int = 1024,
) -> np.ndarray:
    """Class scores [N_test, C] from the temperature-weighted vote of the k nearest train features."""
    import torch
    import torch.nn.functional as F

    bank = F.normalize(torch.as_tensor(train_x, dtype=torch.float32, device=device), dim=1)
    labels = torch.as_tensor(train_y, dtype=torch.long, device=device)
    queries = F.normalize(torch.as_tensor(test_x, dtype=torch.float32, device=device), dim=1)
    k = min(k, len(bank))
    scores = []
    for start in range(0, len(queries), chunk):
        sim, idx = (queries[start : start + chunk] @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes, device=device)
        votes.scatter_add_(1, labels[idx], (sim / temperature).exp())
        scores.append(votes)
    return torch.cat(scores).cpu().numpy()


class Knn(Task):
    suite = "knn"
    version = "1"
    main_metric = "top1"
    reads_feature_cache = True
    description = "frozen pooled features; cosine k-NN with DINO's temperature-weighted vote (k=20, T=0.07)"
    Args = KNNArgs

    def run(self, ctx: RunContext) -> TaskOutput:
        train, test = ctx.pooled("train"), ctx.pooled("test")
        scores = knn_predict(
            train.features,
            train.labels,
            test.features,
            ctx.num_classes,
            self.args.k,
            self.args.temperature,
            ctx.device,
        )
        metrics = classification_metrics(scores, test.labels, ctx.num_classes)
        protocol = {
            "k": self.args.k,
            "temperature": self.args.temperature,
            "similarity": "cosine",
            "num_train": len(train.labels),
            "num_test": len(test.labels),
        }
        return TaskOutput(metrics, protocol)
