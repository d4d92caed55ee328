"""The k-NN protocol on the run's cached pooled features (see the package docstring)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bob.context import RunContext
from bob.task import TaskOutput
from bob.tasks.common.metrics import classification_metrics
from bob.tasks.common.samples import classification_samples, save_samples
from bob.tasks.knn import Knn


def knn_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    device: torch.device | str = "cpu",
    chunk: int = 1024,
) -> np.ndarray:
    """Class scores [N_test, C] from the temperature-weighted vote of the k nearest train features."""
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


def run(task: Knn, ctx: RunContext) -> TaskOutput:
    train, test = ctx.pooled("train"), ctx.pooled("test")
    args = task.args
    scores = knn_predict(
        train.features, train.labels, test.features, ctx.num_classes, args.k, args.temperature, ctx.device
    )
    metrics = classification_metrics(scores, test.labels, ctx.num_classes)
    protocol = {
        "k": args.k,
        "temperature": args.temperature,
        "similarity": "cosine",
        "num_train": len(train.labels),
        "num_test": len(test.labels),
    }
    return save_samples(ctx, TaskOutput(metrics, protocol), classification_samples(scores, test.labels))
