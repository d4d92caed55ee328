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
params and MACs are machine-independent and reported beside it. The phases are phases.py's, the
measurements measure.py's (MACs: tasks/common/cost.py), the meters of memory and energy meters.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.errors import UsageError
from bob.task import Task, TaskArgs, run_arg

PRECISIONS = ("fp32", "bf16", "fp16")
ENERGY_BACKENDS = ("auto", "rapl", "nvml", "proxy", "off")


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
    args: EfficiencyArgs
