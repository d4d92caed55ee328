"""The measurements of the efficiency suite: parameters, memory access, latency, throughput, train-step time.

- MACs are counted by tasks/common/cost.py (torch's FlopCounterMode; the tradeoff suite counts the
  same way); the suite gives it the backbone's `forward_pooled`, i.e. the feature extractor without
  a classifier.
- Times are wall-clock `time.perf_counter` intervals around each call, after warm-up calls, with
  `torch.cuda.synchronize` before and after on a GPU so queued kernels are inside the interval.
- Batch searches treat running out of memory as data, as timm's benchmark does: throughput doubles
  the batch until it no longer fits (or hits a cap), the train step halves it until it fits.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bob.backbones.base import Backbone
from bob.runner import is_out_of_memory

# Autocast dtype of each `precision` task arg (tasks/efficiency/__init__.py lists the choices).
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
Device = torch.device | str


def count_params(module: nn.Module) -> int:
    """Every parameter element of `module` (trainable or not), as timm and bob's backbone index count them."""
    return int(sum(p.numel() for p in module.parameters()))


def memory_access(module: nn.Module, fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> int:
    """Memory access cost (VoVNet, after ShuffleNetV2) of one call `fn(x)`, in elements: for every
    Conv2d and Linear layer of `module`, input + output elements + weight elements. For a stride-1
    conv this is VoVNet's h·w·(c_in + c_out) + k²·c_in·c_out (divided by groups); other layers
    (norms, activations, attention products) are not counted."""
    total = 0

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += inputs[0].numel() + output.numel() + layer.weight.numel()

    handles = [
        m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            fn(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def synchronizer(device: Device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on CPU)."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if kind == "mps":
        return torch.mps.synchronize
    return lambda: None


def autocast(device: Device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast to the precision's dtype; fp32 runs as is."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=getattr(device, "type", str(device)), dtype=dtype)


@dataclass
class Timing:
    """Per-call wall times in seconds, with the settings they were taken under."""

    seconds: list[float]
    warmup: int
    batch: int

    @property
    def median_ms(self) -> float:
        return float(np.median(self.seconds) * 1e3)

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.seconds, 90) * 1e3)

    @property
    def images_per_s(self) -> float:
        return float(self.batch * len(self.seconds) / sum(self.seconds))


def time_calls(
    fn: Callable[[], Any],
    warmup: int,
    iters: int,
    sync: Callable[[], None],
    batch: int = 1,
    on_call: Callable[[], None] | None = None,
) -> Timing:
    """Call `fn` `warmup` times untimed, then `iters` times, timing each call on its own."""
    if iters < 1:
        raise ValueError(f"iters must be at least 1, got {iters}")
    for _ in range(warmup):
        fn()
        if on_call:
            on_call()
    seconds = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - start)
        if on_call:
            on_call()
    return Timing(seconds, warmup, batch)


# ----------------------------------------------------------------------------------- batch searches


def free_memory() -> None:
    """Hand what a failed (out-of-memory) attempt left to CUDA's caching allocator back to the card.

    Only on CUDA: refcounting already dropped the attempt's tensors, and a full `gc.collect` (for
    tensors caught in reference cycles) costs about a second in a process with timm loaded.
    """
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


@dataclass
class BatchSearch:
    """Which batch sizes were tried, which ran out of memory, and the one chosen."""

    batch: int
    tried: list[int] = field(default_factory=list)
    out_of_memory: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "tried": self.tried, "out_of_memory": self.out_of_memory}


def largest_fitting_batch(attempt: Callable[[int], Any], cap: int) -> BatchSearch:
    """Double the batch from 1 while `attempt(batch)` fits in memory and the batch stays ≤ `cap`.

    Returns the largest power of two that fitted. An out-of-memory error at batch 1 propagates;
    any other error propagates at once (it is not a memory limit).
    """
    if cap < 1:
        raise ValueError(f"the batch cap must be at least 1, got {cap}")
    search = BatchSearch(batch=0)
    batch = 1
    while batch <= cap:
        search.tried.append(batch)
        if not _fits(attempt, batch, allow_oom=search.batch > 0):
            search.out_of_memory.append(batch)
            break
        search.batch = batch
        batch *= 2
    return search


def _fits(attempt: Callable[[int], Any], batch: int, allow_oom: bool) -> bool:
    """Run `attempt(batch)`; False if it ran out of memory (and that is allowed), memory freed
    after the exception (and the tensors its traceback holds) is gone."""
    try:
        attempt(batch)
        return True
    except Exception as err:
        if not (allow_oom and is_out_of_memory(err)):
            raise
    free_memory()
    return False


def halving_batch(attempt: Callable[[int], Any], start: int) -> BatchSearch:
    """Try `attempt(start)`, halving the batch on every out-of-memory error until one fits.

    ResNet-RS's rule for its train-step times. If batch 1 does not fit either, its error propagates.
    """
    if start < 1:
        raise ValueError(f"the starting batch must be at least 1, got {start}")
    search = BatchSearch(batch=0)
    batch = start
    while True:
        search.tried.append(batch)
        if _fits(attempt, batch, allow_oom=batch > 1):
            search.batch = batch
            return search
        search.out_of_memory.append(batch)
        batch //= 2


# ------------------------------------------------------------------------------------------ one step


@dataclass
class TrainStep:
    """forward + backward + SGD step of the backbone under a linear classifier, on random labels."""

    backbone: Backbone
    device: Device
    precision: str
    image_size: int
    num_classes: int = 1000
    lr: float = 0.1
    momentum: float = 0.9
    _head: nn.Linear | None = None
    _optimizer: torch.optim.Optimizer | None = None
    _scaler: torch.amp.GradScaler | None = None

    def __post_init__(self) -> None:
        self.backbone.train()
        self._head = torch.nn.Linear(self._pooled_dim(), self.num_classes).to(self.device)
        params = [*self.backbone.trainable().parameters(), *self._head.parameters()]
        self._optimizer = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
        if self.precision == "fp16":
            self._scaler = torch.amp.GradScaler(getattr(self.device, "type", str(self.device)))

    def _pooled_dim(self) -> int:
        """The declared embedding width, else the width of a probe call (user backbones may not declare it)."""
        if self.backbone.meta.pooled_dim is not None:
            return int(self.backbone.meta.pooled_dim)
        with torch.no_grad():
            return int(self.backbone.forward_pooled(self.batch(2, self.image_size)[0]).shape[-1])

    def batch(self, size: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(size, 3, image_size, image_size, device=self.device)
        y = torch.randint(0, self.num_classes, (size,), device=self.device)
        return x, y

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One step, timed by the suite: a measurement of cost, not training (nothing is kept)."""
        assert self._head is not None and self._optimizer is not None
        self._optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            logits = self._head(self.backbone.forward_pooled(x))
        loss = F.cross_entropy(logits.float(), y)
        if self._scaler is not None:
            self._scaler.scale(loss).backward()
            self._scaler.step(self._optimizer)
            self._scaler.update()
        else:
            loss.backward()
            self._optimizer.step()


@contextlib.contextmanager
def inference_mode(backbone: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd, as every inference measurement runs."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        backbone.train(was_training)
