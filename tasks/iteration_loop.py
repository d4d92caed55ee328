"""The iteration-counted training loop of the dense suites (detection, segmentation).

mmdetection and mmseg count schedules in iterations, not epochs: the loader is cycled until
`iterations` optimizer steps have run. Each suite supplies the loss of one batch and what to do
after each step (its learning-rate schedule); this loop owns the rest: fp16 autocast and gradient
scaling on CUDA, the non-finite-loss check, the progress bar and the loss history the run records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from bob.errors import TrainingDivergedError, UsageError
from bob.progress import progress_bar

HISTORY_POINTS = 100  # the recorded loss history: the mean loss of each 1% of training


def train_iterations(
    loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    iterations: int,
    loss_of: Callable[[Any], tuple[torch.Tensor, dict[str, float]]],
    *,
    after_step: Callable[[int], None],
    device: Any,
    amp: bool,
    what: str,
) -> dict[str, Any]:
    """Run `iterations` optimizer steps over `loader`, cycled; returns {loss_history, final_loss}.

    `loss_of(batch)` returns the scalar loss and its named parts (for the divergence message; may be
    empty); it runs under fp16 autocast when `amp` is set and `device` is CUDA. `after_step(it)` is
    called with the number of steps done, after each step. `what` names the model in the progress bar
    and in errors ("detector"). Raises `TrainingDivergedError` on a NaN or infinite loss and
    `UsageError` when the loader yields nothing (instead of cycling it forever).
    """
    kind = torch.device(device).type
    use_amp = amp and kind == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[float] = []
    window: list[float] = []
    every = max(1, iterations // HISTORY_POINTS)
    it = 0
    with progress_bar(f"training {what}", iterations, "iters") as bar:
        while it < iterations:
            batches = 0
            for batch in loader:
                batches += 1
                with torch.autocast(kind, dtype=torch.float16, enabled=use_amp):
                    loss, parts = loss_of(batch)
                if not torch.isfinite(loss):
                    detail = f" ({parts})" if parts else ""
                    raise TrainingDivergedError(
                        f"{what} loss became {float(loss)} at iteration {it}{detail}; try a lower lr."
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                it += 1
                after_step(it)
                window.append(float(loss.detach()))
                if len(window) == every:
                    history.append(float(np.mean(window)))
                    window = []
                bar.advance(1)
                if it >= iterations:
                    break
            if batches == 0:
                raise UsageError(f"the {what} has no training batch: the training split is empty.")
    return {"loss_history": history, "final_loss": float(np.mean(window or history[-1:] or [math.nan]))}
