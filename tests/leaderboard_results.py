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
    weights_record: dict[str, Any] | None = None,
    method: str | None = None,
) -> Path:
    """One result; `metrics` adds metrics beside the main one (e.g. mask AP beside box AP);
    `weights_record` is the weights provenance a run records (`backbone.weights`: kind, path, sha256);
    `method` overrides the backbone's pretraining method."""
    family, default_method, data, params = META.get(backbone, ("cnn", "supervised", "IN-1k", 1e6))
    method = method or default_method
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
            **({"weights": weights_record} if weights_record is not None else {}),
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


FIRST_BACKBONE = "torchvision/mobilenet_v2"
FIRST_TASKS = {"linear-probe/animal-mnist": 0.94, "knn/animal-mnist": 0.90, "retrieval/skimage-views": 0.57}
FIRST_GMACS = 0.3


def first_board_results(root: Path, efficiency: bool = True) -> None:
    """A quickstart-sized board: one pretrained backbone and its random init on three settings, each
    run with its per-sample file, plus (with `efficiency`) MACs measured on random weights."""
    import numpy as np
    from sample_results import hits_samples, write_sampled_result

    rng = np.random.default_rng(0)
    for task, accuracy in FIRST_TASKS.items():
        for weights, acc in (("pretrained", accuracy), ("random", accuracy - 0.2)):
            hits = hits_samples(rng.random(400) < acc)
            write_sampled_result(root, FIRST_BACKBONE, task, hits, weights=weights)
    if efficiency:
        cost = {"latency_ms": 4.0, "gmacs": FIRST_GMACS, "throughput_img_s": 250.0}
        write_result(root, FIRST_BACKBONE, "efficiency/64", 4.0, weights="random", main_metric="latency_ms",
                     higher_is_better=False, metrics=cost)  # fmt: skip
