"""Execute RunSpecs: skip what is done, run the rest, turn every failure into a `failed` RunResult.

    spec → stored ok result? skip : resolve backbone → task.run(ctx) (features via the cache)
         → RunResult written atomically (temp file + rename)

A run that raises becomes a failed result with the error type, message and traceback tail; it is
written like any other result, so a sweep goes on and the failure is data.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import random
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bob import distributed, env, trackers
from bob.backbones import resolve_backbone
from bob.backbones.meta import Extraction
from bob.cache import FeatureCache
from bob.errors import BobError, ResultFileError, TaskNotApplicable, UsageError
from bob.results import ResultStore, RunResult
from bob.spec import RunSpec
from bob.suites import parse_task_name, task_class

if TYPE_CHECKING:
    import torch

    from bob.context import RunContext
    from bob.task import Task

log = logging.getLogger(__name__)

TRACEBACK_LINES = 25


@dataclass
class RunOptions:
    results_dir: Path = Path("results/raw")
    cache_dir: Path | None = None
    device: str = "auto"
    batch_size: int = 64
    num_workers: int | None = None
    overwrite: bool = False
    # Store each run's per-sample outputs beside its result (never part of a run's identity).
    save_samples: bool = True
    # The sweep invocation that runs it (a token written into the result), so two sweeps on one
    # results dir each count only their own runs.
    sweep: str | None = None
    # The geometry cache's folder: decoded pixels shared by every backbone with the same eval
    # geometry (`bob.pixels`). None: every extraction decodes its images. Never part of an identity:
    # features read through it equal the features computed without it.
    geometry_cache: Path | None = None
    # Experiment trackers (`bob.trackers`: mlflow, wandb) that mirror each settled run; validated by
    # the API before any run. Never part of an identity.
    trackers: tuple[str, ...] = ()
    # Data-parallel ranks of each sweep run whose suite trains data-parallel (`bob sweep
    # --ranks-per-run`, bob/sweep/worker.py); other runs keep one process. Never part of an identity.
    ranks_per_run: int = 1


@dataclass
class RunOutcome:
    spec: RunSpec
    result: RunResult
    path: Path
    skipped: bool = False
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics_are_fractions(self) -> bool:
        """Whether the suite's metrics are fractions in [0, 1] (tables print them with 4 decimals, as
        the leaderboard does) or values to print as they are (milliseconds, MACs)."""
        return task_class(self.spec.task.partition("/")[0]).metrics_are_fractions


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"--device '{name}' is not a device torch knows ({err}).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"--device {name} was requested but CUDA is not available on this machine; use --device cpu."
        )
    return device


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def execute(spec: RunSpec, options: RunOptions) -> RunOutcome:
    """Run one spec (or skip it when an ok result exists and `overwrite` is off)."""
    store = ResultStore(options.results_dir)
    path = store.path_for(spec)
    if not options.overwrite:
        try:
            existing = store.load(spec)
        except ResultFileError as err:  # a damaged file is never silently replaced
            raise ResultFileError(
                f"{err} bob left it untouched; delete it, or pass --overwrite to replace it."
            ) from None
        if existing is not None and existing.settled:
            return RunOutcome(spec, existing, path, skipped=True)
    device = resolve_device(options.device)
    if not distributed.is_main():  # a data-parallel run's other ranks compute; rank 0 alone writes
        with tempfile.TemporaryDirectory(prefix="bob-rank-") as scratch:
            result, stats = _run(spec, options, ResultStore(scratch), device)
        return RunOutcome(spec, result, path, stats=stats)
    result, stats = _run(spec, options, store, device)
    # The retry runs in this process alone: never in a data-parallel run, whose other ranks have gone on.
    retry = not distributed.active() and options.batch_size > 1
    if not result.ok and (result.error or {}).get("out_of_memory") and retry:
        result, stats = _retry_with_half_batch(spec, options, store, device, result)
    store.write(result, spec)
    if options.trackers:  # a mirror of the written result; a tracker's failure is a warning only
        trackers.log_run(options.trackers, spec, result, path)
    return RunOutcome(spec, result, path, stats=stats)


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA (or MPS) running out of memory, by class where torch has one, else by message, as timm's
    bulk runner checks it."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def _retry_with_half_batch(
    spec: RunSpec, options: RunOptions, store: ResultStore, device: torch.device, first: RunResult
) -> tuple[RunResult, dict[str, Any]]:
    """One retry with half the extraction batch and half the task's own `batch_size`, if it has one.
    The run keeps its id (the spec is what was asked for); the result records the retry."""
    half = dataclasses.replace(options, batch_size=max(1, options.batch_size // 2))
    overrides = {}
    task_batch = spec.task_args.get("batch_size")
    if isinstance(task_batch, int) and task_batch > 1:
        overrides["batch_size"] = task_batch // 2
    _free_accelerator_memory()
    result, stats = _run(spec, half, store, device, overrides)
    result.protocol["oom_retry"] = {
        "batch_size": half.batch_size,
        "task_batch_size": overrides.get("batch_size"),
        "first_error": (first.error or {}).get("message", ""),
    }
    return result, stats


def _free_accelerator_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _parsed_task(spec: RunSpec, arg_overrides: dict[str, Any] | None) -> Task:
    """The spec's task with its typed args (plus any overrides of a retry) and data location."""
    name = parse_task_name(spec.task)
    cls = task_class(name.suite)
    try:
        task_args = {**spec.task_args, **(arg_overrides or {})}
        args = cls.Args(**task_args, root=spec.data_root, download=spec.download)
    except TypeError as err:
        raise UsageError(
            f"Run {spec.id}: task args {spec.task_args} do not fit {spec.task} ({err})."
        ) from None
    args.validate()
    return cls(name.dataset, args)


