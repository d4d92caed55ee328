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

A suite declares whether its runs train data-parallel (`Task.data_parallel`, and the task arg values
that take a run off that path, `Task.not_data_parallel`); any other run with `--gpus-per-run` above 1
is a usage error before anything is launched, never N copies of the same run. Suites share the
data-parallel loader and protocol record (tasks/common/data_parallel.py) and gather their evaluation
with `gather_rows`, `gather_objects` and `all_sum` here. A run that reads the frozen-feature cache
may run on N ranks too: each extracts its shard of every split it misses (bob/context.py). This module imports torch only inside its
functions: `bob --help` stays light.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
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


def shard(total: int) -> list[int]:
    """The rows of a split of `total` this rank handles (its evaluation or extraction shard, as
    `shard_positions` deals them): every row outside a data-parallel run."""
    if not active():
        return list(range(total))
    import torch.distributed as dist

    return shard_positions(total, dist.get_rank(), dist.get_world_size())


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


def gather_objects(local: Sequence[Any], rows: Sequence[int], total: int) -> list[Any]:
    """`gather_rows` for any picklable per-row outputs (a list of records, masks, ...): every rank's
    `local[i]`, the output of row `rows[i]`, put back into dataset order; `list(local)` outside a
    data-parallel run. A row no rank produced is an error, never a silent gap."""
    if not active():
        return list(local)
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (list(rows), list(local)))
    out: list[Any] = [None] * total
    seen = [False] * total
    for part_rows, values in parts:
        for row, value in zip(part_rows, values, strict=True):
            out[row], seen[row] = value, True
    missing = seen.count(False)
    if missing:
        raise RuntimeError(f"the ranks' shards miss {missing} of {total} rows")
    return out


def all_sum(values: np.ndarray) -> np.ndarray:
    """The sum over the ranks of a per-rank accumulator (a confusion matrix, counts), exact for
    integers; `values` itself outside a data-parallel run."""
    if not active():
        return values
    import numpy as np
    import torch
    import torch.distributed as dist

    device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.from_numpy(np.array(values, copy=True)).to(device)  # reduced in place: not the caller's
    dist.all_reduce(t)
    return t.cpu().numpy()


def fault_point(step: int) -> None:
    """The test hook of `BOB_DDP_FAULT_RANK`: that rank dies (no clean-up, as a crash would) after
    its first optimizer step. Does nothing unless the variable names this process's rank."""
    target = os.environ.get(FAULT_ENV)
    if target is not None and in_worker() and step >= 1 and target == str(world().rank):
        os._exit(FAULT_EXIT_CODE)


# ------------------------------------------------------------------------------------------ launching


def check_devices(device: str, nprocs: int, option: str = OPTION) -> str:
    """The kind of device the ranks use ("cuda" or "cpu"); a usage error, naming the flag `option`
    that asked, when CUDA is asked for and fewer than `nprocs` devices exist. Without CUDA, `auto`
    runs the ranks on the CPU with gloo."""
    import torch

    if device.startswith("mps"):
        raise UsageError(f"{option} needs CUDA devices or the CPU (gloo); --device {device} has neither.")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if ":" in device:
        raise UsageError(
            f"{option} gives each rank its own device: use --device cuda, not --device {device}."
        )
    count = torch.cuda.device_count()
    if count < nprocs:
        raise UsageError(f"{option} {nprocs} needs {nprocs} CUDA devices; this machine has {count}.")
    return "cuda"


LAUNCH_OPTIONS = ("gpus_per_run", "nodes", "rdzv_endpoint")  # what the launcher, not a rank, reads


def command_line(ctx: typer.Context, drop: Sequence[str] = LAUNCH_OPTIONS) -> list[str]:
    """The command of `ctx` as arguments (its name, then each option given on the command line or
    through the environment), less the options named in `drop`: what every rank runs again."""
    args = [ctx.info_name or ""]
    for param in ctx.command.params:
        name = param.name or ""
        if param.param_type_name != "option" or name in drop:
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


def check_refusals(refusals: Sequence[tuple[str, str]], nprocs: int) -> None:
    """A usage error naming every (task, why) whose run cannot train data-parallel (one message)."""
    if not refusals:
        return
    lines = "; ".join(f"{task} {why}" for task, why in dict(refusals).items())
    raise UsageError(
        f"{OPTION} {nprocs}: these runs cannot run data-parallel: {lines}. Run them without {OPTION} "
        f"(`bob ls tasks` marks the suites that train data-parallel; docs/distributed.md)."
    )


