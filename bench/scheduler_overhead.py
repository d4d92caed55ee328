"""Per-run scheduling overhead: bob's Ray executor vs Ray Tune trials vs bob's local executor.

Each "run" is trivial (it returns at once), so the wall time of a sweep is all overhead: bob's
driver (stored-result survey, plan, collection) plus the executor's dispatch. bob's Ray executor
ships one Ray core task per plan group (here one run per group, the worst case); Ray Tune runs the
same trivial function as one trial per run. Tune is timed on fewer trials (a trial costs about a
second) and reported per trial.

    python bench/scheduler_overhead.py                # 1500 runs, 40 Tune trials, local Ray on 2 CPUs
    python bench/scheduler_overhead.py --runs 300 --tune-trials 20

Targets: bob's Ray executor ≤ 5 ms per run and ≥ 200× less than a Tune trial. `others` counts
Ray's own worker processes as foreign load (they are not children of this process).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BUSY_THRESHOLD, ForeignLoad, cpu_count, describe_foreign

from bob.runner import RunOptions
from bob.spec import RunSpec
from bob.sweep.driver import run_sweep
from bob.sweep.executors.local import LocalExecutor
from bob.sweep.executors.ray import RayExecutor
from bob.sweep.plan import Plan, RunGroup


def trivial_group(
    spec_dicts: list[dict], options: object, mode: str, fresh_after: float | None
) -> list[dict]:
    """A worker that does no work: what remains of a sweep's wall time is scheduling."""
    return [{"id": d["id"], "status": "ok"} for d in spec_dicts]


def trivial_trial(config: dict) -> None:
    from ray import tune

    tune.report({"score": float(config["i"])})


def trivial_plan(n: int) -> Plan:
    specs = [RunSpec(backbone="bench/trivial", task=f"trivial/run-{i}", seed=i) for i in range(n)]
    return Plan([RunGroup(f"run:{s.id}", [s]) for s in specs])


def time_sweep(executor: object, n: int, results: Path) -> float:
    plan = trivial_plan(n)
    options = RunOptions(results_dir=results)
    start = time.perf_counter()
    summary = run_sweep(plan, executor, options, job_fn=trivial_group)
    elapsed = time.perf_counter() - start
    assert summary.counts.get("ok") == n, summary.counts
    return elapsed


def time_tune(trials: int) -> float:
    from ray import tune

    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune.with_resources(trivial_trial, {"cpu": 1}),
            param_space={"i": tune.grid_search(list(range(trials)))},
            tune_config=tune.TuneConfig(metric="score", mode="max"),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )
        start = time.perf_counter()
        grid = tuner.fit()
        elapsed = time.perf_counter() - start
    assert len(grid) == trials and not grid.errors
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1500)
    parser.add_argument("--tune-trials", type=int, default=40)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()

    import ray

    print(f"ray {ray.__version__} · {cpu_count()} cores · local Ray with num_cpus={args.num_cpus}")
    with tempfile.TemporaryDirectory() as tmp:
        with ForeignLoad() as load_local:
            local_s = time_sweep(LocalExecutor(), args.runs, Path(tmp) / "local")
        t0 = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - t0
        time_sweep(RayExecutor(shutdown=False), 50, Path(tmp) / "warm")  # start the worker pool
        with ForeignLoad() as load_ray:
            ray_s = time_sweep(RayExecutor(shutdown=False), args.runs, Path(tmp) / "ray")
        with ForeignLoad() as load_tune:
            tune_s = time_tune(args.tune_trials)
        ray.shutdown()
    per_local = 1e3 * local_s / args.runs
    per_ray = 1e3 * ray_s / args.runs
    per_tune = 1e3 * tune_s / args.tune_trials
    rows = [
        ("ray startup, once per sweep (not counted)", f"{startup:.2f} s", None),
        (f"bob local executor, {args.runs} runs", f"{per_local:.3f} ms/run", load_local.cores),
        (f"bob ray executor, {args.runs} runs", f"{per_ray:.3f} ms/run", load_ray.cores),
        (f"ray tune, {args.tune_trials} trials (one per run)", f"{per_tune:.1f} ms/trial", load_tune.cores),
    ]
    for label, value, cores in rows:
        print(f"{label:<46} {value:>14}   others {describe_foreign(cores)}")
    ratio = per_tune / per_ray
    print(f"{'tune / bob ray executor':<46} {ratio:>13.0f}×")
    ok = per_ray <= 5.0 and ratio >= 200
    print(f"target (≤ 5 ms per run, ≥ 200× less than Tune): {'met' if ok else 'NOT met'}")
    for load in (load_local, load_ray, load_tune):
        if load.cores is not None and load.cores > BUSY_THRESHOLD:
            print("warning: other processes kept the machine busy; timings are inflated")
            break


if __name__ == "__main__":
    main()
