"""The shipped grids: bob.yaml and bob-smoke.yaml are BoB-sized (≥ 1500 runs) and plan without data,
weights or torch. They name the fine-tune, few-label, detection, OOD and retrieval suites, so each
test runs once those suites are registered. seed-papers.yaml and its smoke twin cover the other
suites, and every registered suite is in some shipped grid."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from bob.backbones.catalog import BACKBONES
from bob.suites import SUITES
from bob.sweep.driver import plan_sweep
from bob.sweep.spec import load_sweep

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
NEEDED = ("finetune", "few-label", "detection", "ood", "retrieval")
MISSING = [s for s in NEEDED if s not in SUITES.names()]
needs_suites = pytest.mark.skipif(
    bool(MISSING), reason=f"the grids need the {', '.join(MISSING)} suite(s), not registered in this checkout"
)


@needs_suites
@pytest.mark.parametrize("name", ["bob.yaml", "bob-smoke.yaml"])
def test_grids_have_at_least_1500_runs_and_every_suite(name):
    plan = plan_sweep(load_sweep(SWEEPS / name))
    breakdown = plan.breakdown()
    assert plan.runs >= 1500
    assert set(breakdown["suite"]) == {"linear-probe", *NEEDED}
    assert breakdown["weights"]["pretrained"] and breakdown["weights"]["random"]
    assert 0 < plan.extractions < plan.runs and plan.training_runs > 0


@needs_suites
def test_bob_grid_has_bobs_detection_lr_grid():
    plan = plan_sweep(load_sweep(SWEEPS / "bob.yaml"))
    coco = [s for s in plan.specs() if s.task == "detection/coco2017"]
    assert {s.task_args["lr"] for s in coco} == {8e-5, 1e-4, 2e-4, 3e-4}
    assert {s.task_args["mode"] for s in coco} == {"frozen", "finetune"}
    per_backbone = {(s.backbone, s.weights) for s in coco}
    assert len(coco) == 8 * len(per_backbone)


@needs_suites
def test_bob_dry_run_imports_no_torch():
    code = (
        "import sys\nfrom bob.cli import app\n"
        "try:\n    app(['sweep', sys.argv[1], '--dry-run'], standalone_mode=False)\n"
        "finally:\n    assert 'torch' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(SWEEPS / "bob.yaml")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "runs by family" in proc.stdout


def _arg_names(suite: str) -> set[str]:
    return {f.name for f in dataclasses.fields(SUITES.get(suite).Args)}


@needs_suites
@pytest.mark.parametrize("name", ["bob.yaml", "bob-smoke.yaml"])
def test_bob_grids_run_bobs_protocol(name):
    """Every run of a suite that has `protocol` runs BoB's; OOD scores the fine-tuned classifiers, each
    after the finetune run it reads (a dependency inside the plan, never a run that must pre-exist)."""
    plan = plan_sweep(load_sweep(SWEEPS / name))
    specs = plan.specs()
    with_protocol = {s for s in SUITES.names() if "protocol" in _arg_names(s)}
    assert {"finetune", "few-label", "ood"} <= with_protocol
    for spec in specs:
        if spec.task.partition("/")[0] in with_protocol:
            assert spec.task_args.get("protocol") == "bob", spec.label
    ood = [s for s in specs if s.task.startswith("ood/")]
    assert ood and all(s.task_args.get("mode") == "checkpoint" for s in ood)
    deps = plan.dependencies()
    assert len(deps) == len(ood) and all(d.in_plan for d in deps)
    providers = {s.id: s for s in specs}
    for dep in deps:
        provider = providers[dep.provider]
        assert provider.task.startswith("finetune/") and provider.task_args.get("protocol") == "bob"
        assert (provider.backbone, provider.weights, provider.seed) == (
            dep.consumer.backbone, dep.consumer.weights, dep.consumer.seed,
        )  # fmt: skip


@needs_suites
def test_bob_grid_keeps_bobs_task_coverage():
    specs = plan_sweep(load_sweep(SWEEPS / "bob.yaml")).specs()
    assert not any(s.task == "ood/imagenet-c" for s in specs)  # not a BoB shift
    assert {s.task for s in specs if s.backbone.startswith("sam/")} == {"detection/coco2017"}
    sscd = {(s.backbone, s.task.partition("/")[0]) for s in specs if s.backbone.startswith("sscd/")}
    catalog = {n for n in BACKBONES.names() if n.startswith("sscd/")}
    assert len(catalog) == 2 and sscd == {(n, "retrieval") for n in catalog}
    from bob.tasks.common.finetune_run import BOB_SPLIT_DATASETS  # torch: only this test

    # protocol=bob refuses a dataset whose BoB split is another entry (eurosat -> eurosat-coop).
    assert not {s.task.partition("/")[2] for s in specs} & set(BOB_SPLIT_DATASETS)
    probes = [s for s in specs if s.task.startswith("linear-probe/")]
    assert probes and all(s.task_args.get("mode") == "bob" for s in probes)  # BoB's own LARS probe


def test_quickstart_plans_twelve_runs_in_four_extraction_groups():
    plan = plan_sweep(load_sweep(SWEEPS / "quickstart.yaml"))
    assert plan.runs == 12 and plan.extractions == 4 and plan.training_runs == 0


SEED_PAPER_SUITES = {
    "segmentation", "iqa", "dg", "reid", "multilabel", "video-cls", "rvos", "vis", "detection",
    "finetune", "few-label", "efficiency", "zero-shot", "open-vocab", "tradeoff",
}  # fmt: skip


@pytest.mark.parametrize("name", ["seed-papers.yaml", "seed-papers-smoke.yaml"])
def test_seed_paper_grids_plan_every_other_suite(name):
    missing = SEED_PAPER_SUITES - set(SUITES.names())
    if missing:
        pytest.skip(f"needs the {', '.join(sorted(missing))} suite(s)")
    plan = plan_sweep(load_sweep(SWEEPS / name))
    specs = plan.specs()
    assert set(plan.breakdown()["suite"]) == SEED_PAPER_SUITES
    assert any(s.task_args.get("teacher") for s in specs if s.task.startswith("finetune/"))
    assert any(s.task_args.get("head") == "query" for s in specs if s.task.startswith("detection/"))
    assert any(s.backbone.startswith("composite(") for s in specs)
    assert {s.task_args.get("mode", "stitch") for s in specs if s.task.startswith("tradeoff/")} == {
        "stitch",
        "curve",
    }
    if name == "seed-papers.yaml":  # the text-tower suites run on vision-language backbones only
        assert plan.runs >= 1000
        text = [s for s in specs if s.task.split("/")[0] in ("zero-shot", "open-vocab")]
        assert text and all(s.backbone.startswith("clip/") for s in text)


def test_every_registered_suite_is_in_a_shipped_grid():
    named = set()
    for path in SWEEPS.glob("*.yaml"):
        named |= set(plan_sweep(load_sweep(path)).breakdown()["suite"])
    assert set(SUITES.names()) - named == set(), "add the suite to a grid in sweeps/"
