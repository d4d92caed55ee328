"""The dense suites' iteration-counted training loop (tasks/iteration_loop.py)."""

from __future__ import annotations

import math

import pytest
import torch

from bob.errors import TrainingDivergedError, UsageError
from bob.tasks.iteration_loop import train_iterations


def _setup(target: float = 3.0):
    weight = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([weight], lr=0.1)

    def loss_of(batch):
        return ((weight - target) ** 2) * batch, {}

    return weight, optimizer, loss_of


def test_cycles_the_loader_until_the_iteration_count_and_records_the_history():
    weight, optimizer, loss_of = _setup()
    steps: list[int] = []
    out = train_iterations(
        [1.0, 1.0, 1.0], optimizer, 250, loss_of, after_step=steps.append, device="cpu", amp=False, what="toy"
    )
    assert steps == list(range(1, 251))  # three batches per pass, cycled 84 times
    assert len(out["loss_history"]) == 125  # one mean per 2 iterations (250 // 100)
    assert out["loss_history"][0] > out["loss_history"][-1]
    assert out["final_loss"] == pytest.approx(out["loss_history"][-1])
    assert weight.item() == pytest.approx(3.0, abs=1e-3)


def test_a_non_finite_loss_names_the_iteration_and_the_parts():
    weight = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([weight], lr=0.1)

    def loss_of(batch):
        loss = weight * 0 + batch
        return loss, ({"loss_box": float(batch)} if not math.isfinite(batch) else {})

    with pytest.raises(TrainingDivergedError, match=r"detector loss became nan at iteration 2 .*loss_box"):
        train_iterations(
            [1.0, 1.0, math.nan],
            optimizer,
            10,
            loss_of,
            after_step=lambda _: None,
            device="cpu",
            amp=False,
            what="detector",
        )


def test_an_empty_loader_is_an_error_not_an_endless_loop():
    _, optimizer, loss_of = _setup()
    with pytest.raises(UsageError, match="segmenter has no training batch"):
        train_iterations(
            [], optimizer, 5, loss_of, after_step=lambda _: None, device="cpu", amp=False, what="segmenter"
        )
