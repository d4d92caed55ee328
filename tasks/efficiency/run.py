"""The efficiency protocol: the phases of phases.py in order on the run's backbone, with the
environment that changes timings (threads, precision, device, torch backend flags) recorded."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import torch

from bob.backbones.base import Backbone
from bob.context import RunContext
from bob.errors import UsageError
from bob.progress import Progress, progress_bar
from bob.samples import make_samples
from bob.task import TaskOutput
from bob.tasks.common.samples import save_samples
from bob.tasks.efficiency import Efficiency, EfficiencyArgs
from bob.tasks.efficiency.load import ForeignLoad, load_record, warn_if_busy
from bob.tasks.efficiency.measure import Device
from bob.tasks.efficiency.meters import resolve_energy_backend
from bob.tasks.efficiency.phases import count_phase, is_cpu, latency_phase, throughput_phase, train_phase

# What a terminal table shows first.
HEADLINE = (
    "latency_ms",
    "gmacs",
    "params_m",
    "throughput_img_s",
    "train_step_ms",
    "peak_mem_mb",
    "train_peak_mem_mb",
)


def run(task: Efficiency, ctx: RunContext) -> TaskOutput:
    args = task.args
    _check_device(args, ctx.device)
    energy = resolve_energy_backend(args.energy, ctx.device)
    previous_threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _measure(ctx, args, energy)
    finally:
        torch.set_num_threads(previous_threads)


def _check_device(args: EfficiencyArgs, device: Device) -> None:
    if args.precision == "fp16" and is_cpu(device):
        raise UsageError(
            "precision=fp16 is not supported on CPU (no fp16 kernels for most ops); "
            "use precision=bf16 or fp32, or run on a GPU (--device cuda)."
        )


def _check_size(backbone: Backbone, size: int) -> None:
    """The input must be at least the model's coarsest stride, or its last feature map is empty."""
    strides = [f.stride for f in backbone.feature_info]
    if strides and size < max(strides):
        raise UsageError(
            f"{backbone.meta.name}: input {size}×{size} is smaller than its output stride {max(strides)}; "
            f"pick an efficiency/<size> task with size ≥ {max(strides)}."
        )


def _measure(ctx: RunContext, args: EfficiencyArgs, energy: str) -> TaskOutput:
    size = ctx.data_config.input_size
    try:
        backbone = ctx.backbone()
    except (RuntimeError, ValueError, AssertionError) as err:  # e.g. a fixed-size model at another size
        raise UsageError(f"{ctx.ref.name} cannot be built for {size}×{size} inputs: {err}") from err
    _check_size(backbone, size)
    calls: list[float] = []
    with progress_bar(f"efficiency {backbone.meta.name} @{size}", 4, "phases") as bar:
        metrics, protocol = measure_all(ctx, backbone, args, size, energy, bar, calls)
    protocol["weights"] = ctx.ref.weights.kind
    protocol["weights_note"] = "costs do not depend on the weights' values; random weights measure the same"
    samples = make_samples(
        "quantile",
        "latency_ms",
        {"value": np.asarray(calls)},
        units="timed call",
        params={"q": 0.5, "scale": 1e3},
    )
    return save_samples(ctx, TaskOutput(metrics, protocol), samples)


def measure_all(
    ctx: RunContext,
    backbone: Backbone,
    args: EfficiencyArgs,
    size: int,
    energy: str,
    bar: Progress,
    latency_calls: list[float] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Every phase in order; the metrics come back headline first. `latency_calls` receives the
    seconds of each timed batch-1 call."""
    metrics: dict[str, float] = {}
    protocol: dict[str, Any] = {"input_size": size, "input": f"random tensors 3×{size}×{size}"}
    protocol.update(environment(args, ctx.device))
    # (progress label, the phase, its name in the foreign-load record: None for the untimed count)
    phases = [
        ("counting params and MACs", lambda: count_phase(backbone, size, ctx.device, ctx.seed), None),
        (
            "batch-1 latency",
            lambda: latency_phase(backbone, args, size, ctx.device, energy, ctx.seed, latency_calls),
            "latency",
        ),
        ("throughput", lambda: throughput_phase(backbone, args, size, ctx.device, ctx.seed), "throughput"),
    ]
    if args.train:
        phases.append(("train step", lambda: train_phase(ctx, args, size), "train_step"))
    loads: dict[str, float | None] = {}
    for label, phase, timed in phases:
        bar.update(label)
        with ForeignLoad() as load:
            m, p = phase()
        if timed is not None:
            loads[timed] = load.cores
        metrics.update(m)
        protocol.update(p)
        bar.advance()
    record = load_record(loads)
    warning = warn_if_busy(backbone.meta.name, record)
    protocol["foreign_load"] = {**record, "warning": warning} if warning else record
    # VoVNet's "GPU-computation efficiency": MACs per second at the throughput batch.
    metrics["gmacs_per_s"] = metrics["gmacs"] * metrics["throughput_img_s"]
    first = [m for m in HEADLINE if m in metrics]
    return {**{m: metrics[m] for m in first}, **metrics}, protocol


def environment(args: EfficiencyArgs, device: Device) -> dict[str, Any]:
    """What changes timings besides the model: the device, precision, threads and backend flags."""
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if getattr(device, "type", "") == "cuda"
        else platform.processor() or platform.machine(),
        "precision": args.precision,
        "autocast": args.precision != "fp32",
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "timer": "time.perf_counter" + ("" if is_cpu(device) else f" with {device.type} synchronize"),
    }
