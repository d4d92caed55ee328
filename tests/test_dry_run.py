"""`bob run --dry-run` (and `bob.api.plan_run`): the planned runs with their ids, which are done, which
feature sets are cached, as a table or JSON; nothing is run or written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bob import api
from bob.results import ResultStore, RunResult
from bob.spec import make_spec
from bob.sweep.plan import extraction_key
from tests.cli_harness import TINY, invoke, tree

GRID = ["-b", f"{TINY}@random", "-t", "knn/shapes-mini,ncm/shapes-mini,linear-probe/shapes-mini", "-s", "0"]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def planned_specs() -> list:
    return [
        make_spec(TINY, t, "random", 0)
        for t in ("knn/shapes-mini", "ncm/shapes-mini", "linear-probe/shapes-mini")
    ]


def test_a_dry_run_lists_every_run_and_writes_nothing(in_tmp: Path, capsys) -> None:
    before = tree(in_tmp)
    code, text = invoke(["run", *GRID, "--dry-run"], capsys)
    assert code == 0, text
    for spec in planned_specs():
        assert spec.id in text and spec.task in text
    assert "3 runs (0 done, 3 to run)" in text and "will be extracted" in text
    assert tree(in_tmp) == before


def test_the_json_plan_groups_runs_by_the_sweep_planners_extraction_key(in_tmp: Path, capsys) -> None:
    code, text = invoke(["run", *GRID, "--dry-run", "--json"], capsys)
    assert code == 0, text
    plan = json.loads(text)
    specs = planned_specs()
    assert [r["id"] for r in plan["planned"]] == [s.id for s in specs]
    assert {r["state"] for r in plan["planned"]} == {"to run"}
    keys = {extraction_key(s) for s in specs}
    assert plan["extractions"] == len(keys) == len(plan["feature_sets"])
    assert plan["cached"] == 0


def test_a_stored_result_with_its_cache_entries_makes_a_run_done_and_its_features_cached(
    in_tmp: Path,
) -> None:
    """The planner reads what a run leaves: its result JSON (with the feature-cache keys it used) and
    the cache entries' COMPLETE markers; an entry missing from the cache is extracted again."""
    spec = make_spec(TINY, "knn/shapes-mini", "random", 0)
    keys = {"train": "ab" + "0" * 62, "test": "cd" + "1" * 62}
    result = RunResult(id=spec.id, status="ok", spec=spec.to_dict(), cache={"keys": keys})
    ResultStore(in_tmp / "raw").write(result, spec)
    for key in keys.values():
        (in_tmp / "features" / key[:2] / key).mkdir(parents=True)
        (in_tmp / "features" / key[:2] / key / "COMPLETE").write_text("{}")
    grid = (TINY, ["knn/shapes-mini", "ncm/shapes-mini"], "random")
    plan = api.plan_run(*grid, results_dir=in_tmp / "raw", cache_dir=in_tmp / "features")
    assert [r.state for r in plan.runs] == ["done", "to run"]
    (features,) = plan.extractions
    assert features.cached and features.runs == [r.spec.id for r in plan.runs]
    (in_tmp / "features" / "cd" / keys["test"] / "COMPLETE").unlink()
    plan = api.plan_run(*grid, results_dir=in_tmp / "raw", cache_dir=in_tmp / "features")
    assert not plan.extractions[0].cached


@pytest.mark.slow
def test_after_a_run_its_result_is_done_and_its_features_cached(in_tmp: Path) -> None:
    (first,) = api.run(TINY, "knn/shapes-mini", "random", device="cpu", results_dir="raw")
    assert first.result.ok
    plan = api.plan_run(TINY, ["knn/shapes-mini", "ncm/shapes-mini"], "random", results_dir="raw")
    assert [r.state for r in plan.runs] == ["done", "to run"]
    (features,) = plan.extractions  # knn and ncm read the same features
    assert features.cached and features.runs == [r.spec.id for r in plan.runs]
    assert plan.counts() == {"runs": 2, "to_run": 1, "done": 1, "extractions": 1, "cached": 1}
    again = api.plan_run(TINY, "knn/shapes-mini", "random", results_dir="raw", overwrite=True)
    assert [r.state for r in again.runs] == ["to run"]
    empty = api.plan_run(TINY, "knn/shapes-mini", "random", results_dir="raw", cache_dir="elsewhere")
    assert not empty.extractions[0].cached  # the features are cached in the default cache, not there


def test_a_dry_run_checks_what_a_run_checks(in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("BOB_DATA_ROOT", str(in_tmp / "data"))
    code, text = invoke(["run", "-b", TINY, "-t", "linear-probe/cifar10", "--dry-run"], capsys)
    assert code == 2 and "Dataset 'cifar10' is not on disk" in text
    code, text = invoke(["run", "-b", "timm/*", "-t", "knn/digits", "--dry-run", "--json"], capsys)
    assert code == 0 and json.loads(text)["runs"] > 50  # listing a big grid needs no --yes


def test_a_limited_dry_run_plans_the_limited_runs_and_says_so(in_tmp: Path, capsys) -> None:
    code, text = invoke(
        ["run", "-b", f"{TINY}@random", "-t", "knn/shapes-mini", "--limit", "20", "--dry-run"], capsys
    )
    assert code == 0, text
    limited = make_spec(TINY, "knn/shapes-mini", "random", 0, task_args={"limit": "20"})
    assert limited.id in text and "knn/shapes-mini (limit 20)" in text
    assert make_spec(TINY, "knn/shapes-mini", "random", 0).id not in text
