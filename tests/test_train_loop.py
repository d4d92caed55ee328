"""The one training loop (tasks/common/train_loop.py): schedules, accumulation, divergence, hooks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bob.errors import TrainingDivergedError, UsageError
from bob.tasks.common.train_loop import AfterStep, Hook, KeepBest, TrainLoop, amp_dtype


def _scalar_problem(target: float = 3.0):
    weight = torch.nn.Parameter(torch.zeros(()))
    model = torch.nn.Module()
    model.weight = weight
    optimizer = torch.optim.SGD([weight], lr=0.1)

    def loss_of(batch):
        return ((weight - target) ** 2) * batch, {}

    return model, optimizer, loss_of


def test_an_iteration_schedule_cycles_the_loader_and_records_the_history():
    model, optimizer, loss_of = _scalar_problem()
    steps: list[int] = []
    loop = TrainLoop(
        model,
        optimizer,
        loss_of,
        [1.0, 1.0, 1.0],
        device="cpu",
        iterations=250,
        hooks=[AfterStep(steps.append)],
    ).run()
    assert steps == list(range(1, 251))  # three batches per pass, cycled 84 times
    history = loop.loss_history()
    assert len(history) == 125  # one mean per 2 iterations (250 // 100)
    assert history[0] > history[-1]
    assert loop.final_loss() == pytest.approx(history[-1])
    assert model.weight.item() == pytest.approx(3.0, abs=1e-3)


def test_an_epoch_schedule_calls_the_hooks_in_order_and_keeps_per_epoch_losses():
    model, optimizer, loss_of = _scalar_problem()
    calls: list[str] = []

    class Recorder(Hook):
        def before_train(self, loop):
            calls.append("before_train")

        def before_epoch(self, loop):
            calls.append(f"before_epoch {loop.epoch}")

        def after_step(self, loop):
            calls.append(f"step {loop.step}")

        def after_epoch(self, loop):
            calls.append(f"after_epoch {loop.epoch}")

        def after_train(self, loop):
            calls.append("after_train")

    loop = TrainLoop(
        model, optimizer, loss_of, lambda epoch: [1.0] * epoch, device="cpu", epochs=2, hooks=[Recorder()]
    )
    loop.run()
    assert calls == [
        "before_train",
        "before_epoch 1",
        "step 1",
        "after_epoch 1",
        "before_epoch 2",
        "step 2",
        "step 3",
        "after_epoch 2",
        "after_train",
    ]
    assert [len(e) for e in loop.epoch_losses] == [1, 2]
    assert loop.epoch_mean_loss(2) == pytest.approx(sum(loop.epoch_losses[1]) / 2)


def test_accumulating_two_half_batches_equals_one_full_batch():
    """A mean loss over a batch of 8 gives the same gradient as two batches of 4 accumulated (each
    loss halved), so both runs follow the same trajectory up to float rounding."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 5), torch.randn(32)

    def train(batch_size: int, accum: int) -> torch.Tensor:
        model = torch.nn.Linear(5, 1)
        torch.nn.init.zeros_(model.weight)
        torch.nn.init.zeros_(model.bias)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, 32, batch_size)]

        def loss_of(batch):
            xb, yb = batch
            return ((model(xb).squeeze(1) - yb) ** 2).mean()

        loop = TrainLoop(model, optimizer, loss_of, batches, device="cpu", epochs=3, accum_steps=accum).run()
        assert loop.step == 3 * 4  # four optimizer steps per epoch either way
        return torch.cat([model.weight.detach().flatten(), model.bias.detach()])

    assert torch.allclose(train(8, 1), train(4, 2), atol=1e-6)


