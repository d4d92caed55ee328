"""Running one task in-process, as the suites' tests do: `options` (a conftest fixture) plus `run_task`."""

from __future__ import annotations

from typing import Any

from bob.runner import RunOptions, RunOutcome, execute
from bob.spec import make_spec

TINY = "timm/test_resnet"  # timm's smallest ResNet: builds in milliseconds, random weights


def run_task(
    options: RunOptions, task: str, weights: str = "random", backbone: str = TINY, **task_args: Any
) -> RunOutcome:
    """One run of `backbone` on `task`; task args may be any value (sent as strings, like the CLI's)."""
    return execute(
        make_spec(backbone, task, weights, task_args={k: str(v) for k, v in task_args.items()}), options
    )
