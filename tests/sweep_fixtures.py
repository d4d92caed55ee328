"""A tiny task suite for the sweep tests, registered on import, with injectable faults.

`behaviour`: ok (a metric derived from the seed), raise, nan (a loss that diverges), oom (CUDA out
of memory while the extraction batch is above 32), oom-always, search (Ray Tune picks an lr in-protocol), die-always, die-once (the worker process is killed with -9 the
first time; needs `marker`), sleep (takes `seconds`). Test modules register the suite for their
own duration (`fake_suite`), so other modules never see it. Every execution appends its run's seed to
`log`, so tests can count executions.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bob.suites import SUITES
from bob.task import Task, TaskArgs, TaskOutput, run_arg

SUITE = "sweep-fake"


@dataclass
class FakeArgs(TaskArgs):
    behaviour: str = run_arg("ok", "ok | raise | nan | oom | die-once | sleep")
    seconds: float = run_arg(0.0, "sleep length")
    batch_size: int = run_arg(32, "a task-level batch size (halved on an OOM retry)")
    log: str = run_arg("", "file to append one line per execution to")
    marker: str = run_arg("", "die-once: the file that says the first attempt happened")


def _first_to_create(path: str) -> bool:
    """True for exactly one caller: O_EXCL makes check-and-create atomic, so two workers running
    at once cannot both take the die-once branch."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class FakeTask(Task):
    suite = SUITE
    version = "1"
    main_metric = "score"
    Args = FakeArgs

    def run(self, ctx: Any) -> TaskOutput:
        import torch

        from bob.errors import TrainingDivergedError

        a: FakeArgs = self.args
        if a.log:
            with open(a.log, "a") as f:
                f.write(f"{ctx.spec.seed} {os.getpid()}\n")
        if a.behaviour == "raise":
            raise ValueError("injected failure")
        if a.behaviour == "nan":
            loss = torch.tensor(1.0) / torch.tensor(0.0) * 0.0
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"loss became {loss.item()} at step 1")
        if (a.behaviour == "oom" and ctx.batch_size > 32) or a.behaviour == "oom-always":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if a.behaviour == "die-once" and _first_to_create(a.marker):
            os.kill(os.getpid(), signal.SIGKILL)
        if a.behaviour == "die-always":
            os.kill(os.getpid(), signal.SIGKILL)
        if a.behaviour == "sleep":
            time.sleep(a.seconds)
        if a.behaviour == "search":
            return self._search(ctx.spec.seed)
        return TaskOutput(
            {"score": (ctx.spec.seed * 7919 % 1000) / 1000},
            {"batch_size": a.batch_size, "extraction_batch_size": ctx.batch_size},
        )

    # The search space a task declares; its learning rates span "too small" to "right".
    search_space: ClassVar[dict[str, Any]] = {"lr": [1e-4, 1e-2, 0.5]}

    def _search(self, seed: int) -> TaskOutput:
        from bob.tasks.common.tune import search_in_protocol

        x, y = blobs(seed)
        found = search_in_protocol(
            logistic_trial, self.search_space, metric="val_acc", data={"x": x, "y": y}, cpus_per_trial=1
        )
        final = logistic_trial(found.best_config, lambda m: None, x, y)
        return TaskOutput({"score": final}, {"search": found.to_protocol(), "lr": found.best_config["lr"]})


def blobs(seed: int, n: int = 400) -> tuple[Any, Any]:
    """Two overlapping Gaussian classes in 8 dimensions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 8)) + y[:, None] * 0.8
    return x, y


def logistic_trial(config: dict[str, Any], report: Any, x: Any, y: Any, epochs: int = 8) -> float:
    """Logistic regression by full-batch gradient descent; reports validation accuracy per epoch."""
    import numpy as np

    split = len(y) * 3 // 4
    w, b = np.zeros(x.shape[1]), 0.0
    acc = 0.0
    for _ in range(epochs):
        for _ in range(5):
            p = 1 / (1 + np.exp(-(x[:split] @ w + b)))
            w -= config["lr"] * x[:split].T @ (p - y[:split]) / split
            b -= config["lr"] * float(np.mean(p - y[:split]))
        acc = float(np.mean(((x[split:] @ w + b) > 0) == y[split:]))
        report({"val_acc": acc})
    return acc


def register() -> None:
    if SUITE not in SUITES:
        SUITES.register(FakeTask)


def unregister() -> None:
    """Keep the fake suite out of other test modules' listings of every suite."""
    SUITES.unregister(SUITE)


@contextlib.contextmanager
def fake_suite() -> Iterator[None]:
    register()
    try:
        yield
    finally:
        unregister()


def run_group(*payload: Any) -> list[dict]:
    """The sweep worker with this suite registered (Ray and submitit workers call this)."""
    from bob.sweep.worker import run_group as real

    register()
    return real(*payload)


def fake_sweep(seeds: int, **args: Any) -> dict[str, Any]:
    """A sweep file (as data) of `seeds` runs of the fake suite with the given task args."""
    return {
        "name": "fake",
        "grids": [
            {
                "backbones": ["timm/test_resnet"],
                "weights": ["random"],
                "seeds": list(range(seeds)),
                "tasks": [{"task": f"{SUITE}/shapes-mini", "args": args}],
            }
        ],
    }


def run_fake(data: dict[str, Any], results: Path, executor: Any = None, mode: str = "missing") -> Any:
    from bob.runner import RunOptions
    from bob.sweep.driver import plan_sweep, run_sweep
    from bob.sweep.executors.local import LocalExecutor
    from bob.sweep.spec import parse_sweep

    plan = plan_sweep(parse_sweep(data))
    options = RunOptions(results_dir=results, cache_dir=results.parent / "cache", device="cpu", num_workers=0)
    return run_sweep(plan, executor or LocalExecutor(), options, mode, job_fn=run_group)


if __name__ == "__main__":  # a sweep driver for the crash tests: python -m tests.sweep_fixtures FILE RESULTS
    import json
    import sys

    register()
    run_fake(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))


# The data-parallel sweep tests' fine-tuning args: 180 shapes-mini images at 8 a batch, 2 a step.
DDP_FT_ARGS = {"epochs": "1", "warmup_epochs": "0", "batch_size": "8", "accum_steps": "2"}


def ddp_sweep_file(path: Path, name: str) -> Path:
    """A sweep of two real runs on `timm/test_vit`: a fine-tuning run, which trains data-parallel
    under `--ranks-per-run N`, and a knn run beside it, which keeps one process."""
    args = ", ".join(f"{k}: {v}" for k, v in DDP_FT_ARGS.items())
    path.write_text(
        f"name: {name}\n"
        "grids:\n"
        "  - backbones: [timm/test_vit]\n"
        "    weights: [random]\n"
        "    tasks:\n"
        f"      - {{task: finetune/shapes-mini, args: {{{args}}}}}\n"
        "      - {task: knn/shapes-mini, grid: {k: [5]}}\n"
    )
    return path
