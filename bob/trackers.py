"""Experiment trackers: every settled run, logged to MLflow and/or Weights & Biases as well.

bob's result JSON stays the record (the leaderboard reads only it); a tracker is a mirror of it in the
tool a lab already browses. Off by default; `--tracker mlflow` / `--tracker wandb` (or the
`BOB_TRACKERS=mlflow,wandb` environment variable, which reaches Ray and SLURM workers too) turns each
on. Each logs, per run:

  - the run's name (its label) and id, the backbone, weights, task, suite, seed, status;
  - params: the task args and backbone args, flattened (`task.epochs`, `backbone.precision`);
  - metrics: every numeric metric of the result;
  - the result JSON itself as an artifact (MLflow) or a file of the run (W&B).

Where each writes is the library's own setting:

  - MLflow: `MLFLOW_TRACKING_URI` (a server, a database); unset, a file store in `./mlruns`
    (bob opts in to MLflow's maintenance-mode file store for that default only, so it works offline
    with `mlflow-skinny`). The experiment is `MLFLOW_EXPERIMENT_NAME`, default `bob`.
  - W&B: `WANDB_PROJECT` (default `bob`), `WANDB_ENTITY`, and `WANDB_MODE=offline` to log without
    an account (`wandb sync` uploads later).

Each library is an extra (`pip install 'bob-bench[trackers]'`); a tracker asked for whose library is
missing is a UsageError before any run starts. A tracker that fails while logging (a server down)
never fails the run or touches its result: bob prints one warning naming the tracker and the run,
and the result on disk is the complete record.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bob.errors import UsageError

if TYPE_CHECKING:
    from bob.results import RunResult
    from bob.spec import RunSpec

log = logging.getLogger(__name__)

ENV = "BOB_TRACKERS"
MLFLOW_DEFAULT_URI = "./mlruns"
PROJECT = "bob"


class Tracker(Protocol):
    def log_run(self, spec: RunSpec, result: RunResult, path: Path) -> None:
        """Log one settled run (its result already written to `path`)."""


def tracker_names(names: Iterable[str] = ()) -> tuple[str, ...]:
    """The trackers asked for: `names` (the CLI's --tracker, repeatable, comma lists allowed) plus
    $BOB_TRACKERS; validated (an unknown name or a missing library is a UsageError), deduplicated."""
    raw = [*names, *os.environ.get(ENV, "").split(",")]
    wanted: list[str] = []
    for item in raw:
        for name in (n.strip().lower() for n in item.split(",")):
            if name and name not in wanted:
                wanted.append(name)
    for name in wanted:
        if name not in TRACKERS:
            raise UsageError(
                f"Unknown tracker '{name}' (from --tracker or ${ENV}); choose from {', '.join(TRACKERS)}."
            )
        module, package = TRACKERS[name][1], TRACKERS[name][2]
        if importlib.util.find_spec(module) is None:
            raise UsageError(
                f"Tracker '{name}' needs the {package} package, which is not installed: "
                f"pip install {package} (or pip install 'bob-bench[trackers]')."
            )
    return tuple(wanted)


def log_run(names: Iterable[str], spec: RunSpec, result: RunResult, path: Path) -> list[str]:
    """Log one settled run to every tracker in `names`; returns a warning per tracker that failed
    (the run and its result file are never affected)."""
    warnings = []
    for name in names:
        try:
            TRACKERS[name][0]().log_run(spec, result, path)
        except Exception as err:  # a tracker is a mirror: its failure is reported, never fatal
            message = f"tracker {name} could not log run {spec.id} ({type(err).__name__}: {err})"
            log.warning(message)
            warnings.append(message)
    return warnings


def run_params(spec: RunSpec) -> dict[str, str]:
    """The run's identity as flat string params (MLflow params are strings; W&B's config takes them too)."""
    params = {
        "run_id": spec.id,
        "backbone": spec.backbone,
        "weights": spec.weights,
        "task": spec.task,
        "suite": spec.task.partition("/")[0],
        "seed": str(spec.seed),
        "task_version": spec.task_version,
    }
    params.update(_flatten("task", spec.task_args))
    params.update(_flatten("backbone", spec.backbone_args))
    return params


def numeric_metrics(result: RunResult) -> dict[str, float]:
    """The result's metrics that are finite numbers (both trackers log only those)."""
    out = {}
    for key, value in result.metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def _flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(name, value))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


class MlflowTracker:
    """One MLflow run per bob run, in the experiment `MLFLOW_EXPERIMENT_NAME` (default `bob`)."""

    def log_run(self, spec: RunSpec, result: RunResult, path: Path) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or MLFLOW_DEFAULT_URI
        if "://" not in uri:  # a local path: MLflow's file store, which bob opts in to
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = Path(uri).resolve().as_uri()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        tags = {"bob.run_id": spec.id, "bob.status": result.status, "bob.suite": spec.task.partition("/")[0]}
        run = client.create_run(experiment_id, run_name=spec.label, tags=tags)
        run_id = run.info.run_id
        try:
            params = run_params(spec)
            from mlflow.entities import Metric, Param

            client.log_batch(
                run_id,
                metrics=[Metric(k, v, 0, 0) for k, v in numeric_metrics(result).items()],
                params=[Param(k, v[:6000]) for k, v in params.items()],
            )
            client.log_artifact(run_id, str(path))
        except Exception:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED" if result.ok else "FAILED")


class WandbTracker:
    """One W&B run per bob run, in `WANDB_PROJECT` (default `bob`), grouped by task."""

    def log_run(self, spec: RunSpec, result: RunResult, path: Path) -> None:
        import wandb

        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", PROJECT),
            name=spec.label,
            group=spec.task,
            job_type=spec.task.partition("/")[0],
            config=run_params(spec),
            tags=[result.status],
            reinit="create_new",
        )
        try:
            run.summary.update(numeric_metrics(result))
            run.summary["bob_status"] = result.status
            run.save(str(path), base_path=str(path.parent), policy="now")
        finally:
            run.finish(exit_code=0 if result.ok else 1)


# name -> (class, module to import, pip package)
TRACKERS: dict[str, tuple[type, str, str]] = {
    "mlflow": (MlflowTracker, "mlflow", "mlflow-skinny"),
    "wandb": (WandbTracker, "wandb", "wandb"),
}
