"""Searches inside one protocol with Ray Tune: the run stays one run, its search is many trials.

A task declares its search space (e.g. detection's learning rate over BoB's grid) and a trial
function that trains with one config and reports a validation score each epoch; `search_in_protocol`
runs the trials (a grid, or sampled configs with ASHA early stopping) and returns the winning config
and every trial's score, which the task records in `TaskOutput.protocol["search"]` before its final
fit. This is deliberately not one Tune trial per sweep run: a trial costs about a second of overhead
on a small machine, a Ray task about a millisecond (bench/scheduler_overhead.py).

Space values: a list is a grid (`tune.grid_search`); `{"loguniform": [lo, hi]}`, `{"uniform": [lo,
hi]}` and `{"choice": [...]}` are sampled `num_samples` times; a scalar is fixed.

    def trial(config, report, features, labels):       # report({"val_top1": 0.8}) once per epoch
        ...
    found = search_in_protocol(trial, {"lr": [8e-5, 1e-4, 2e-4, 3e-4]}, metric="val_top1",
                               data={"features": x, "labels": y})
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from bob.errors import UsageError

if TYPE_CHECKING:
    from ray.tune import ResultGrid

SCHEDULERS = ("fifo", "asha")
SAMPLERS = ("loguniform", "uniform", "choice")


@dataclass
class SearchResult:
    metric: str
    mode: str
    scheduler: str
    best_config: dict[str, Any]
    best_score: float
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_protocol(self) -> dict[str, Any]:
        """What a task puts under `protocol["search"]`."""
        return asdict(self)


def _tune_space(space: dict[str, Any]) -> dict[str, Any]:
    from ray import tune

    out: dict[str, Any] = {}
    for key, value in space.items():
        if isinstance(value, (list, tuple)):
            if not value:
                raise UsageError(f"Search space '{key}' is an empty list; give at least one value.")
            out[key] = tune.grid_search(list(value))
        elif isinstance(value, dict):
            if len(value) != 1 or next(iter(value)) not in SAMPLERS:
                raise UsageError(
                    f"Search space '{key}': expected one of {SAMPLERS} as the only key, got {value}."
                )
            kind, arg = next(iter(value.items()))
            out[key] = tune.choice(list(arg)) if kind == "choice" else getattr(tune, kind)(*arg)
        else:
            out[key] = value
    return out


def _trainable(trial_fn: Callable[..., Any]) -> Callable[..., None]:
    def run_trial(config: dict[str, Any], **data: Any) -> None:
        from ray import tune

        trial_fn(config, tune.report, **data)

    return run_trial


def _scheduler(name: str, max_t: int, grace_period: int) -> Any:
    if name not in SCHEDULERS:
        raise UsageError(f"Unknown search scheduler '{name}'; use one of {', '.join(SCHEDULERS)}.")
    if name == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(max_t=max_t, grace_period=grace_period, reduction_factor=2)


def search_in_protocol(
    trial_fn: Callable[..., Any],
    space: dict[str, Any],
    metric: str,
    mode: str = "max",
    scheduler: str = "fifo",
    num_samples: int = 1,
    max_t: int = 100,
    grace_period: int = 1,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    data: dict[str, Any] | None = None,
    seed: int | None = None,
) -> SearchResult:
    """Run the trials; `data` goes to every trial through Ray's object store (no copy per trial).

    `seed` fixes the configs drawn from sampled spaces (not the order trials finish in, so ASHA's
    stopping decisions may still differ between runs).
    """
    try:
        import ray
        from ray import tune
        from ray.tune.search.basic_variant import BasicVariantGenerator
    except ImportError:
        raise UsageError("An in-protocol search needs Ray Tune: pip install 'bob-bench[cluster]'.") from None
    if mode not in ("max", "min"):
        raise UsageError(f"Search mode must be max or min, got '{mode}'.")
    started = False
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = True
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_trainable(trial_fn), **(data or {})),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
        )
        with tempfile.TemporaryDirectory(prefix="bob-tune-") as storage:
            tuner = tune.Tuner(
                trainable,
                param_space=_tune_space(space),
                tune_config=tune.TuneConfig(
                    metric=metric,
                    mode=mode,
                    scheduler=_scheduler(scheduler, max_t, grace_period),
                    num_samples=num_samples,
                    search_alg=BasicVariantGenerator(random_state=seed) if seed is not None else None,
                ),
                run_config=tune.RunConfig(storage_path=storage, verbose=0),
            )
            grid = tuner.fit()
            return _collect(grid, space, metric, mode, scheduler)
    finally:
        if started:
            ray.shutdown()


def _collect(grid: ResultGrid, space: dict[str, Any], metric: str, mode: str, scheduler: str) -> SearchResult:
    trials = []
    for result in grid:
        if result.error is not None:
            raise RuntimeError(f"A search trial failed: {result.error}") from result.error
        history = result.metrics_dataframe
        scores = [float(v) for v in history[metric]] if history is not None and metric in history else []
        trials.append(
            {
                "config": {k: result.config[k] for k in space},
                "score": max(scores) if mode == "max" else min(scores),
                "iterations": len(scores),
                "scores": scores,
            }
        )
    finite = [t for t in trials if math.isfinite(t["score"])]
    if not finite:
        raise RuntimeError(f"No search trial reported a finite '{metric}'.")
    best = (max if mode == "max" else min)(finite, key=lambda t: t["score"])
    return SearchResult(metric, mode, scheduler, best["config"], best["score"], trials)
