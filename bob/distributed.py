"""Data-parallel runs: one `bob run` as N processes, one per device, under torch's elastic launcher.

`bob run ... --gpus-per-run N` re-executes the same command line (less `--gpus-per-run`, plus the
`BOB_DDP` marker in the environment) through `torch.distributed.launcher.elastic_launch`, the Python
API of `torchrun --standalone --nproc-per-node N`. Each process joins one process group (NCCL on
CUDA, one device per local rank; gloo on the CPU, which is how the tests run), trains its shard of
every optimizer step (tasks/common/train_loop.py, tasks/common/finetune.py) and evaluates its shard
of every split, gathered back into dataset order so the metrics equal one process's. Rank 0 alone
writes the result, the per-sample file, the checkpoint and the progress bars; the other ranks' output
goes to log files, named when one of them fails.

A rank that dies fails the run: the launcher stops the others, and a rank left waiting in a
collective gives up after `BOB_DDP_TIMEOUT_S` seconds (default 300) instead of hanging.

Only the suites whose training runs on tasks/common/finetune.py are data-parallel
(`DATA_PARALLEL_SUITES`); any other suite with `--gpus-per-run` above 1 is a usage error, never N
copies of the same run. This module imports torch only inside its functions: `bob --help` stays light.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bob.console import console
from bob.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import typer

ENV_MARKER = "BOB_DDP"  # set in the environment of the processes a data-parallel run launches
TIMEOUT_ENV = "BOB_DDP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0
# Fault injection for the tests: the rank named here exits (code 3) after its first optimizer step.
FAULT_ENV = "BOB_DDP_FAULT_RANK"
FAULT_EXIT_CODE = 3
OPTION = "--gpus-per-run"

# The suites whose every training step runs on tasks/common/finetune.py (and its `evaluate`).
DATA_PARALLEL_SUITES = ("finetune", "few-label", "dg")
LOG_TAIL_LINES = 5


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run: 0 of 1 outside one."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0


def world() -> World:
    """The rank, world size and local rank the launcher set (RANK, WORLD_SIZE, LOCAL_RANK)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def is_main() -> bool:
    """Whether this process writes: rank 0, or the only process of a run."""
    return world().rank == 0


def in_worker() -> bool:
    """Whether this process is one rank of a data-parallel run that bob launched."""
    return os.environ.get(ENV_MARKER) == "1"


def active() -> bool:
    """Whether this process is in an initialised process group, of any size: one rank runs the same
    code as N, so a run's result does not depend on how many ranks ran it. Never imports torch."""
    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def timeout_s() -> float:
    """Seconds a collective waits for the other ranks before it fails the run (`BOB_DDP_TIMEOUT_S`)."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise UsageError(f"{TIMEOUT_ENV} must be a number of seconds, got '{raw}'.") from None
    if value <= 0:
        raise UsageError(f"{TIMEOUT_ENV} must be positive, got {raw}.")
    return value


def init_process_group(device: str) -> str:
    """Join the launcher's process group: NCCL with one CUDA device per local rank when `device`
    uses CUDA, else gloo; returns the backend. Collectives time out after `timeout_s()`."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_backend()
    cuda = device != "cpu" and not device.startswith("mps") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(world().local_rank)  # "cuda" in the run means this rank's device
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s()))
    return backend


def all_mean(value: float) -> float:
    """The mean of `value` over the ranks (the value itself outside a data-parallel run)."""
    if not active():
        return value
    import torch
    import torch.distributed as dist

    device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def shard_positions(total: int, rank: int, size: int) -> list[int]:
    """The dataset rows `DistributedSampler(shuffle=False)` gives `rank`, less its padding: rank r
    reads rows r, r + size, ... of the list padded to a multiple of `size`; rows past `total` are the
    padding (repeats of the first rows), dropped so each row is counted once."""
    return list(range(rank, total, size))


def gather_rows(local: np.ndarray, rows: Sequence[int], total: int) -> np.ndarray:
    """Every rank's outputs in dataset order: `local[i]` is row `rows[i]`; the result has `total` rows
    (`local` itself outside a data-parallel run). Exact: rows are moved, never recomputed."""
    if not active():
        return local
    import numpy as np
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (list(rows), local))
    shape = next((values.shape[1:] for part_rows, values in parts if len(part_rows)), local.shape[1:])
    out = np.empty((total, *shape), dtype=local.dtype)
    seen = np.zeros(total, dtype=bool)
    for part_rows, values in parts:
        if not len(part_rows):  # a rank with no row (fewer rows than ranks)
            continue
        out[part_rows] = values
        seen[part_rows] = True
    if not seen.all():
        raise RuntimeError(f"the ranks' shards miss {int((~seen).sum())} of {total} rows")
    return out


def fault_point(step: int) -> None:
    """The test hook of `BOB_DDP_FAULT_RANK`: that rank dies (no clean-up, as a crash would) after
    its first optimizer step. Does nothing unless the variable names this process's rank."""
    target = os.environ.get(FAULT_ENV)
    if target is not None and in_worker() and step >= 1 and target == str(world().rank):
        os._exit(FAULT_EXIT_CODE)


# ------------------------------------------------------------------------------------------ launching


def check_suites(tasks: Sequence[str], nprocs: int) -> None:
    """A usage error unless every task's suite trains data-parallel (one line, before anything runs).
    `tasks` as given to `-t`: names, globs within a suite, comma lists and suite names."""
    names = {name.strip() for t in tasks for name in t.split(",") if name.strip()}
    others = sorted(t for t in names if t.partition("/")[0] not in DATA_PARALLEL_SUITES)
    if others:
        supported = ", ".join(DATA_PARALLEL_SUITES)
        raise UsageError(
            f"{OPTION} {nprocs}: {', '.join(others)} cannot run data-parallel (only the suites that "
            f"fine-tune on tasks/common/finetune.py can: {supported}; suites that do not train gain "
            f"nothing, and detection, segmentation, reid, video-cls, ... are not data-parallel yet). "
            f"Run them without {OPTION}."
        )