def check_endpoint(endpoint: str) -> None:
    """A usage error unless `endpoint` reads HOST:PORT with a port in 1..65535 (what torch's c10d
    rendezvous takes), before any node waits on it."""
    host, sep, port = endpoint.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(f"--rdzv-endpoint must read HOST:PORT (e.g. node01:29400), got '{endpoint}'.")


def data_parallel(
    ctx: typer.Context,
    nprocs: int,
    refusals: Callable[[], Sequence[tuple[str, str]]],
    device: str,
    debug: bool = False,
    nodes: int = 1,
    endpoint: str | None = None,
) -> int | None:
    """What `bob run` does with `--gpus-per-run N --nodes M`: in a rank bob launched, join the process
    group and go on (None); with one rank in all, go on in this process (None); in a SLURM job step
    of M × N tasks (`srun`), join as the task's rank and go on (None); else check the runs
    (`refusals()`: the (task, why) of each run that cannot run data-parallel) and the devices,
    launch this node's N ranks of the command of `ctx` (meeting the other nodes' at `endpoint`) and
    return the exit code."""
    if in_worker():
        init_process_group(device)
        return None
    if nprocs < 1 or nodes < 1:
        raise UsageError(f"{OPTION} and --nodes must be positive integers, got {nprocs} and {nodes}.")
    world = nprocs * nodes
    if world == 1:
        return None
    check_refusals(refusals(), world)
    tasks = srun_tasks()
    if tasks > 1:  # `srun -N M -n M×N bob run ... --gpus-per-run N --nodes M`: SLURM started the ranks
        if tasks != world:
            raise UsageError(
                f"{OPTION} {nprocs} --nodes {nodes} inside a SLURM job step of {tasks} tasks: give srun "
                f"as many tasks as ranks (srun -N {nodes} --ntasks-per-node {nprocs}), or run one task "
                "a node and let bob launch the ranks."
            )
        join_slurm_tasks(device)
        return None
    if nodes > 1 and not endpoint:
        raise UsageError(
            f"--nodes {nodes} needs --rdzv-endpoint HOST:PORT (a free port on one node that all reach; "
            f"run the same command on every node), or run under srun -N {nodes} --ntasks-per-node "
            f"{nprocs}."
        )
    if nodes > 1:
        check_endpoint(endpoint or "")
    kind = check_devices(device, nprocs)
    argv = (["--debug"] if debug else []) + command_line(ctx)
    if kind == "cpu":
        console().print(f"{OPTION} {nprocs}: no CUDA; {nprocs} CPU processes with gloo", highlight=False)
    return launch(argv, nprocs, nodes, endpoint)


class RankFailed(RuntimeError):
    """A rank of a data-parallel run died or failed; the message names it and its log."""

    def __init__(self, rank: int, nprocs: int, exitcode: int, how: str, log: Path | None) -> None:
        where = f"; its log: {log}" if log is not None else ""
        super().__init__(f"rank {rank} of {nprocs} {how} first, and the run stopped{where}")
        self.rank, self.exitcode, self.log = rank, exitcode, log


