"""A sweep's progress in flight: the runs under way and what they do, a line per failure as it
happens, the bar advancing per run; and one unit for extractions in the dry run and the summary."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import bob.cli.sweep as cli_sweep
from bob.cli.sweep import print_summary
from bob.runner import RunOptions
from bob.sweep.display import EXTRACTING, FITTING, TRAINING, SweepDisplay, run_label
from bob.sweep.driver import SweepSummary, plan_sweep, run_phase, run_sweep, unique_extractions
from bob.sweep.executors.local import LocalExecutor
from bob.sweep.spec import parse_sweep
from bob.sweep.worker import RunReport
from tests.sweep_fixtures import SUITE, fake_suite, fake_sweep, run_group


@pytest.fixture(autouse=True)
def _fake_suite():
    with fake_suite():
        yield


class RecordingDisplay(SweepDisplay):
    """The real display on a captured console, keeping every event in order."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        super().__init__(Console(file=self.out, width=200, force_terminal=True, color_system=None))
        self.events: list[tuple[Any, ...]] = []

    def started(self, run_id: str, phase: str = "running") -> None:
        super().started(run_id, phase)
        self.events.append(("started", run_id, phase, set(self.in_flight)))

    def update(self, report: RunReport) -> None:
        in_flight = set(self.in_flight)
        printed = len(self.failures)
        super().update(report)
        completed = self._bar.tasks[0].completed
        self.events.append(("reported", report.id, in_flight, completed, self.failures[printed:]))


def test_runs_in_flight_failures_as_they_happen_and_the_bar_per_run(tmp_path: Path) -> None:
    data = fake_sweep(1)
    data["grids"][0]["tasks"] = [
        {"task": f"{SUITE}/shapes-mini", "grid": {"behaviour": ["ok", "raise", "sleep"]}}
    ]
    plan = plan_sweep(parse_sweep(data))
    labels = {spec.id: run_label(spec) for spec in plan.specs()}
    options = RunOptions(
        results_dir=tmp_path / "raw", cache_dir=tmp_path / "cache", device="cpu", num_workers=0
    )
    display = RecordingDisplay()
    summary = run_sweep(plan, LocalExecutor(), options, display=display, job_fn=run_group)
    assert summary.counts["ok"] == 2 and summary.counts["failed"] == 1

    kinds = [event[0] for event in display.events]
    assert kinds == ["started", "reported"] * 3, "each run is shown in flight before it reports"
    for i in range(3):
        started, reported = display.events[2 * i], display.events[2 * i + 1]
        assert started[1] == reported[1] and started[3] == {started[1]}  # in flight: this run only
        assert reported[2] == {reported[1]} and reported[3] == i + 1  # the bar advanced by one run
    failed = [event for event in display.events if event[0] == "reported" and event[4]]
    assert len(failed) == 1
    (line,) = failed[0][4]
    assert line.startswith(f"failed: {labels[failed[0][1]]}") and "ValueError: injected failure" in line
    assert line in display.out.getvalue()  # printed as it happened, not only in the final summary
    assert not display.in_flight and display._live is None


def _spec_data(tasks: list[str]) -> dict[str, Any]:
    return {
        "name": "units",
        "grids": [
            {
                "backbones": ["torchvision/mobilenet_v2"],
                "weights": ["pretrained", "random"],
                "seeds": [0],
                "tasks": [{"tasks": tasks}],
            }
        ],
    }


def test_run_phase_is_extract_first_then_fit_and_training_for_trainers() -> None:
    plan = plan_sweep(parse_sweep(_spec_data(["linear-probe/shapes", "knn/shapes", "finetune/shapes"])))
    extracted: set[str] = set()
    phases = {(s.task, s.weights): run_phase(s, extracted) for s in plan.specs() if s.weights == "pretrained"}
    assert phases[("linear-probe/shapes", "pretrained")] in (EXTRACTING, FITTING)
    assert {phases[("linear-probe/shapes", "pretrained")], phases[("knn/shapes", "pretrained")]} == {
        EXTRACTING,
        FITTING,
    }, "the first of an extraction group extracts, the other reads the cache"
    assert phases[("finetune/shapes", "pretrained")] == TRAINING


def test_summary_counts_extractions_in_the_dry_runs_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_sweep(
        parse_sweep(_spec_data(["linear-probe/shapes", "knn/shapes", "linear-probe/shapes-texture"]))
    )
    specs = {s.id: s for s in plan.specs()}
    splits = 2  # a probe extracts its train and test splits: two cache entries, one extraction
    extracted: set[str] = set()
    reports = []
    for spec in plan.specs():  # as a cold cache runs them: the first run of a group extracts
        first = run_phase(spec, extracted) == EXTRACTING
        reports.append(RunReport(spec.id, "ok", extractions=splits if first else 0))
    assert unique_extractions(reports, specs) == plan.extractions
    summary = SweepSummary(
        plan.runs,
        {"ok": plan.runs},
        1.0,
        reports,
        extractions=sum(r.extractions for r in reports),
        unique_extractions=unique_extractions(reports, specs),
    )
    out = io.StringIO()
    monkeypatch.setattr(cli_sweep, "console", lambda: Console(file=out, width=300))
    print_summary(plan, summary, "missing", Path("results"))
    text = out.getvalue()
    assert f"{plan.extractions} unique feature extractions (backbone × dataset" in text
    assert f"{splits * plan.extractions} split feature sets" in text
