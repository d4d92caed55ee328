"""Hand-built result files for the leaderboard tests, written through the real ResultStore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bob.results import ResultStore, RunResult
from bob.spec import RunSpec

XSS_NAMES = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')

META = {
    "cnn-a": ("cnn", "supervised", "IN-1k", 11e6),
    "vit-b": ("vit", "ssl:dino", "IN-1k", 22e6),
    "vit-c": ("vit", "vision-language", "LAION-2B", 86e6),
    "swin-d": ("hierarchical", "supervised", "IN-21k", 50e6),
    XSS_NAMES[0]: ("cnn", "supervised", "IN-1k", 5e6),
    XSS_NAMES[1]: ("hybrid", "ssl:mae", "IN-1k", 120e6),
}


def write_result(
    root: Path,
    backbone: str,
    task: str,
    value: float | None,
    *,
    seed: int = 0,
    weights: str = "pretrained",
    task_args: dict[str, Any] | None = None,
    main_metric: str = "top1",
    higher_is_better: bool = True,
    status: str = "ok",
    metrics: dict[str, float] | None = None,
) -> Path:
    """One result; `metrics` adds metrics beside the main one (e.g. mask AP beside box AP)."""
    family, method, data, params = META.get(backbone, ("cnn", "supervised", "IN-1k", 1e6))
    spec = RunSpec(backbone, task, weights, seed, task_args=dict(task_args or {}), task_version="1")
    suite, _, dataset = task.partition("/")
    result = RunResult(
        id=spec.id,
        status=status,
        spec=spec.to_dict(),
        backbone={
            "name": backbone,
            "family": family,
            "method": "random" if weights == "random" else method,
            "pretrain_data": data,
            "params": params,
        },
        task={
            "name": task,
            "suite": suite,
            "dataset": dataset,
            "version": "1",
            "main_metric": main_metric,
            "higher_is_better": higher_is_better,
        },
        metrics={**(metrics or {}), **({} if value is None else {main_metric: value})},
        timings={"total_s": 1.0},
        error={"type": "RuntimeError", "message": "boom"} if status == "failed" else None,
    )
    return ResultStore(root).write(result, spec)


def xss_results(root: Path) -> int:
    """A small board whose backbone names are XSS payloads; returns the number of backbones."""
    names = list(META)
    for i, name in enumerate(names):
        for j, task in enumerate(["linear-probe/x", "knn/x", "ood/y"]):
            hib = not task.startswith("ood")
            write_result(
                root,
                name,
                task,
                0.1 + ((i * 7 + j * 3) % 10) / 20,
                main_metric="top1" if hib else "ece",
                higher_is_better=hib,
            )
    write_result(root, "cnn-a", "linear-probe/x", 0.05, weights="random")
    return len(names) + 1
