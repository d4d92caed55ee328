"""`efficiency/<input size>`: what a backbone costs at N×N input, measured on random tensors.

Per backbone (its feature extractor `forward_pooled`, no classifier):
- params: every parameter element, as timm counts them with the classifier removed;
- MACs per image: FlopCounterMode at batch 1, eval mode, fp32 (MACs = FLOPs / 2);
- batch-1 latency (VoVNet): median and p90 of `iters` timed calls after `warmup` calls;
- throughput (DeiT, ViT-ResNAS): images/s at the largest power-of-two batch that fits, capped;
- train-step time (ResNet-RS): forward + backward + SGD step under a 1000-class linear head, at
  `train_batch` halved until it fits;
- peak memory of each phase and energy per image where a counter exists (else a labelled proxy).

The task reads no dataset: the "datasets" of this suite are input sizes. Timing does not depend on
the weights, so `--weights random` gives the same costs without a download (the run records which).
The main metric is batch-1 latency in ms (lower is better): it is what this suite alone measures;
params and MACs are machine-independent and reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bob.errors import UsageError
from bob.progress import progress_bar
from bob.task import Task, TaskArgs, TaskOutput, run_arg
from bob.tasks.efficiency.measure import PRECISIONS
from bob.tasks.efficiency.meters import ENERGY_BACKENDS

if TYPE_CHECKING:
    from bob.context import RunContext


@dataclass
class EfficiencyArgs(TaskArgs):
    precision: str = run_arg(
        "fp32", "fp32 | bf16 | fp16 (autocast; fp16 needs a GPU). MACs are counted in fp32"
    )
    warmup: int = run_arg(5, "untimed calls before each timed loop (VoVNet/timm benchmarks: ~10)")
    iters: int = run_arg(20, "timed batch-1 calls for latency median/p90 (timm's benchmark: 40)")
    max_batch: int = run_arg(256, "throughput: the batch doubles from 1 while it fits, up to this cap")
    throughput_iters: int = run_arg(5, "timed calls at the throughput batch")
    train: bool = run_arg(True, "also time a train step (forward + backward + SGD)")
    train_batch: int = run_arg(128, "train step: the starting batch, halved until it fits (ResNet-RS: 128)")
    train_iters: int = run_arg(3, "timed train steps (after one untimed step)")
    cpu_max_batch: int = run_arg(8, "on CPU, the cap of both the throughput and the train-step batch")
    energy: str = run_arg("auto", "auto | rapl | nvml | proxy | off (auto: a real counter, else the proxy)")
    threads: int | None = run_arg(None, "torch intra-op threads for the run (default: torch's setting)")

    def validate(self) -> None:
        super().validate()
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        if self.energy not in ENERGY_BACKENDS:
            raise UsageError(f"energy must be one of {', '.join(ENERGY_BACKENDS)}, got {self.energy!r}.")
        positive = ("iters", "max_batch", "throughput_iters", "train_batch", "train_iters", "cpu_max_batch")
        for name in positive:
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.warmup < 0:
            raise UsageError(f"warmup must be 0 or more, got {self.warmup}.")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"threads must be at least 1, got {self.threads}.")


def _check_device(args: EfficiencyArgs, device: Any) -> None:
    kind = getattr(device, "type", str(device))
    if args.precision == "fp16" and kind == "cpu":
        raise UsageError(
            "precision=fp16 is not supported on CPU (no fp16 kernels for most ops); "
            "use precision=bf16 or fp32, or run on a GPU (--device cuda)."
        )


def _check_size(backbone: Any, size: int) -> None:
    """The input must be at least the model's coarsest stride, or its last feature map is empty."""
    strides = [f.stride for f in backbone.feature_info]
    if strides and size < max(strides):
        raise UsageError(
            f"{backbone.meta.name}: input {size}×{size} is smaller than its output stride {max(strides)}; "
            f"pick an efficiency/<size> task with size ≥ {max(strides)}."
        )


class Efficiency(Task):
    suite = "efficiency"
    version = "1"
    main_metric = "latency_ms"
    higher_is_better = False
    needs = ("backbone",)
    task_types = ("input",)
    description = (
        "cost at an input size on random tensors: params, MACs, batch-1 latency (main, ms), max-batch "
        "throughput, train-step time, peak memory, energy"
    )
    Args = EfficiencyArgs
    metrics_are_fractions: ClassVar[bool] = False  # ms, MACs, MB: printed as they are
    check_dataset: ClassVar[str] = "64"
    check_args: ClassVar[dict[str, str]] = {
        "warmup": "1",
        "iters": "3",
        "max_batch": "2",
        "throughput_iters": "1",
        "train_batch": "2",
        "train_iters": "1",
    }

    def run(self, ctx: RunContext) -> TaskOutput:
        import torch

        args: EfficiencyArgs = self.args  # type: ignore[assignment]
        _check_device(args, ctx.device)
        from bob.tasks.efficiency.meters import resolve_energy_backend

        energy = resolve_energy_backend(args.energy, ctx.device)
        previous_threads = torch.get_num_threads()
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        try:
            return self._measure(ctx, args, energy)
        finally:
            torch.set_num_threads(previous_threads)

    def _measure(self, ctx: RunContext, args: EfficiencyArgs, energy: str) -> TaskOutput:
        from bob.tasks.efficiency.protocol import measure_all

        size = ctx.data_config.input_size
        try:
            backbone = ctx.backbone()
        except (RuntimeError, ValueError, AssertionError) as err:  # e.g. a fixed-size model at another size
            raise UsageError(f"{ctx.ref.name} cannot be built for {size}×{size} inputs: {err}") from err
        _check_size(backbone, size)
        with progress_bar(f"efficiency {backbone.meta.name} @{size}", 4, "phases") as bar:
            metrics, protocol = measure_all(ctx, backbone, args, size, energy, bar)
        protocol["weights"] = ctx.ref.weights.kind
        protocol["weights_note"] = (
            "costs do not depend on the weights' values; random weights measure the same"
        )
        return TaskOutput(metrics, protocol)


def no_images(info: Any, split: str, **_: Any) -> Any:
    """The loader of the input-size entries: they hold no images, only a resolution."""
    raise UsageError(
        f"'{info.name}' is an input size for the efficiency suite (random tensors, no data); it has no "
        "images to load. Use it as efficiency/" + info.name + "."
    )
