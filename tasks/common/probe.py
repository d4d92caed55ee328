"""The linear probe on arrays: an L2-regularised softmax head on frozen features, λ chosen on a val split.

Protocol (CLIP / CLIP_benchmark style, batched): the regularisation strength λ is searched on
CLIP_benchmark's 97-point log grid [1e-6, 1e2], coarse to fine: 7 coarse values (every 16th), then
the grid points at ±2, ±4, ±6, ±8 steps around the best, then ±1 around the new best — the same
one-step resolution as CLIP_benchmark's halving search, in three batched rounds: every round's
candidates are trained together in one pass (see linear_head.py). A final head with the chosen λ is
trained on train + val and scored on test. The linear-probe suite runs it on cached features; the
ood, few-label, dg, multilabel, tradeoff, video-cls suites and distillation run it too. The search
itself (`search_weight_decay`) takes any head loss and validation score: the multilabel suite runs
it for sigmoid heads scored by mAP.

Steps on tiny data: a head trains `epochs` epochs, and more on small data, until it has made
`min_steps` updates. On data that fits one minibatch every epoch is a single full-batch step, so a
100-image set trains 250 epochs per head, 1,000 in a λ search and final fit. A quick run (`limit`
set) caps the epochs that `min_steps` adds at `MAX_EPOCHS`, and the `max_epochs` arg sets that cap
on any run (`head_config`). Runs without either train as they always did, so the results stored
under their run ids stay what the code computes. With the default args (batch 256, min_steps 250) a
cap of 100 binds only below 513 training samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bob.progress import Progress, progress_bar
from bob.tasks.common.args import ProbeArgs
from bob.tasks.common.linear_head import HeadConfig, Standardizer, epochs_for, fit_heads, predict
from bob.tasks.common.metrics import classification_metrics

WD_GRID = np.logspace(-6, 2, num=97)
COARSE = tuple(range(0, 97, 16))
# Offsets (in grid steps) tried around the current best in each refinement round.
REFINE_ROUNDS = ((-8, -6, -4, -2, 2, 4, 6, 8), (-1, 1))
SEARCH_ROUNDS = 1 + len(REFINE_ROUNDS)  # head trainings a search costs (for progress totals)
# The most epochs `min_steps` may ask for in a quick (`limit`) run, unless `max_epochs` says otherwise
# (never fewer than the `epochs` arg): see the module docstring.
MAX_EPOCHS = 100


def epoch_cap(args: ProbeArgs) -> int | None:
    """The cap on the epochs `min_steps` adds: the `max_epochs` arg, else `MAX_EPOCHS` for a limited
    run, else none (the protocol as it always ran)."""
    if args.max_epochs is not None:
        return args.max_epochs
    return MAX_EPOCHS if args.limit is not None else None


def head_config(args: ProbeArgs, n: int) -> HeadConfig:
    """The head's training on `n` samples: the args' epochs, lr and batch size, and `min_steps`
    lowered just enough that the epochs it adds stop at the cap (`epoch_cap`), when there is one."""
    cap = epoch_cap(args)
    if cap is None:
        return HeadConfig(args.epochs, args.min_steps, args.lr, args.batch_size)
    steps_per_epoch = math.ceil(n / args.batch_size)
    return HeadConfig(args.epochs, min(args.min_steps, cap * steps_per_epoch), args.lr, args.batch_size)


def search_weight_decay(
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor,
    num_classes: int,
    score: Callable[[torch.Tensor], float],
    cfg: HeadConfig,
    seed: int,
    bar: Progress,
    loss: str = "softmax",
) -> tuple[float, dict[int, float]]:
    """The coarse-to-fine λ search: heads trained on (x, y), each scored by `score(val logits [N, C])`
    (higher is better). Returns the chosen λ and the sweep {grid index: score}. Ties keep the first
    maximum: the weakest λ in the coarse round, then the current best, then the nearest."""
    sweep: dict[int, float] = {}

    def evaluate(indices: list[int]) -> None:
        new = [i for i in dict.fromkeys(indices) if i not in sweep]
        if not new:
            bar.advance(epochs_for(len(x), cfg))
            return
        w, b = fit_heads(x, y, num_classes, [float(WD_GRID[i]) for i in new], cfg, seed, bar, loss)
        logits = predict(x_val, w, b)
        for j, i in enumerate(new):
            sweep[i] = score(logits[j])

    evaluate(list(COARSE))
    peak = max(COARSE, key=lambda i: sweep[i])
    for offsets in REFINE_ROUNDS:
        window = [peak] + [min(max(peak + o, 0), len(WD_GRID) - 1) for o in sorted(offsets, key=abs)]
        evaluate(window)
        peak = max(window, key=lambda i: sweep[i])
    return float(WD_GRID[peak]), sweep


def as_tensor(a: np.ndarray, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.as_tensor(a, dtype=dtype, device=device)


def head_state(w: torch.Tensor, b: torch.Tensor, std: Standardizer, weight_decay: float) -> dict[str, Any]:
    """The final head as tensors and plain types only, so it loads with torch.load(weights_only=True)."""
    return {
        "weight": w[0].cpu(),
        "bias": b[0].cpu(),
        "mean": torch.from_numpy(std.mean),
        "std": torch.from_numpy(std.std),
        "weight_decay": weight_decay,
    }


def _top1_against(labels: np.ndarray) -> Callable[[torch.Tensor], float]:
    return lambda logits: float((logits.argmax(-1).cpu().numpy() == labels).mean())


def run_linear_probe(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    args: ProbeArgs,
    seed: int,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """The whole protocol on arrays; returns metrics, protocol and the final head (CPU tensors)."""
    n_fit = len(train[0]) + len(val[0])
    cfg, final_cfg = head_config(args, len(train[0])), head_config(args, n_fit)
    sweep: dict[int, float] = {}
    n_sweeps = 0 if args.weight_decay is not None else SEARCH_ROUNDS
    total = n_sweeps * epochs_for(len(train[0]), cfg) + epochs_for(n_fit, final_cfg)
    with progress_bar("fitting heads", total, "epochs") as bar:
        if args.weight_decay is None:
            std = Standardizer.fit(train[0])
            xt, yt = as_tensor(std(train[0]), device), as_tensor(train[1], device, torch.long)
            xv = as_tensor(std(val[0]), device)
            score = _top1_against(val[1])
            chosen, sweep = search_weight_decay(xt, yt, xv, num_classes, score, cfg, seed, bar)
        else:
            chosen = args.weight_decay
        x_all = np.concatenate([train[0], val[0]])
        y_all = np.concatenate([train[1], val[1]])
        std = Standardizer.fit(x_all)
        x_fit, y_fit = as_tensor(std(x_all), device), as_tensor(y_all, device, torch.long)
        w, b = fit_heads(x_fit, y_fit, num_classes, [chosen], final_cfg, seed, bar)
    logits = predict(as_tensor(std(test[0]), device), w, b)[0].cpu().numpy()
    metrics = classification_metrics(logits, test[1], num_classes)
    protocol = {
        "selected_weight_decay": chosen,
        "weight_decay_semantics": "L2 coefficient on the mean cross-entropy (sklearn C = 1 / (λ·N))",
        "sweep": [{"weight_decay": float(WD_GRID[i]), "val_top1": acc} for i, acc in sorted(sweep.items())],
        "epochs": epochs_for(len(x_all), final_cfg),
        "lr": args.lr,
        "batch_size": args.batch_size,
        "optimizer": "Adam, cosine to zero",
        "features": "pooled, standardised with train statistics",
        "num_train": len(train[0]),
        "num_val": len(val[0]),
        "num_test": len(test[1]),
    }
    # `test_logits`: what the run's per-sample file is built from (tasks/common/samples.py).
    return {
        "metrics": metrics,
        "protocol": protocol,
        "head": head_state(w, b, std, chosen),
        "test_logits": logits,
    }