# Task args under which a data-parallel suite's run does not train on tasks/common/finetune.py.
NOT_DATA_PARALLEL_ARGS = {
    ("mode", "linear"): "fits a linear head on frozen features (nothing to train data-parallel)",
    ("search", "lr"): "runs a Ray Tune search, which would run once per rank",
}


def check_task_args(assignments: Sequence[str], nprocs: int) -> None:
    """A usage error for `-a [SUITE:]KEY=VALUE` assignments that take a run off the data-parallel path."""
    for raw in assignments:
        key, _, value = raw.partition("=")
        reason = NOT_DATA_PARALLEL_ARGS.get((key.rpartition(":")[2].strip(), value.strip()))
        if reason is not None:
            raise UsageError(f"{OPTION} {nprocs}: a run with {raw} {reason}; run it without {OPTION}.")


def check_devices(device: str, nprocs: int) -> str:
    """The kind of device the ranks use ("cuda" or "cpu"); a usage error when CUDA is asked for and
    fewer than `nprocs` devices exist. Without CUDA, `auto` runs the ranks on the CPU with gloo."""
    import torch

    if device.startswith("mps"):
        raise UsageError(f"{OPTION} needs CUDA devices or the CPU (gloo); --device {device} has neither.")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if ":" in device:
        raise UsageError(
            f"{OPTION} gives each rank its own device: use --device cuda, not --device {device}."
        )
    count = torch.cuda.device_count()
    if count < nprocs:
        raise UsageError(f"{OPTION} {nprocs} needs {nprocs} CUDA devices; this machine has {count}.")
    return "cuda"


def command_line(ctx: typer.Context, drop: str = "gpus_per_run") -> list[str]:
    """The command of `ctx` as arguments (its name, then each option given on the command line or
    through the environment), less the option named `drop`: what every rank runs again."""
    args = [ctx.info_name or ""]
    for param in ctx.command.params:
        name = param.name or ""
        if param.param_type_name != "option" or name == drop:
            continue
        source = ctx.get_parameter_source(name)
        if source is None or source.name not in ("COMMANDLINE", "ENVIRONMENT"):
            continue
        value = ctx.params[name]
        if param.is_flag and param.secondary_opts:
            args.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            args.extend([param.opts[0]] if value else [])
        else:
            for item in value if param.multiple else [value]:
                args.extend([param.opts[0], str(item)])
    return args


def data_parallel(
    ctx: typer.Context, nprocs: int, tasks: Sequence[str], device: str, debug: bool = False
) -> int | None:
    """What `bob run` does with `--gpus-per-run`: in a rank bob launched, join the process group and go
    on (None); with 1, go on in this process (None); else check the suites and devices, launch
    `nprocs` ranks of the command of `ctx` and return the exit code."""
    if in_worker():
        init_process_group(device)
        return None
    if nprocs < 1:
        raise UsageError(f"{OPTION} must be a positive integer, got {nprocs}.")
    if nprocs == 1:
        return None
    check_suites(tasks, nprocs)
    check_task_args(ctx.params.get("task_arg") or [], nprocs)
    kind = check_devices(device, nprocs)
    argv = (["--debug"] if debug else []) + command_line(ctx)
    if kind == "cpu":
        console().print(f"{OPTION} {nprocs}: no CUDA; {nprocs} CPU processes with gloo", highlight=False)
    return launch(argv, nprocs)


def launch(argv: Sequence[str], nprocs: int) -> int:
    """Run `python -m bob.cli ARGV` as `nprocs` ranks (torchrun --standalone) with the `BOB_DDP`
    marker; returns 0, or the failure's exit code after one line naming the rank that failed first.
    Rank 0 prints to this console; the others write log files, whose tail is shown when they fail."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    log_dir = tempfile.mkdtemp(prefix="bob-ddp-")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nprocs,
        run_id=f"bob-{os.getpid()}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # --standalone: a free port on this machine
        max_restarts=0,
        logs_specs=DefaultLogsSpecs(
            log_dir, redirects={r: Std.ALL if r else Std.NONE for r in range(nprocs)}
        ),
    )
    previous = os.environ.get(ENV_MARKER)
    os.environ[ENV_MARKER] = "1"
    try:
        elastic_launch(config, sys.executable)("-m", "bob.cli", *argv)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        _report_failure(rank, nprocs, failure.exitcode, failure.signal_name(), Path(log_dir))
        return failure.exitcode if failure.exitcode in (1, 2) else 1
    finally:
        if previous is None:
            os.environ.pop(ENV_MARKER, None)
        else:
            os.environ[ENV_MARKER] = previous
    return 0


def _report_failure(rank: int, nprocs: int, exitcode: int, signal: str, log_dir: Path) -> None:
    how = f"was killed by {signal}" if exitcode < 0 else f"exited with code {exitcode}"
    logs = sorted(log_dir.glob(f"*/attempt_*/{rank}/stderr.log"))
    where = f"; its log: {logs[0]}" if logs else ""
    console().print(
        f"data-parallel run failed: rank {rank} of {nprocs} {how} first, and the run stopped{where}",
        style="bold red",
        highlight=False,
        markup=False,
    )
    if logs:
        tail = logs[0].read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        console().print("\n".join(f"  {line}" for line in tail), highlight=False, markup=False)
