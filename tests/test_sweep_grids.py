"""The shipped grids: bob.yaml and bob-smoke.yaml are BoB-sized (≥ 1500 runs) and plan without data,
weights or torch. They name the fine-tune, few-label, detection, OOD and retrieval suites, so each
test runs once those suites are registered. seed-papers.yaml and its smoke twin cover the other
suites, and every registered suite is in some shipped grid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
