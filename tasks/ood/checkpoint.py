"""`mode=checkpoint`: find the `finetune/<in-dist>` run an OOD run scores, and load its classifier.

The run is the one named by `finetune_run=<run id>`, else the finetune run of the same backbone, weights,
backbone args, seed and protocol (`finetune_spec`: the finetune suite's default args; failing that, the
only ok finetune run of that backbone, weights, backbone args and seed in the results directory). It
must exist, be ok and have saved its checkpoint; every other case is a `UsageError` that says which run
to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bob.backbones.checkpoints import strict_load
from bob.backbones.meta import DataConfig
from bob.context import RunContext
from bob.errors import ResultFileError, UsageError
from bob.results import RunResult, read_result
from bob.spec import RunSpec
from bob.tasks.common.finetune import Classifier
from bob.tasks.ood import finetune_spec, in_dist_of


def find_finetune_run(ctx: RunContext, run_id: str | None) -> RunResult:
    """The ok finetune result this run scores (see the module docstring)."""
    spec = ctx.spec
    task = f"finetune/{in_dist_of(ctx.dataset)}"
    if run_id is not None:
        return _by_id(ctx, run_id, task)
    expected = finetune_spec(spec)
    how = (
        f"bob run -b {spec.backbone} -w {spec.weights} --seed {spec.seed} -t {task}"
        + "".join(f" --backbone-arg {k}={v}" for k, v in sorted(spec.backbone_args.items()))
        + (f" --task-arg protocol={_protocol(spec)}" if _protocol(spec) != "default" else "")
    )
    result = ctx.store.load(expected)
    if result is not None:
        return _usable(result, expected.id, how)
    candidates = [r for r in _results_in(ctx.store.folder_for(task, spec.backbone)) if _same_model(r, spec)]
    ok = [r for r in candidates if r.status == "ok"]
    if len(ok) == 1:
        return ok[0]
    if len(ok) > 1:
        ids = ", ".join(sorted(r.id for r in ok))
        raise UsageError(
            f"{len(ok)} ok {task} runs match {spec.backbone} [{spec.weights}] seed {spec.seed} ({ids}) and "
            f"none has the finetune suite's default args: pick one with --task-arg finetune_run=<id>."
        )
    if candidates:  # only unfinished ones: say so and how to rerun
        _usable(candidates[0], candidates[0].id, how)
    raise UsageError(
        f"mode=checkpoint scores the classifier of a {task} run, and none exists yet for "
        f"{spec.backbone} [{spec.weights}] seed {spec.seed} in {ctx.store.root} (expected run id "
        f"{expected.id}). Run it first: `{how}` (a sweep orders it before this run), or name another "
        "run with --task-arg finetune_run=<id>."
    )


def _protocol(spec: RunSpec) -> str:
    return str(spec.task_args.get("protocol", "default"))


def _results_in(folder: Path) -> list[RunResult]:
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(read_result(path))
        except ResultFileError:
            continue  # a damaged file is not a candidate; `bob` reports it elsewhere
    return out


def _same_model(result: RunResult, spec: RunSpec) -> bool:
    """Same backbone, weights, backbone args, seed and protocol as this OOD run."""
    other = result.spec
    return (
        other.get("backbone") == spec.backbone
        and other.get("weights") == spec.weights
        and other.get("seed") == spec.seed
        and (other.get("backbone_args") or {}) == spec.backbone_args
        and (other.get("task_args") or {}).get("protocol", "default") == _protocol(spec)
    )


def _by_id(ctx: RunContext, run_id: str, task: str) -> RunResult:
    matches = sorted(ctx.store.root.rglob(f"{run_id}.json")) if ctx.store.root.is_dir() else []
    if not matches:
        raise UsageError(
            f"finetune_run={run_id}: no result with that id in {ctx.store.root}. Run the {task} run "
            f"first (a sweep orders it before this run), or check the id among the result files under "
            f"{ctx.store.root / task}."
        )
    result = _usable(read_result(matches[0]), run_id, f"bob run … -t {task}")
    if result.spec.get("task") != task:
        raise UsageError(
            f"finetune_run={run_id} is a {result.spec.get('task')} run; this shift needs {task}."
        )
    if not _same_model(result, ctx.spec):
        raise UsageError(
            f"finetune_run={run_id} fine-tuned {result.spec.get('backbone')} [{result.spec.get('weights')}] "
            f"seed {result.spec.get('seed')}; this run is {ctx.spec.label} under protocol {_protocol(ctx.spec)}. "
            "An OOD run scores a classifier of its own backbone, weights, backbone args, seed and protocol."
        )
    return result


def _usable(result: RunResult, run_id: str, how: str) -> RunResult:
    if result.status != "ok":
        raise UsageError(
            f"the finetune run {run_id} that mode=checkpoint scores is {result.status}"
            + (f" ({result.error.get('message', '')})" if result.error else "")
            + f"; rerun it (`{how}`, or bob sweep --retry-failed) first."
        )
    return result


def checkpoint_path(ctx: RunContext, result: RunResult) -> Path:
    """The finetune run's saved classifier, next to its result in this run's results directory."""
    path = ctx.store.artifact_path(RunSpec.from_dict(result.spec), "checkpoint")
    if not path.is_file():
        raise UsageError(
            f"the finetune run {result.id} has no checkpoint file next to its result ({path}); "
            "rerun it with --overwrite to save one."
        )
    return path


def load_classifier(ctx: RunContext, result: RunResult) -> tuple[Classifier, DataConfig, dict[str, Any]]:
    """The finetune run's classifier on this run's device, its eval transform, and what was loaded."""
    path = checkpoint_path(ctx, result)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    classes = list(checkpoint.get("classes", []))
    if classes != list(ctx.classes):
        raise UsageError(
            f"the classifier of finetune run {result.id} predicts {len(classes)} classes that differ from "
            f"{ctx.dataset}'s in-distribution classes ({ctx.num_classes}); it cannot score this shift."
        )
    data_config = DataConfig.from_dict(checkpoint["data_config"])
    backbone = ctx.build_backbone(input_size=data_config.input_size)
    model = Classifier(backbone, len(classes), data_config.input_size).to(ctx.device)
    strict_load(model, checkpoint["state_dict"], path)
    info = {
        "finetune_run": result.id,
        "finetune_task": result.spec.get("task"),
        "finetune_best_epoch": checkpoint.get("best_epoch"),
        "finetune_top1": result.metrics.get("top1"),
        "checkpoint": str(path),
    }
    return model.eval(), data_config, info
