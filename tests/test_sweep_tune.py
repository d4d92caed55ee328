"""Ray Tune inside one protocol: a grid over a declared space, ASHA early stopping, and the search
recorded in the run's result."""

from __future__ import annotations

import pytest

from bob.errors import UsageError
from bob.results import read_result
from tests.sweep_fixtures import blobs, fake_suite, fake_sweep, logistic_trial, run_fake


@pytest.fixture(scope="module", autouse=True)
def _fake_suite():
    with fake_suite():
        yield


ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # Ray startup and ~1 s per Tune trial on a small machine


def test_grid_search_scores_every_trial_and_picks_the_best(ray_session):
    from bob.tasks.common.tune import search_in_protocol

    x, y = blobs(0)
    found = search_in_protocol(logistic_trial, {"lr": [1e-5, 1e-2, 0.5]}, "val_acc", data={"x": x, "y": y})
    assert [t["config"]["lr"] for t in sorted(found.trials, key=lambda t: t["config"]["lr"])] == [
        1e-5,
        1e-2,
        0.5,
    ]
    for trial in found.trials:  # each trial's score is its best epoch, recomputed here without Ray
        assert trial["iterations"] == 8
        assert trial["score"] == pytest.approx(max(_history(trial["config"], x, y)))
    assert found.best_config == {"lr": 0.5} and found.best_score > 0.6


def _history(config, x, y):
    scores = []
    logistic_trial(config, lambda m: scores.append(m["val_acc"]), x, y)
    return scores


def test_asha_stops_weak_trials_early(ray_session):
    from bob.tasks.common.tune import search_in_protocol

    x, y = blobs(1)
    # Good learning rates first, so the weak ones meet full rungs and fall below them (a sampled
    # space would make which trial gets stopped depend on the draw and on timing).
    found = search_in_protocol(
        logistic_trial,
        {"lr": [0.5, 0.2, 1e-6, 2e-6, 5e-6, 1e-5]},
        "val_acc",
        scheduler="asha",
        max_t=8,
        data={"x": x, "y": y},
    )
    assert len(found.trials) == 6 and found.scheduler == "asha"
    weak = [t for t in found.trials if t["config"]["lr"] <= 1e-5]
    assert all(t["iterations"] < 8 for t in weak), found.trials  # stopped at a rung
    assert found.best_config["lr"] == 0.5 and found.best_score == max(t["score"] for t in found.trials)


def test_sampled_spaces_draw_num_samples_configs(ray_session):
    from bob.tasks.common.tune import search_in_protocol

    x, y = blobs(2)
    found = search_in_protocol(
        logistic_trial, {"lr": {"loguniform": [1e-3, 1.0]}}, "val_acc", num_samples=3, data={"x": x, "y": y}
    )
    assert len(found.trials) == 3 and all(1e-3 <= t["config"]["lr"] <= 1.0 for t in found.trials)


def test_bad_spaces_are_usage_errors():
    from bob.tasks.common.tune import _scheduler, _tune_space

    with pytest.raises(UsageError, match="empty list"):
        _tune_space({"lr": []})
    with pytest.raises(UsageError, match="loguniform"):
        _tune_space({"lr": {"logarithmic": [1, 2]}})
    with pytest.raises(UsageError, match="Unknown search scheduler"):
        _scheduler("hyperband", 10, 1)


def test_the_search_lands_in_the_run_result(ray_session, tmp_path):
    summary = run_fake(fake_sweep(1, behaviour="search"), tmp_path / "raw")
    assert summary.counts["ok"] == 1, summary.reports
    (result,) = map(read_result, (tmp_path / "raw").rglob("*.json"))
    search = result.protocol["search"]
    assert search["best_config"] == {"lr": result.protocol["lr"]} and len(search["trials"]) == 3
    assert all(len(t["scores"]) == 8 for t in search["trials"])