def test_a_partial_accumulation_window_steps_on_the_mean_gradient_of_its_batches():
    """Batches of 4 accumulated by 2 over 12 samples: the windows (8, 4) follow exactly the
    trajectory of plain batches of 8 and 4: the last window's gradient is not shrunk by half."""
    torch.manual_seed(0)
    x, y = torch.randn(12, 5), torch.randn(12)

    def train(bounds: list[int], accum: int) -> torch.Tensor:
        model = torch.nn.Linear(5, 1)
        torch.nn.init.zeros_(model.weight)
        torch.nn.init.zeros_(model.bias)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        batches = [(x[a:b], y[a:b]) for a, b in itertools.pairwise(bounds)]

        def loss_of(batch):
            xb, yb = batch
            return ((model(xb).squeeze(1) - yb) ** 2).mean()

        TrainLoop(model, optimizer, loss_of, batches, device="cpu", epochs=2, accum_steps=accum).run()
        return torch.cat([model.weight.detach().flatten(), model.bias.detach()])

    assert torch.allclose(train([0, 8, 12], 1), train([0, 4, 8, 12], 2), atol=1e-6)


def test_an_epoch_that_ends_inside_an_accumulation_window_still_steps():
    model, optimizer, loss_of = _scalar_problem()
    loop = TrainLoop(model, optimizer, loss_of, [1.0] * 5, device="cpu", epochs=1, accum_steps=2).run()
    assert loop.step == 3 and len(loop.losses) == 3


def test_a_non_finite_loss_names_the_iteration_and_the_parts():
    model, optimizer, _ = _scalar_problem()

    def loss_of(batch):
        loss = model.weight * 0 + batch
        return loss, ({"loss_box": float(batch)} if not math.isfinite(batch) else {})

    loop = TrainLoop(
        model,
        optimizer,
        loss_of,
        [1.0, 1.0, math.nan],
        device="cpu",
        iterations=10,
        what="detector",
        hint="try a lower lr",
    )
    with pytest.raises(
        TrainingDivergedError,
        match=r"detector diverged: the loss became nan at iteration 3 .*loss_box.*lower lr",
    ):
        loop.run()


def test_a_non_finite_loss_names_the_epoch_and_step():
    model, optimizer, _ = _scalar_problem()
    loop = TrainLoop(
        model, optimizer, lambda b: model.weight * 0 + b, [1.0, math.inf], device="cpu", epochs=2
    )
    with pytest.raises(TrainingDivergedError, match="loss became inf at epoch 1, step 2"):
        loop.run()


def test_an_empty_loader_is_an_error_not_an_endless_loop():
    model, optimizer, loss_of = _scalar_problem()
    loop = TrainLoop(model, optimizer, loss_of, [], device="cpu", iterations=5, what="segmenter")
    with pytest.raises(UsageError, match="segmenter has no training batch"):
        loop.run()


def test_keep_best_restores_the_best_epoch_and_ties_keep_the_earlier_one():
    model, optimizer, loss_of = _scalar_problem()
    scores = iter([0.5, 0.9, 0.9, 0.1])
    seen: dict[int, float] = {}

    def score(loop):
        seen[loop.epoch] = model.weight.item()
        return next(scores), {"epoch_seen": loop.epoch}

    best = KeepBest(score)
    TrainLoop(model, optimizer, loss_of, [1.0], device="cpu", epochs=4, hooks=[best]).run()
    assert best.best_epoch == 2 and best.best_extras == {"epoch_seen": 2}
    assert model.weight.item() == pytest.approx(seen[2])


def test_schedule_and_accumulation_are_validated():
    model, optimizer, loss_of = _scalar_problem()
    with pytest.raises(ValueError, match="exactly one of epochs and iterations"):
        TrainLoop(model, optimizer, loss_of, [1.0], device="cpu")
    with pytest.raises(UsageError, match="accum_steps must be a positive integer"):
        TrainLoop(model, optimizer, loss_of, [1.0], device="cpu", epochs=1, accum_steps=0)


def test_mixed_precision_is_off_on_the_cpu():
    assert amp_dtype("cpu", amp=True) is None
    assert amp_dtype("cpu", amp=False) is None


def test_mixed_precision_on_cuda_prefers_bfloat16_unless_a_suite_names_its_dtype(monkeypatch):
    """No GPU needed: the choice reads only the device type and the bfloat16 capability."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert amp_dtype("cuda", amp=True) is torch.bfloat16
    assert amp_dtype("cuda:0", amp=True, dtype=torch.float16) is torch.float16  # the dense suites
    assert amp_dtype("cuda", amp=False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert amp_dtype("cuda", amp=True) is torch.float16