def elastic(
    entry: str | Callable[..., Any],
    args: Sequence[Any],
    nprocs: int,
    nodes: int = 1,
    endpoint: str | None = None,
) -> dict[int, Any]:
    """Run `entry(*args)` as `nprocs` ranks on this machine with the `BOB_DDP` marker set: alone
    (torchrun --standalone: a free port), or as one of `nodes` nodes that meet at `endpoint` (torchrun
    --nnodes M --rdzv-endpoint: every node runs the same command). No restarts. `entry` is an
    executable (`args` its arguments) or a picklable function (its return value per local rank
    comes back). Global rank 0 prints to its console; the others write log files. Raises
    `RankFailed` naming the rank that failed first."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    log_dir = Path(tempfile.mkdtemp(prefix="bob-ddp-"))
    if nodes > 1:  # the same id on every node: the command each runs, and where they meet
        digest = hashlib.sha256(repr((entry, list(map(str, args)), endpoint)).encode()).hexdigest()
        run_id = f"bob-{digest[:16]}"
    else:
        run_id = f"bob-{os.getpid()}"
    config = LaunchConfig(
        min_nodes=nodes,
        max_nodes=nodes,
        nproc_per_node=nprocs,
        run_id=run_id,
        rdzv_backend="c10d",
        rdzv_endpoint=endpoint if nodes > 1 and endpoint else "localhost:0",  # alone: a free port
        max_restarts=0,
        logs_specs=DefaultLogsSpecs(
            str(log_dir), redirects={r: Std.ALL if r else Std.NONE for r in range(nprocs)}
        ),
    )
    previous = os.environ.get(ENV_MARKER)
    os.environ[ENV_MARKER] = "1"
    try:
        return elastic_launch(config, entry)(*args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        how = (
            f"was killed by {failure.signal_name()}"
            if failure.exitcode < 0
            else f"exited with code {failure.exitcode}"
        )
        logs = sorted(log_dir.glob(f"*/attempt_*/{failure.local_rank}/stderr.log"))
        raise RankFailed(rank, nprocs * nodes, failure.exitcode, how, logs[0] if logs else None) from None
    finally:
        if previous is None:
            os.environ.pop(ENV_MARKER, None)
        else:
            os.environ[ENV_MARKER] = previous


def launch(argv: Sequence[str], nprocs: int, nodes: int = 1, endpoint: str | None = None) -> int:
    """Run `python -m bob.cli ARGV` as this node's `nprocs` ranks (`elastic`); returns 0, or the
    failure's exit code after one line naming the rank that failed first and the tail of its log."""
    try:
        elastic(sys.executable, ["-m", "bob.cli", *argv], nprocs, nodes, endpoint)
    except RankFailed as err:
        _report_failure(err)
        return err.exitcode if err.exitcode in (1, 2) else 1
    return 0


def join(device: str, rank: int, size: int, local_rank: int, addr: str, port: int) -> World:
    """Join a process group whose ranks another launcher started (SLURM tasks, submitit): the
    environment torchrun would have set, the `BOB_DDP` marker, then `init_process_group`."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(size),
        LOCAL_RANK=str(local_rank),
        MASTER_ADDR=addr,
        MASTER_PORT=str(port),
        **{ENV_MARKER: "1"},
    )
    init_process_group(device)
    return world()


def slurm_port(job_id: str) -> int:
    """The rendezvous port of a SLURM job's ranks, drawn from its job id (20000..39999)."""
    return 20000 + int(job_id.split("_")[0]) % 20000


def join_slurm_tasks(device: str) -> World:
    """Join the process group of a SLURM job step whose tasks are the ranks (`srun -n N bob run ...
    --gpus-per-run N`): the launcher's SLURM environment gives each task its rank (SLURM_PROCID),
    the world size (SLURM_NTASKS) and its local rank (SLURM_LOCALID); the rendezvous is the job's
    first node (SLURM_JOB_NODELIST, expanded by `scontrol show hostnames`) at `slurm_port`."""
    env = os.environ
    missing = [k for k in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID") if k not in env]
    if missing:
        raise UsageError(f"not inside a SLURM job step: {', '.join(missing)} unset (run it under srun).")
    return join(
        device,
        int(env["SLURM_PROCID"]),
        int(env["SLURM_NTASKS"]),
        int(env.get("SLURM_LOCALID", "0")),
        env.get("MASTER_ADDR") or _first_host(env.get("SLURM_JOB_NODELIST", "")),
        int(env.get("MASTER_PORT") or slurm_port(env["SLURM_JOB_ID"])),
    )


def srun_tasks() -> int:
    """The tasks of the SLURM job step this process is one of (`srun -n N`), else 0."""
    raw = os.environ.get("SLURM_STEP_NUM_TASKS", "")
    return int(raw) if raw.isdigit() else 0


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (`node[01-04]` -> `node01`), as `scontrol` expands it."""
    import subprocess

    if not nodelist:
        return "127.0.0.1"
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.split():
        return out.stdout.split()[0]
    first = nodelist.split(",")[0]
    if "[" in first:  # a range only scontrol expands: never guess a rendezvous host
        raise UsageError(
            f"cannot name the first node of SLURM_JOB_NODELIST={nodelist} without `scontrol show "
            "hostnames`; put scontrol on PATH, or set MASTER_ADDR to that node."
        )
    return first  # a plain list needs no expanding


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank (the value itself outside a data-parallel run): the ranks
    follow one decision, e.g. whether a sweep runs a spec."""
    if not active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _report_failure(err: RankFailed) -> None:
    console().print(f"data-parallel run failed: {err}", style="bold red", highlight=False, markup=False)
    if err.log is not None:
        tail = err.log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        console().print("\n".join(f"  {line}" for line in tail), highlight=False, markup=False)
