"""The one training loop: every suite that trains a model runs its optimizer steps here.

A suite supplies what is its own: the model, the optimizer, the batches and the loss of one batch
(`loss_of(batch) -> loss` or `(loss, named parts)`). The loop owns everything else, in one place:

  - the schedule's unit: `epochs` (the batches of each epoch come from `batches(epoch)`, or a
    loader re-iterated every epoch) or `iterations` (a loader cycled until that many optimizer
    steps have run, mmdetection-style);
  - mixed precision on CUDA (`amp`): bfloat16 where the device supports it, else float16 with a
    gradient scaler; nothing changes on the CPU;
  - gradient accumulation: `accum_steps` batches per optimizer step, each loss divided by it (an
    epoch's last, partial window steps on the mean gradient of the batches it has);
  - the divergence check: a non-finite loss stops the run with `TrainingDivergedError` naming the
    epoch, the step and the loss's parts;
  - the progress bar, and the loss of every optimizer step (`losses`), from which `loss_history`
    (at most 100 means) and per-epoch means are read;
  - hooks (detectron2's pattern: `before_train`, `before_epoch`, `after_step`, `after_epoch`,
    `after_train`) for the rest: learning-rate schedules, evaluating and keeping the best epoch,
    reporting to a search.

Forward, backward and the optimizer step happen only in `TrainLoop.run_step`, so running the loop
data-parallel means wrapping the model and the batches, not reshaping the loop: a suite passes
`data_parallel(model)` (DistributedDataParallel when bob launched the run on several ranks, the model
itself otherwise) and calls it in `loss_of`; each rank feeds its own shard of every step. The loop
then skips the gradient all-reduce on accumulation micro-steps (`no_sync`), averages each loss over
the ranks (so every rank's divergence check and loss history agree), draws the progress bar on rank 0
only, copies rank 0's buffers (BatchNorm running statistics) to every rank after each epoch and at
the end (`sync_buffers`, so the hooks and the suite's sharded evaluation score rank 0's model), and
keeps the best epoch from the unwrapped model (`loop.module`). One process runs as before.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence, Sized
from typing import Any

import numpy as np
import torch
from torch import nn

from bob import distributed
from bob.errors import TrainingDivergedError, UsageError
from bob.progress import Progress, progress_bar

HISTORY_POINTS = 100  # `loss_history`: the mean loss of each 1% of training

# The loss of one batch: a scalar tensor, or (scalar, {part name: value}) for the divergence message.
LossOf = Callable[[Any], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]


class Hook:
    """Called by the loop at fixed points; `loop` gives the state (epoch, step, losses, model)."""

    def before_train(self, loop: TrainLoop) -> None:
        """Before the first step."""

    def before_epoch(self, loop: TrainLoop) -> None:
        """Before the first batch of an epoch (epoch-counted loops only)."""

    def after_step(self, loop: TrainLoop) -> None:
        """After each optimizer step; `loop.step` counts the steps done."""

    def after_epoch(self, loop: TrainLoop) -> None:
        """After the last step of an epoch (epoch-counted loops only)."""

    def after_train(self, loop: TrainLoop) -> None:
        """After the last step, also when training stops early."""


class AfterStep(Hook):
    """Call `fn(step)` after every optimizer step: a learning-rate schedule, a counter."""

    def __init__(self, fn: Callable[[int], Any]) -> None:
        self.fn = fn

    def after_step(self, loop: TrainLoop) -> None:
        self.fn(loop.step)


class KeepBest(Hook):
    """After every epoch, score the model (`score(loop) -> value, extras`); keep a CPU copy of the best
    epoch's weights (ties keep the earlier epoch) and load it back when training ends. With no
    `score`, the last epoch wins."""

    def __init__(self, score: Callable[[TrainLoop], tuple[float, dict[str, Any]]] | None = None) -> None:
        self.score = score
        self.best: tuple[float, int, dict[str, torch.Tensor], dict[str, Any]] | None = None

    def after_epoch(self, loop: TrainLoop) -> None:
        value, extras = self.score(loop) if self.score is not None else (float(loop.epoch), {})
        if self.best is None or value > self.best[0]:
            state = {k: v.detach().to("cpu", copy=True) for k, v in loop.module.state_dict().items()}
            self.best = (value, loop.epoch, state, extras)

    def after_train(self, loop: TrainLoop) -> None:
        if self.best is not None:
            loop.module.load_state_dict(self.best[2])

    @property
    def best_epoch(self) -> int:
        return self.best[1] if self.best is not None else 0

    @property
    def best_state(self) -> dict[str, torch.Tensor]:
        return self.best[2] if self.best is not None else {}

    @property
    def best_extras(self) -> dict[str, Any]:
        return self.best[3] if self.best is not None else {}


def amp_dtype(device: torch.device | str, amp: bool, dtype: torch.dtype | None = None) -> torch.dtype | None:
    """The autocast dtype of mixed precision on CUDA: `dtype` when the suite names one, else bfloat16
    where the device supports it and float16 otherwise; None (full precision) off CUDA or with `amp`
    off. The dense suites name float16: under bfloat16 torchvision's box decoding rounds coordinates
    to 2 px steps above 256 px (4 px above 512)."""
    device = torch.device(device)
    if not amp or device.type != "cuda":
        return None
    if dtype is not None:
        return dtype
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


_amp_dtype = amp_dtype  # for TrainLoop, whose argument of that name shadows the function


def autocast(device: torch.device | str, amp: bool, dtype: torch.dtype | None = None) -> torch.autocast:
    """The autocast context of `amp_dtype` (a no-op context when it is None): for inference too."""
    chosen = amp_dtype(device, amp, dtype)
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=chosen or torch.float32, enabled=chosen is not None)


def data_parallel(model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """`model` wrapped in DistributedDataParallel when bob launched the run as a process group (one
    CUDA device per rank, or the CPU with gloo), else `model` itself. Frozen parameters
    (`requires_grad=False`) are left out by DDP; `find_unused_parameters` is for trainable parameters
    that a step's forward may not reach."""
    if not distributed.active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else None
    )
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank; nothing in one process.

    DDP broadcasts rank 0's buffers at the start of each training forward, after which every rank
    updates its own from its share of the batch: after the last step they differ by that update.
    Without this copy the ranks would evaluate slightly different models, and a sharded evaluation
    would not score the model rank 0 saves. `TrainLoop` calls it after every epoch and at the end."""
    if not distributed.active():
        return
    for buffer in unwrap(model).buffers():
        torch.distributed.broadcast(buffer.data, src=0)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (the model itself when not wrapped)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


class TrainLoop:
    """Train `model` with `optimizer` on the loss `loss_of` returns for each batch.

    Give exactly one of `epochs` (with `batches`: a callable `epoch -> iterable of batches`, or an
    iterable re-iterated every epoch) and `iterations` (with `batches` an iterable cycled until that
    many optimizer steps). `amp_dtype` names the mixed-precision dtype instead of the default (see the
    function `amp_dtype`); float16 gets a gradient scaler. `what` names the model in the progress bar
    and in errors; `hint` ends the divergence message (what to lower). `total_steps` sizes the
    progress bar when the loop cannot count the steps itself (batches from a callable);
    `progress_unit="epochs"` counts epochs instead. The model is put in train mode at the start of every epoch
    (and once, for iteration-counted loops). A `data_parallel` model trains data-parallel (module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_of: LossOf,
        batches: Callable[[int], Iterable[Any]] | Iterable[Any],
        *,
        device: torch.device | str,
        epochs: int | None = None,
        iterations: int | None = None,
        amp: bool = False,
        amp_dtype: torch.dtype | None = None,
        accum_steps: int = 1,
        hooks: Sequence[Hook] = (),
        what: str = "model",
        hint: str = "",
        progress_unit: str = "steps",
        total_steps: int | None = None,
    ) -> None:
        if (epochs is None) == (iterations is None):
            raise ValueError("give exactly one of epochs and iterations")
        if accum_steps < 1:
            raise UsageError(f"accum_steps must be a positive integer, got {accum_steps}.")
        self.model, self.optimizer, self.loss_of, self.batches = model, optimizer, loss_of, batches
        self.module = unwrap(model)  # what hooks save and load: never the DDP wrapper
        self.data_parallel = self.module is not model
        self.device = torch.device(device)
        self.epochs, self.iterations = epochs, iterations
        self.accum_steps = accum_steps
        self.hooks = list(hooks)
        self.what, self.hint = what, hint
        self.progress_unit = progress_unit
        self.total_steps = total_steps
        self.amp_dtype = _amp_dtype(self.device, amp, amp_dtype)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.epoch = 0  # 1-based once training starts; 0 for iteration-counted loops
        self.step = 0  # optimizer steps done
        self.losses: list[float] = []  # the loss of every optimizer step (summed over its micro-batches)
        self.epoch_losses: list[list[float]] = []
        self.bar: Progress | None = None
        self._micro = 0
        self._pending = 0.0
        self._left: int | None = None  # batches left in the epoch, when the loop can count them

    # ----------------------------------------------------------------------------------------- run
    def run(self) -> TrainLoop:
        total = self._total_steps()
        with progress_bar(f"training {self.what}", total, self.progress_unit) as bar:
            self.bar = bar
            self._call("before_train")
            try:
                if self.epochs is not None:
                    self._run_epochs()
                else:
                    self._run_iterations()
            finally:
                self.bar = None
            if self.data_parallel:  # what is evaluated and saved next is rank 0's model
                sync_buffers(self.module)
            self._call("after_train")
        return self

    def _run_epochs(self) -> None:
        assert self.epochs is not None
        for epoch in range(1, self.epochs + 1):
            self.epoch = epoch
            self.model.train()
            self.epoch_losses.append([])
            if self.bar is not None:
                self.bar.update(f"training {self.what}, epoch {epoch}/{self.epochs}")
            self._call("before_epoch")
            batches = self.batches(epoch) if callable(self.batches) else self.batches
            self._left = len(batches) if isinstance(batches, Sized) else None
            for batch in batches:
                self.run_step(batch)
            self._flush()
            if self.data_parallel:  # the epoch's hooks score and keep rank 0's model on every rank
                sync_buffers(self.module)
            if self.progress_unit == "epochs" and self.bar is not None:
                self.bar.advance(1)
            self._call("after_epoch")

    def _run_iterations(self) -> None:
        assert self.iterations is not None and not callable(self.batches)
        self.model.train()
        self._left = -1  # no epoch ends inside a window: only its last micro-step synchronises
        while self.step < self.iterations:
            seen = 0
            for batch in self.batches:
                seen += 1
                self.run_step(batch)
                if self.step >= self.iterations:
                    break
            if seen == 0:
                raise UsageError(f"the {self.what} has no training batch: the training split is empty.")

    def run_step(self, batch: Any) -> None:
        """One batch: forward under autocast, the divergence check, backward, and every
        `accum_steps`-th batch the optimizer step and the `after_step` hooks."""
        with self._sync_context():
            value = self._forward_backward(batch)
        self._micro += 1
        self._pending += value / self.accum_steps if self.accum_steps > 1 else value
        if self._micro == self.accum_steps:
            self._optimizer_step()

    def _forward_backward(self, batch: Any) -> float:
        """The batch's loss (averaged over the ranks when data-parallel), checked, then its backward."""
        dtype = self.amp_dtype or torch.float32
        with torch.autocast(self.device.type, dtype=dtype, enabled=self.amp_dtype is not None):
            out = self.loss_of(batch)
        loss, parts = out if isinstance(out, tuple) else (out, {})
        value = float(loss.detach())
        if self.data_parallel:  # every rank sees the same value, so every rank stops together
            value = distributed.all_mean(value)
        if not math.isfinite(value):
            raise TrainingDivergedError(self._divergence(value, parts))
        if self._micro == 0:
            self.optimizer.zero_grad(set_to_none=True)
        scaled = loss / self.accum_steps if self.accum_steps > 1 else loss
        if self.scaler is not None:
            self.scaler.scale(scaled).backward()
        else:
            scaled.backward()
        return value

    def _sync_context(self) -> contextlib.AbstractContextManager[Any]:
        """DDP's `no_sync` on an accumulation micro-step whose window goes on (its gradients stay on
        the rank until the window's last batch); a null context otherwise. The epoch's last batch
        always synchronises, as does every batch of an epoch whose length is unknown."""
        if self._left is not None and self._left > 0:
            self._left -= 1
        if not self.data_parallel or self._micro + 1 >= self.accum_steps:
            return contextlib.nullcontext()
        if self._left is None or self._left == 0:
            return contextlib.nullcontext()
        return self.model.no_sync()

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        if self.data_parallel:
            distributed.fault_point(self.step)
        self.losses.append(self._pending)
        if self.epoch_losses:
            self.epoch_losses[-1].append(self._pending)
        self._micro, self._pending = 0, 0.0
        if self.bar is not None and self.progress_unit != "epochs":
            self.bar.advance(1)
        self._call("after_step")

    def _flush(self) -> None:
        """An epoch that ends inside an accumulation window still takes its optimizer step, on the
        mean gradient of the batches the window saw (each of their losses was divided by
        `accum_steps`, so the gradients are scaled back up by `accum_steps / batches seen`)."""
        if self._micro:
            factor = self.accum_steps / self._micro
            if factor != 1:
                for group in self.optimizer.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.mul_(factor)
            self._pending *= factor
            self._optimizer_step()

    # ------------------------------------------------------------------------------------- helpers
    def _call(self, name: str) -> None:
        for hook in self.hooks:
            getattr(hook, name)(self)

    def _total_steps(self) -> int | None:
        """The progress bar's total: given, counted from the schedule, or unknown (a callable schedule)."""
        if self.progress_unit == "epochs":
            return self.epochs
        if self.total_steps is not None or self.iterations is not None:
            return self.total_steps or self.iterations
        assert self.epochs is not None
        size = len(self.batches) if isinstance(self.batches, Sized) else None
        return self.epochs * math.ceil(size / self.accum_steps) if size is not None else None

    def _divergence(self, value: float, parts: dict[str, float]) -> str:
        where = (
            f"epoch {self.epoch}, step {self.step + 1}"
            if self.epochs is not None
            else f"iteration {self.step + 1}"
        )
        detail = f" ({parts})" if parts else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{self.what} diverged: the loss became {value} at {where}{detail}{hint}"

    # ------------------------------------------------------------------------------------ readings
    def epoch_mean_loss(self, epoch: int | None = None) -> float:
        """The mean step loss of an epoch (default: the last one)."""
        losses = self.epoch_losses[(epoch or len(self.epoch_losses)) - 1]
        return sum(losses) / len(losses) if losses else math.nan

    def _window(self) -> int:
        return max(1, (self.iterations or len(self.losses)) // HISTORY_POINTS)

    def loss_history(self) -> list[float]:
        """The mean loss of each 1% of the planned steps (of every step when there are fewer than 100)."""
        every = self._window()
        full = len(self.losses) // every * every
        return [float(np.mean(self.losses[i : i + every])) for i in range(0, full, every)]

    def final_loss(self) -> float:
        """The mean loss of the steps after the last full history window, else of that window."""
        every = self._window()
        tail = self.losses[len(self.losses) // every * every :]
        return float(np.mean(tail or self.loss_history()[-1:] or [math.nan]))
