"""Data-parallel overhead: the same fine-tuning run as 1 process and as N gloo ranks (`--gpus-per-run N`).

Both runs are `bob run` subprocesses on the same tiny model with random weights (no download) and
the same embedded data, with the same effective batch: one process accumulates `--accum` batches per
optimizer step, N ranks share them (bob/distributed.py). Reported per run:

  run s      the run's own time (the result's `timings.total_s`: training and the sharded evaluation)
  wall s     the whole command: interpreter start, the launcher and N ranks importing torch
  samples/s  training samples seen (train images × epochs) / run s
and the ratio N-rank / 1-process samples/s. On a CPU with few cores the N ranks share those cores
(the launcher gives each rank one thread), so the ratio measures the cost of the launcher, the
gradient all-reduce and the gather, not a speed-up: on GPUs each rank has its own device.
`uptime`'s load averages are printed before and after: a loaded machine skews both runs.

    python bench/ddp_overhead.py
    python bench/ddp_overhead.py --ranks 2 --epochs 3 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import cpu_count

ROOT = Path(__file__).resolve().parents[1]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def one_run(args: argparse.Namespace, ranks: int, out: Path) -> dict[str, float]:
    """One `bob run` (`ranks` > 1: data-parallel) and its timings, read back from its result."""
    task_args = {
        "epochs": args.epochs,
        "warmup_epochs": 0,
        "batch_size": args.batch_size,
        "accum_steps": args.accum,
    }
    command = [sys.executable, "-m", "bob.cli", "run", "-b", args.backbone, "-w", "random", "-t", args.task]
    command += [f"-a{k}={v}" for k, v in task_args.items()]
    command += ["--device", "cpu", "--results-dir", str(out), "--cache-dir", str(out / "cache"), "--quiet"]
    if ranks > 1:
        command += ["--gpus-per-run", str(ranks)]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the {ranks}-process run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    (path,) = [p for p in out.rglob("*.json") if p.parent != out / "cache"]
    result = json.loads(path.read_text())
    run_s = result["timings"]["total_s"]
    samples = result["protocol"]["num_train"] * args.epochs
    return {
        "run_s": run_s,
        "wall_s": wall,
        "samples_per_s": samples / run_s,
        "top1": result["metrics"]["top1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="timm/test_vit")
    parser.add_argument("--task", default="finetune/shapes-mini")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--accum", type=int, default=2, help="one process's accumulation (the ranks share it)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {cpu_count()} cores, {args.backbone} on {args.task}")
    print(f"effective batch {args.batch_size * args.accum}, {args.epochs} epochs, {args.repeats} repeat(s)")
    print(f"before: {uptime()}")
    rows: dict[int, list[dict[str, float]]] = {1: [], args.ranks: []}
    with tempfile.TemporaryDirectory(prefix="bob-ddp-bench-") as tmp:
        for repeat in range(args.repeats):
            order = [1, args.ranks] if repeat % 2 == 0 else [args.ranks, 1]
            for ranks in order:
                rows[ranks].append(one_run(args, ranks, Path(tmp) / f"{ranks}-{repeat}"))
    print(f"after:  {uptime()}")
    print(f"{'processes':>9} | {'run s':>7} | {'wall s':>7} | {'samples/s':>9} | top-1")
    for ranks, runs in rows.items():
        for r in runs:
            print(
                f"{ranks:>9} | {r['run_s']:7.2f} | {r['wall_s']:7.2f} | {r['samples_per_s']:9.2f} | {r['top1']:.4f}"
            )
    best = {ranks: max(r["samples_per_s"] for r in runs) for ranks, runs in rows.items()}
    print(f"samples/s {args.ranks} ranks / 1 process: {best[args.ranks] / best[1]:.3f} (best of each)")


if __name__ == "__main__":
    main()
