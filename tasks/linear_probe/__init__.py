"""`linear-probe/<dataset>`: a softmax head on frozen pooled features.

Protocol (CLIP / CLIP_benchmark style, batched):
  1. features of the train and test splits come from the feature cache;
  2. a validation split is the dataset's official one, else a seeded stratified `val_fraction` of train;
  3. the regularisation strength λ is searched on CLIP_benchmark's 97-point log grid [1e-6, 1e2],
     coarse to fine: 7 coarse values (every 16th), then the grid points at ±2, ±4, ±6, ±8 steps
     around the best, then ±1 around the new best — the same one-step resolution as
     CLIP_benchmark's halving search, in three batched rounds: every round's candidates are trained
     together in one pass (see linear_head.py);
  4. a final head with the chosen λ is trained on train + val and scored on test.
Metrics: top-1, top-5 (datasets with at least 5 classes) and mean per-class recall; the protocol
records the chosen λ and the whole sweep. The head is saved next to the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bob.data.base import stratified_partition
from bob.errors import UsageError
from bob.task import Task, TaskArgs, TaskOutput, run_arg
from bob.tasks.common.metrics import classification_metrics

if TYPE_CHECKING:
    from bob.context import RunContext

WD_GRID = np.logspace(-6, 2, num=97)
COARSE = tuple(range(0, 97, 16))
# Offsets (in grid steps) tried around the current best in each refinement round.
REFINE_ROUNDS = ((-8, -6, -4, -2, 2, 4, 6, 8), (-1, 1))


@dataclass
class LinearProbeArgs(TaskArgs):
    val_fraction: float = run_arg(
        0.2, "share of train held out for the λ sweep when the dataset has no val split"
    )
    epochs: int = run_arg(10, "minimum training epochs per head")
    min_steps: int = run_arg(250, "minimum optimizer steps per head (small datasets get more epochs)")
    lr: float = run_arg(1e-2, "Adam learning rate (cosine-decayed to zero)")
    batch_size: int = run_arg(256, "head-training minibatch size")
    weight_decay: float | None = run_arg(None, "fix λ instead of sweeping it")

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        for name in ("epochs", "min_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.lr <= 0 or (self.weight_decay is not None and self.weight_decay < 0):
            raise UsageError("lr must be positive and weight_decay non-negative.")


def run_linear_probe(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    args: LinearProbeArgs,
    seed: int,
    device: Any = "cpu",
) -> dict[str, Any]:
    """The whole protocol on arrays; returns metrics, protocol and the final head (CPU tensors)."""
    import torch

    from bob.progress import progress_bar
    from bob.tasks.common.linear_head import HeadConfig, Standardizer, epochs_for, fit_heads, predict

    cfg = HeadConfig(args.epochs, args.min_steps, args.lr, args.batch_size)
    to_t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt, device=device)  # noqa: E731
    sweep: dict[int, float] = {}
    n_sweeps = 0 if args.weight_decay is not None else 1 + len(REFINE_ROUNDS)
    total = n_sweeps * epochs_for(len(train[0]), cfg) + epochs_for(len(train[0]) + len(val[0]), cfg)
    with progress_bar("fitting heads", total, "epochs") as bar:
        if args.weight_decay is None:
            std = Standardizer.fit(train[0])
            xt, yt, xv = to_t(std(train[0])), to_t(train[1], torch.long), to_t(std(val[0]))

            def evaluate(indices: list[int]) -> None:
                new = [i for i in dict.fromkeys(indices) if i not in sweep]
                if not new:
                    bar.advance(epochs_for(len(xt), cfg))
                    return
                w, b = fit_heads(xt, yt, num_classes, [float(WD_GRID[i]) for i in new], cfg, seed, bar)
                pred = predict(xv, w, b).argmax(-1).cpu().numpy()
                for j, i in enumerate(new):
                    sweep[i] = float((pred[j] == val[1]).mean())

            evaluate(list(COARSE))
            peak = max(COARSE, key=lambda i: sweep[i])  # first maximum: the weakest λ among ties
            for offsets in REFINE_ROUNDS:
                window = [peak] + [min(max(peak + o, 0), len(WD_GRID) - 1) for o in sorted(offsets, key=abs)]
                evaluate(window)
                peak = max(window, key=lambda i: sweep[i])  # ties keep the current best, then the nearest
            chosen = float(WD_GRID[peak])
        else:
            chosen = args.weight_decay
        x_all = np.concatenate([train[0], val[0]])
        y_all = np.concatenate([train[1], val[1]])
        std = Standardizer.fit(x_all)
        w, b = fit_heads(to_t(std(x_all)), to_t(y_all, torch.long), num_classes, [chosen], cfg, seed, bar)
    logits = predict(to_t(std(test[0])), w, b)[0].cpu().numpy()
    metrics = classification_metrics(logits, test[1], num_classes)
    protocol = {
        "selected_weight_decay": chosen,
        "weight_decay_semantics": "L2 coefficient on the mean cross-entropy (sklearn C = 1 / (λ·N))",
        "sweep": [{"weight_decay": float(WD_GRID[i]), "val_top1": acc} for i, acc in sorted(sweep.items())],
        "epochs": epochs_for(len(x_all), cfg),
        "lr": args.lr,
        "batch_size": args.batch_size,
        "optimizer": "Adam, cosine to zero",
        "features": "pooled, standardised with train statistics",
        "num_train": len(train[0]),
        "num_val": len(val[0]),
        "num_test": len(test[1]),
    }
    # Tensors and plain types only, so the head loads with torch.load(weights_only=True).
    head = {
        "weight": w[0].cpu(),
        "bias": b[0].cpu(),
        "mean": torch.from_numpy(std.mean),
        "std": torch.from_numpy(std.std),
        "weight_decay": chosen,
    }
    return {"metrics": metrics, "protocol": protocol, "head": head}


class LinearProbe(Task):
    suite = "linear-probe"
    version = "1"
    main_metric = "top1"
    reads_feature_cache = True
    description = (
        "frozen pooled features; L2-regularised softmax head, weight decay chosen on a validation split"
    )
    Args = LinearProbeArgs
    check_args: ClassVar[dict[str, str]] = {"epochs": "2", "min_steps": "20"}

    def run(self, ctx: RunContext) -> TaskOutput:
        train, test = ctx.pooled("train"), ctx.pooled("test")
        if ctx.has_split("val"):
            val = ctx.pooled("val")
            train_xy, val_xy = (train.features, train.labels), (val.features, val.labels)
            val_source = "official val split"
        else:
            rest, held = stratified_partition(train.labels, self.args.val_fraction, seed=ctx.seed)
            train_xy = (train.features[rest], train.labels[rest])
            val_xy = (train.features[held], train.labels[held])
            val_source = f"stratified {self.args.val_fraction:.0%} of train (seed {ctx.seed})"
        out = run_linear_probe(
            train_xy, val_xy, (test.features, test.labels), ctx.num_classes, self.args, ctx.seed, ctx.device
        )
        out["protocol"]["val_source"] = val_source
        head_path = ctx.save_artifact("head", {**out["head"], "classes": list(ctx.classes)})
        return TaskOutput(out["metrics"], out["protocol"], {"head": head_path})
