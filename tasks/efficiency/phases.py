"""The efficiency suite's phases, run in this order by run.py: count, latency, throughput, train step.

Each phase returns its metrics and the settings it ran under (the protocol record).
"""

from __future__ import annotations

from typing import Any

import torch

from bob.backbones.base import Backbone
from bob.context import RunContext
from bob.errors import UsageError
from bob.tasks.common.cost import MACS_COUNTER, count_macs
from bob.tasks.efficiency import EfficiencyArgs
from bob.tasks.efficiency.measure import (
    Device,
    TrainStep,
    autocast,
    count_params,
    halving_batch,
    inference_mode,
    largest_fitting_batch,
    memory_access,
    synchronizer,
    time_calls,
)
from bob.tasks.efficiency.meters import EnergyMeter, PeakMemory

Phase = tuple[dict[str, float], dict[str, Any]]  # (metrics, protocol record)


def _inputs(batch: int, size: int, device: Device, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=gen).to(device)


def is_cpu(device: Device) -> bool:
    return getattr(device, "type", str(device)) == "cpu"


def count_phase(backbone: Backbone, size: int, device: Device, seed: int) -> Phase:
    """Params and per-image MACs of `forward_pooled`; a model that cannot take the size says so here."""
    x = _inputs(1, size, device, seed)
    with inference_mode(backbone):
        try:
            macs = count_macs(backbone.forward_pooled, x)
        except (RuntimeError, ValueError, AssertionError) as err:
            raise UsageError(f"{backbone.meta.name} cannot run at {size}×{size}: {err}") from err
        access = memory_access(backbone, backbone.forward_pooled, x)
    params = count_params(backbone)
    metrics = {"params": float(params), "params_m": params / 1e6, "macs": float(macs), "gmacs": macs / 1e9}
    metrics["memory_access_m"] = access / 1e6
    protocol = {
        "macs_counter": MACS_COUNTER,
        "macs_counter_torch": torch.__version__,
        "macs_counted": "backbone forward_pooled (feature extractor, no classifier), eval mode, fp32, "
        "batch 1; matmul/conv/attention only (elementwise ops, norms, activations are free), MACs = FLOPs/2",
        "params_counted": "every parameter of the backbone module (no classifier)",
        "params_meta": backbone.meta.params,
        "memory_access_counted": "VoVNet's memory access cost, in millions of elements: input + output + "
        "weight elements of every Conv2d and Linear layer in one batch-1 call (other layers not counted)",
    }
    return metrics, protocol


def latency_phase(
    backbone: Backbone,
    args: EfficiencyArgs,
    size: int,
    device: Device,
    energy: str,
    seed: int,
    calls: list[float] | None = None,
) -> Phase:
    """Batch-1 latency (median and p90 of `args.iters` timed calls); each call's seconds are appended
    to `calls` when given (the run's per-sample file: the median is recomputed from them)."""
    x = _inputs(1, size, device, seed)
    sync = synchronizer(device)
    with inference_mode(backbone), autocast(device, args.precision), PeakMemory(device) as memory:
        for _ in range(args.warmup):
            backbone.forward_pooled(x)
        with EnergyMeter(energy, device) as meter:
            timing = time_calls(lambda: backbone.forward_pooled(x), 0, args.iters, sync)
    metrics = {"latency_ms": timing.median_ms, "latency_p90_ms": timing.p90_ms}
    if calls is not None:
        calls.extend(timing.seconds)
    if memory.peak_mb is not None:
        metrics["peak_mem_mb"] = memory.peak_mb
    reading = meter.reading
    if reading.value is not None:
        per_image = reading.value / args.iters
        name = "energy_j_per_img" if reading.unit == "J" else _proxy_name(device)
        metrics[name] = per_image
    protocol = {
        "latency": {"batch": 1, "warmup": args.warmup, "iters": args.iters, "stat": "median, p90"},
        "memory_method": memory.method,
        "memory_measured": "increase over the resident memory (weights loaded) across the batch-1 warm-up and "
        "latency loop",
        "energy_backend": energy,
        "energy_method": reading.method,
        "energy_measured": "over the batch-1 latency loop, divided by its iters",
    }
    return metrics, protocol


def _proxy_name(device: Device) -> str:
    return "energy_proxy_cpu_s_per_img" if is_cpu(device) else "energy_proxy_gpu_s_per_img"


def throughput_phase(backbone: Backbone, args: EfficiencyArgs, size: int, device: Device, seed: int) -> Phase:
    cap = min(args.max_batch, args.cpu_max_batch) if is_cpu(device) else args.max_batch
    sync = synchronizer(device)
    with inference_mode(backbone), autocast(device, args.precision):

        def attempt(batch: int) -> None:
            backbone.forward_pooled(_inputs(batch, size, device, seed))
            sync()

        with PeakMemory(device) as memory:
            search = largest_fitting_batch(attempt, cap)
            memory.restart_peak()
            x = _inputs(search.batch, size, device, seed)
            timing = time_calls(
                lambda: backbone.forward_pooled(x), 1, args.throughput_iters, sync, search.batch
            )
    metrics = {"throughput_img_s": timing.images_per_s, "throughput_batch": float(search.batch)}
    if memory.peak_mb is not None:
        metrics["throughput_peak_mem_mb"] = memory.peak_mb
    protocol = {
        "throughput": {
            "batch_cap": cap,
            "search": "double from 1 while it fits, up to the cap",
            **search.to_dict(),
            "warmup": 1,
            "iters": args.throughput_iters,
            "memory_measured": "increase over the resident memory across the batch search and timed calls",
        }
    }
    return metrics, protocol


def train_phase(ctx: RunContext, args: EfficiencyArgs, size: int) -> Phase:
    device = ctx.device
    start = min(args.train_batch, args.cpu_max_batch) if is_cpu(device) else args.train_batch
    backbone = ctx.build_backbone(input_size=size)  # a private copy: training never touches the shared one
    torch.manual_seed(ctx.seed)
    step = TrainStep(backbone, device, args.precision, size)
    sync = synchronizer(device)

    def attempt(batch: int) -> None:
        step(*step.batch(batch, size))
        sync()

    with PeakMemory(device) as memory:
        search = halving_batch(attempt, start)
        memory.restart_peak()
        x, y = step.batch(search.batch, size)
        timing = time_calls(lambda: step(x, y), 0, args.train_iters, sync, search.batch)
    metrics = {
        "train_step_ms": timing.median_ms,
        "train_img_s": search.batch / (timing.median_ms / 1e3),
        "train_batch": float(search.batch),
    }
    if memory.peak_mb is not None:
        metrics["train_peak_mem_mb"] = memory.peak_mb
    protocol = {
        "train_step": {
            "start_batch": start,
            "search": "halve from start_batch until it fits (ResNet-RS)",
            **search.to_dict(),
            "warmup": "the search's successful step",
            "iters": args.train_iters,
            "stat": "median",
            "step": "forward_pooled + linear head (1000 classes) + cross-entropy on random labels, "
            "backward, SGD (lr 0.1, momentum 0.9); train mode",
            "memory_measured": "increase over the resident memory (weights loaded) across the batch "
            "search and timed steps: gradients, momentum buffers, activations",
        }
    }
    return metrics, protocol
