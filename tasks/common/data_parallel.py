"""What a suite needs, beyond the one loop's DDP wrapper (common/train_loop.py: `data_parallel`), to
train and evaluate data-parallel when bob launched its run on several ranks (bob/distributed.py).

- `train_batches`: the training batches of an epoch- or iteration-counted loop. In one process it
  is the plain shuffled DataLoader the suite always used (so single-process runs are unchanged).
  Data-parallel, a `DistributedSampler` deals each rank `batch_size / world` samples of every step
  (the run's batch, hence its lr and its id, stay the same) from one permutation per pass, redrawn
  on every pass as one process's shuffle is.
- evaluation: each rank scores `bob.distributed.shard(len(split))`, the rows it deals this rank, and
  `gather_rows`, `gather_objects` and `all_sum` there put every rank's outputs back together, exactly.
- `record`: the protocol's `data_parallel` entry (world size, backend, batches, lr scaling).

Only fine-tuning (common/finetune.py) keeps one process's exact sample order and augmentations at
any world size (its `WindowSampler`); the other suites draw each rank's augmentation from the rank's
own stream (seed + rank), so N ranks train on the same data distribution, not the same draws.
BatchNorm layers that train normalise each rank's share of a batch by its own statistics (torch's
DDP default; no SyncBatchNorm); their running statistics are rank 0's (DDP broadcasts them before
every forward, and the one loop copies them to every rank after each epoch and at the end).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from bob import distributed
from bob.errors import UsageError

BATCHNORM = (
    "batch statistics per rank while training (no SyncBatchNorm); running statistics rank 0's, on "
    "every rank for evaluation"
)


def world_size() -> int:
    """The ranks of this run (1 outside a data-parallel run)."""
    return torch.distributed.get_world_size() if distributed.active() else 1


def rank() -> int:
    return torch.distributed.get_rank() if distributed.active() else 0


def per_device_batch(batch_size: int, what: str = "batch_size") -> int:
    """This rank's share of a step's `batch_size`: a usage error unless the ranks divide it."""
    world = world_size()
    if batch_size % world:
        raise UsageError(
            f"a data-parallel run of {world} ranks splits each step's batch of {batch_size} (task arg "
            f"{what}) over the ranks: pick a {what} that {world} divides."
        )
    return batch_size // world


class _Passes:
    """A DataLoader over a DistributedSampler that starts a new permutation on every pass (epoch)."""

    def __init__(self, loader: DataLoader, sampler: DistributedSampler) -> None:
        self.loader, self.sampler, self.passes = loader, sampler, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        self.sampler.set_epoch(self.passes)
        self.passes += 1
        return iter(self.loader)


def train_batches(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int,
    drop_last: bool,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> DataLoader | _Passes:
    """The training batches: in one process a DataLoader shuffled by a generator seeded with `seed`;
    data-parallel, this rank's `batch_size / world` of every step (module docstring), with the
    rank's own random stream for its augmentation (torch's seed + rank)."""
    options: dict[str, Any] = {
        "collate_fn": collate_fn,
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": persistent_workers and num_workers > 0,
    }
    if not distributed.active():
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            dataset, batch_size, shuffle=True, drop_last=drop_last, generator=generator, **options
        )
    world, me = world_size(), rank()
    local = per_device_batch(batch_size)
    if len(dataset) < world:  # type: ignore[arg-type]
        raise UsageError(f"a data-parallel run of {world} ranks needs at least {world} training samples.")
    torch.manual_seed(seed + me)  # each rank's augmentation stream (module docstring)
    sampler = DistributedSampler(dataset, world, me, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(dataset, local, sampler=sampler, drop_last=drop_last, **options)
    return _Passes(loader, sampler)


def record(batch_size: int, **extra: Any) -> dict[str, Any] | None:
    """The protocol's `data_parallel` entry for a run whose steps take `batch_size` samples (None
    outside a data-parallel run, so single-process protocols are unchanged)."""
    if not distributed.active():
        return None
    world = world_size()
    return {
        "world_size": world,
        "backend": torch.distributed.get_backend(),
        "per_device_batch": batch_size // world,
        "effective_batch": batch_size,
        "split": "each batch over ranks (DistributedSampler)",
        "lr_scaling": "none: the effective batch, hence the lr, is the run's at any world size",
        "augmentation_seed": "per rank: seed + rank",
        "batchnorm": BATCHNORM,
        "evaluation": "each rank scores its shard; outputs gathered in dataset order",
        **extra,
    }
