"""The multilabel suite's probe on a multi-label train set: one sigmoid per class on frozen features.

The linear probe's protocol (tasks/common/probe.py) with a per-class binary cross-entropy head: λ is
chosen by the same coarse-to-fine search, scored by validation mAP instead of top-1, and the final
head is trained on train + val.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bob.progress import progress_bar
from bob.tasks.common.linear_head import HeadConfig, Standardizer, epochs_for, fit_heads, predict
from bob.tasks.common.probe import SEARCH_ROUNDS, WD_GRID, as_tensor, head_state, search_weight_decay
from bob.tasks.multilabel import MultilabelArgs
from bob.tasks.multilabel.metrics import mean_average_precision


def head_scores(x: np.ndarray, head: dict[str, Any], device: torch.device | str) -> np.ndarray:
    """Logits [N, C] of a saved head (weight, bias and the standardisation it was trained with)."""
    xs = (x - head["mean"].numpy()) / head["std"].numpy()
    xt = torch.as_tensor(xs, dtype=torch.float32, device=device)
    return predict(xt, head["weight"][None].to(device), head["bias"][None].to(device))[0].cpu().numpy()


def fit_sigmoid_probe(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray, np.ndarray],
    args: MultilabelArgs,
    seed: int,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """λ chosen by val mAP (val = features, targets, ignore mask), final head on train + val.
    Returns (head, protocol); the head is CPU tensors, like the linear probe's."""
    cfg = HeadConfig(args.epochs, args.min_steps, args.lr, args.batch_size)
    c = train[1].shape[1]
    sweep: dict[int, float] = {}
    rounds = 0 if args.weight_decay is not None else SEARCH_ROUNDS
    total = rounds * epochs_for(len(train[0]), cfg) + epochs_for(len(train[0]) + len(val[0]), cfg)
    with progress_bar("fitting multi-label heads", total, "epochs") as bar:
        if args.weight_decay is None:
            std = Standardizer.fit(train[0])
            xt, yt, xv = (
                as_tensor(std(train[0]), device),
                as_tensor(train[1], device),
                as_tensor(std(val[0]), device),
            )

            def val_map(logits: torch.Tensor) -> float:
                return mean_average_precision(logits.cpu().numpy(), val[1], val[2])

            chosen, sweep = search_weight_decay(xt, yt, xv, c, val_map, cfg, seed, bar, "sigmoid")
        else:
            chosen = args.weight_decay
        x_all, y_all = np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])
        std = Standardizer.fit(x_all)
        w, b = fit_heads(
            as_tensor(std(x_all), device), as_tensor(y_all, device), c, [chosen], cfg, seed, bar, "sigmoid"
        )
    protocol = {
        "head": "linear, one sigmoid per class, binary cross-entropy summed over classes",
        "selected_weight_decay": chosen,
        "weight_decay_semantics": "L2 coefficient on the mean (over images) of the summed BCE",
        "selection_metric": "val mAP",
        "sweep": [{"weight_decay": float(WD_GRID[i]), "val_map": v} for i, v in sorted(sweep.items())],
        "epochs": epochs_for(len(x_all), cfg),
        "lr": args.lr,
        "batch_size": args.batch_size,
        "optimizer": "Adam, cosine to zero",
        "features": "pooled, standardised with train statistics",
    }
    return head_state(w, b, std, chosen), protocol
