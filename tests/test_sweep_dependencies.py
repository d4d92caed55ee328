"""Dependencies between runs: an `ood/<shift>` run with mode=checkpoint reads the classifier of a
`finetune/<in-dist>` run, so the plan puts it after that run, every executor waits for it, and
`Plan.dependencies()` lists the edges for `bob sweep --dry-run`. On embedded data (shapes-mini)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bob.errors import UsageError
from bob.results import read_result
from bob.runner import RunOptions
from bob.spec import make_spec
from bob.sweep.driver import plan_sweep, run_sweep
from bob.sweep.executors.local import LocalExecutor
from bob.sweep.plan import RunGroup, dependency_levels, make_plan, order_groups
from bob.sweep.spec import parse_sweep
from bob.tasks.ood import finetune_spec

TINY = "timm/mobilenetv3_small_050"
REPO = Path(__file__).resolve().parents[1]
FT = {"epochs": 1, "warmup_epochs": 0, "batch_size": 16, "image_size": 32}


def _sweep(seeds: int = 1) -> dict:
    """The consumer first in the file: the plan, not the file's order, must put it second. The finetune
    run has the finetune suite's default args but for the ones the sweep's defaults shrink (FT), so
    the OOD run finds it as the only finetune run of its backbone, weights and seed."""
    return {
        "name": "deps",
        "grids": [
            {
                "backbones": [TINY],
                "weights": ["random"],
                "seeds": list(range(seeds)),
                "tasks": [
                    {"task": "ood/shapes-mini-domains", "args": {"mode": "checkpoint"}},
                    {"task": "knn/shapes-mini", "args": {}},
                    {"task": "finetune/shapes-mini", "args": {}},
                ],
            }
        ],
        "defaults": {"task_args": {"finetune": FT}},
    }


def _ood(**args: str):
    return make_spec(TINY, "ood/shapes-mini-domains", "random", task_args={"mode": "checkpoint", **args})


def test_the_plan_puts_a_consumer_after_the_run_it_consumes():
    ood = _ood()
    provider = finetune_spec(ood)
    knn = make_spec(TINY, "knn/shapes-mini", "random")
    plan = make_plan([ood, knn, provider])
    order = [s.id for s in plan.specs()]
    assert order.index(provider.id) < order.index(ood.id)
    (edge,) = plan.dependencies()
    assert (edge.consumer.id, edge.provider, edge.in_plan) == (ood.id, provider.id, True)
    assert "finetune/shapes-mini" in edge.describe()
    # The provider is found by model (backbone, weights, backbone args, seed, protocol), whatever its
    # other args; a finetune run of another seed or another protocol is not it.
    tuned = make_spec(TINY, "finetune/shapes-mini", "random", task_args={"epochs": "1"})
    other_seed = make_spec(TINY, "finetune/shapes-mini", "random", seed=1)
    (edge,) = make_plan([ood, other_seed, tuned]).dependencies()
    assert edge.provider == tuned.id
    consumer = next(g for g in plan.groups if ood in g.specs)
    assert consumer.needs == {provider.id}
    # Without its provider in the plan, a consumer waits for nothing and the edge says so.
    alone = make_plan([ood])
    (edge,) = alone.dependencies()
    assert not edge.in_plan and "must exist already" in edge.describe()
    assert "finetune/shapes-mini of the same backbone" in edge.describe()
    assert alone.groups[0].needs == set()
    assert make_plan([knn, provider]).dependencies() == []


def test_the_dry_run_plan_counts_the_edges():
    plan = plan_sweep(parse_sweep(_sweep(seeds=2)))
    edges = plan.dependencies()
    assert len(edges) == 2 and all(e.in_plan for e in edges)
    assert {e.consumer.seed for e in edges} == {0, 1}
    assert all(e.provider_label and "finetune/shapes-mini" in e.provider_label for e in edges)


def test_waves_and_cycles():
    a, b, c = (make_spec(TINY, "knn/shapes-mini", "random", seed=s) for s in range(3))
    ga, gb, gc = RunGroup("a", [a]), RunGroup("b", [b], needs={a.id}), RunGroup("c", [c], needs={b.id})
    ordered = order_groups([gc, gb, ga])
    assert [g.key for g in ordered] == ["a", "b", "c"]
    assert [[g.key for g in wave] for wave in dependency_levels(ordered)] == [["a"], ["b"], ["c"]]
    free = [RunGroup("x", [a]), RunGroup("y", [b])]
    assert [[g.key for g in w] for w in dependency_levels(order_groups(free))] == [["x", "y"]]
    ga.needs = {c.id}
    with pytest.raises(UsageError, match="cycle"):
        order_groups([ga, gb, gc])


def _run(results: Path, executor=None):
    options = RunOptions(results_dir=results, cache_dir=results.parent / "cache", device="cpu", num_workers=0)
    return run_sweep(plan_sweep(parse_sweep(_sweep())), executor or LocalExecutor(), options)


def _check(results: Path, summary) -> None:
    assert summary.counts.get("ok") == 3, summary.reports
    by_task = {r.spec["task"]: r for r in map(read_result, results.rglob("*.json"))}
    ood, ft = by_task["ood/shapes-mini-domains"], by_task["finetune/shapes-mini"]
    assert ood.protocol["finetune_run"] == ft.id and ood.metrics["top1_id"] == pytest.approx(
        ft.metrics["top1"]
    )


def test_local_executor_runs_the_finetune_run_first(tmp_path):
    _check(tmp_path / "raw", _run(tmp_path / "raw"))


@pytest.mark.slow
def test_ray_executor_waits_for_the_provider(ray_session, tmp_path):
    from bob.sweep.executors.ray import RayExecutor

    _check(tmp_path / "raw", _run(tmp_path / "raw", RayExecutor()))


@pytest.mark.slow
def test_slurm_executor_submits_a_wave_per_dependency_level(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from bob.sweep.executors.slurm import SlurmExecutor

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    waves = []
    real = SlurmExecutor._run_wave
    monkeypatch.setattr(
        SlurmExecutor,
        "_run_wave",
        lambda self, ex, groups, *a: (
            waves.append([g.specs[0].task for g in groups]) or real(self, ex, groups, *a)
        ),
    )
    executor = SlurmExecutor(folder=tmp_path / "slurm", cluster="local", gpus_per_node=0, cpus_per_task=1)
    _check(tmp_path / "raw", _run(tmp_path / "raw", executor))
    assert len(waves) == 2 and waves[1] == ["ood/shapes-mini-domains"], "finetune and knn first, then ood"
    assert sorted(waves[0]) == ["finetune/shapes-mini", "knn/shapes-mini"]
