"""Wall time of the CPU smoke grid (sweeps/bob-smoke.yaml) with the Ray executor, and the number of
feature extractions it really made against the number of runs.

    python bench/smoke_grid.py                                    # the whole grid, local Ray on 2 CPUs
    python bench/smoke_grid.py --skip-missing-suites              # only the suites this checkout has
    python bench/smoke_grid.py --executor local --results-dir /tmp/smoke

Results and features go to a fresh temporary directory unless --results-dir is given (then a
second invocation measures a resume: every run is skipped).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from _common import BUSY_THRESHOLD, ForeignLoad, cpu_count, describe_foreign, ensure_offline_weights

from bob.results import ResultStore, RunResult
from bob.runner import RunOptions
from bob.suites import SUITES
from bob.sweep.driver import plan_sweep, run_sweep
from bob.sweep.executors import make_executor
from bob.sweep.spec import parse_sweep

ROOT = Path(__file__).resolve().parents[1]


def keep_registered(data: dict) -> list[str]:
    """Drop task entries whose suite this checkout does not register; return what was dropped."""
    dropped = []
    for grid in data["grids"]:
        kept = []
        for entry in grid["tasks"]:
            names = [entry] if isinstance(entry, str) else entry.get("tasks") or [entry["task"]]
            missing = [n for n in names if n.partition("/")[0] not in SUITES.names()]
            dropped += missing
            if not missing:
                kept.append(entry)
        grid["tasks"] = kept
    data["grids"] = [g for g in data["grids"] if g["tasks"]]
    data.get("defaults", {}).get("task_args", {}).clear()  # may name dropped suites
    return sorted(set(dropped))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep", nargs="?", default=str(ROOT / "sweeps" / "bob-smoke.yaml"))
    parser.add_argument("--executor", default="ray", choices=("local", "ray"))
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--skip-missing-suites", action="store_true")
    args = parser.parse_args()
    ensure_offline_weights()  # before Ray starts: its workers inherit the environment

    data = yaml.safe_load(Path(args.sweep).read_text())
    if args.skip_missing_suites:
        dropped = keep_registered(data)
        if dropped:
            print(f"skipped (suite not registered here): {', '.join(dropped)}")
    plan = plan_sweep(parse_sweep(data, args.sweep))
    print(
        f"{Path(args.sweep).name}: {plan.runs} runs · {plan.extractions} planned extractions · "
        f"{plan.training_runs} training runs · {len(plan.groups)} groups · {cpu_count()} cores · "
        f"executor {args.executor}"
    )
    settings = {"num_cpus": args.num_cpus} if args.executor == "ray" else {}
    with tempfile.TemporaryDirectory(prefix="bob-smoke-") as tmp:
        results = args.results_dir or Path(tmp) / "raw"
        os.environ.setdefault("BOB_CACHE_DIR", str(results.parent / "cache"))
        options = RunOptions(results_dir=results, device="cpu", num_workers=0)
        start = time.perf_counter()
        with ForeignLoad() as load:
            summary = run_sweep(plan, make_executor(args.executor, **settings), options)
        wall = time.perf_counter() - start
        errors = Counter(
            f"{r.error['type']}: {r.error['message'][:120]}"
            for _, r in ResultStore(results).iter_results()
            if isinstance(r, RunResult) and not r.ok and r.error
        )
    counts = {k: v for k, v in summary.counts.items() if v}
    print(f"wall time {wall:.1f} s ({wall / 60:.1f} min) · {1e3 * wall / max(plan.runs, 1):.0f} ms per run")
    print(f"runs: {counts}")
    for message, n in errors.most_common(5):
        print(f"  {n} failed with {message}")
    print(f"split extractions made: {summary.extractions} (train and test splits count separately)")
    print(f"others (cores busy with foreign work, Ray workers included): {describe_foreign(load.cores)}")
    if load.cores is not None and load.cores > BUSY_THRESHOLD + args.num_cpus:
        print("warning: the machine was busy with other work; the wall time is inflated")


if __name__ == "__main__":
    main()