def _error(err: Exception) -> dict[str, Any]:
    """What a failed result records of its exception: type, message, kind, traceback tail."""
    return {
        "type": type(err).__name__,
        "message": str(err),
        "user_error": isinstance(err, BobError),
        "out_of_memory": is_out_of_memory(err),
        "traceback": "".join(traceback.format_exception(err)).splitlines()[-TRACEBACK_LINES:],
    }


def _run(
    spec: RunSpec,
    options: RunOptions,
    store: ResultStore,
    device: torch.device,
    arg_overrides: dict[str, Any] | None = None,
) -> tuple[RunResult, dict[str, Any]]:
    # The context imports the backbone contract, the feature extractor and the data loaders (torch):
    # planning and listing import this module, so it waits until a run starts.
    from bob.context import RunContext

    start = time.perf_counter()
    task = _parsed_task(spec, arg_overrides)
    result = RunResult(
        id=spec.id, status="ok", spec=spec.to_dict(), task=task.meta(), created_at=_now(), sweep=options.sweep
    )
    ctx = None
    try:
        seed_everything(spec.seed)
        result.env = env.capture(device)
        # Pipeline, precision and memory format are backbone args of the run that bob applies itself.
        extraction, backbone_args = Extraction.split_args(spec.backbone_args)
        ref = resolve_backbone(spec.backbone, spec.weights, backbone_args, spec.seed)
        cache = FeatureCache(options.cache_dir)
        ctx = RunContext(
            spec,
            task,
            ref,
            store,
            cache,
            device,
            options.batch_size,
            options.num_workers,
            options.save_samples,
            options.geometry_cache,
        )
        output = task.run(ctx)
        result.metrics, result.protocol, result.artifacts = output.metrics, output.protocol, output.artifacts
        result.protocol.setdefault("transform", ctx.data_config.to_dict())
        if extraction.identity():
            result.protocol.setdefault("extraction", extraction.identity())
    except TaskNotApplicable as err:  # by design, not a failure: the run is done, with its reason
        result.status, result.reason = "skipped", str(err)
        result.metrics, result.protocol, result.artifacts = {}, {}, {}
        log.info("run %s skipped: %s", spec.id, err)
    except Exception as err:  # every failure becomes data; KeyboardInterrupt still stops the run
        result.status, result.error = "failed", _error(err)
        log.debug("run %s failed", spec.id, exc_info=True)
    _record_context(result, spec, ctx)
    result.timings["total_s"] = round(time.perf_counter() - start, 3)
    stats = {"extractions": ctx.extractions if ctx else 0, "cache_hits": ctx.cache_hits if ctx else 0}
    return result, stats


def _record_context(result: RunResult, spec: RunSpec, ctx: RunContext | None) -> None:
    """The backbone, cache and extraction time the run's context saw (just the name without one)."""
    if ctx is None:
        result.backbone = {"name": spec.backbone}
        return
    result.backbone = ctx.backbone_meta or {"name": spec.backbone, "resolved_name": ctx.ref.resolved_name}
    result.backbone["weights"] = ctx.ref.weights.to_dict()
    result.cache = {"keys": ctx.cache_keys, "hits": ctx.cache_hits, "extractions": ctx.extractions}
    if ctx.pixel_cache is not None:  # what the geometry cache saved (absent without one)
        result.cache["geometry"] = {"decodes": ctx.decodes, "hits": ctx.pixel_hits}
    result.timings["extract_s"] = round(ctx.extract_s, 3)
