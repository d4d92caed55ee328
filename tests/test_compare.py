"""`bob compare A B` (bob/compare.py, bob/cli/compare.py): paired differences with intervals, McNemar
where it applies (checked against scipy's exact binomial test), the paired bootstrap elsewhere,
Holm's correction (checked against a hand computation), name resolution and usage errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from sample_results import hits_samples, write_sampled_result
from scipy import stats
from typer.testing import CliRunner

from bob.cli.compare import compare as compare_command
from bob.compare import BOOTSTRAP_TEST, MCNEMAR_TEST, bootstrap_p, compare, holm, mcnemar_p
from bob.errors import UsageError
from bob.samples import make_samples

RESAMPLES = 300


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs():
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.7, rng.random(200) < 0.6
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    expected = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar_p(a, b) == pytest.approx(expected, rel=1e-9)
    assert mcnemar_p(a, a) == 1.0


def test_holm_adjusts_step_down_and_keeps_order():
    # p sorted: 0.01 (×4), 0.02 (×3), 0.03 (×2), 0.5 (×1); monotone; NaN untouched.
    assert holm([0.03, 0.01, float("nan"), 0.5, 0.02]) == pytest.approx(
        [0.06, 0.04, float("nan"), 0.5, 0.06], nan_ok=True
    )


def test_bootstrap_p_is_two_sided_with_the_plus_one_correction():
    assert bootstrap_p(np.full(99, 1.0)) == pytest.approx(2 / 100)
    assert bootstrap_p(np.r_[np.ones(50), -np.ones(49)]) == 1.0


def _results(root, n: int = 400, seeds: int = 1) -> None:
    rng = np.random.default_rng(1)
    truth = {"strong": 0.85, "weak": 0.60, "twin": 0.85}
    shared = rng.random((3, n))
    for name, acc in truth.items():
        for j, task in enumerate(("knn/x", "linear-probe/x", "ncm/x")):
            for seed in range(seeds):
                u = shared[j] if name == "twin" else rng.random(n)
                write_sampled_result(root, name, task, hits_samples(u < acc), seed=seed)
    write_sampled_result(root, "strong", "knn/x", hits_samples(rng.random(n) < 0.2), weights="random")
    for name, r in (("strong", 0.7), ("weak", 0.3)):  # a correlation metric: no McNemar
        pred = rng.normal(size=80)
        target = r * pred + rng.normal(size=80)
        samples = make_samples(
            "spearman", "srcc", {"pred": pred, "target": target}, units="image", truth=(target,)
        )
        write_sampled_result(root, name, "iqa/x", samples)


def test_a_clearly_better_backbone_wins_every_setting(tmp_path):
    _results(tmp_path)
    result = compare(tmp_path, "strong", "weak", resamples=RESAMPLES)
    by = {s.setting: s for s in result.settings}
    assert set(by) == {"knn/x", "linear-probe/x", "ncm/x", "iqa/x"}
    for setting in ("knn/x", "linear-probe/x", "ncm/x"):
        s = by[setting]
        assert s.test == MCNEMAR_TEST and s.verdict == "A better" and s.ci_low > 0 and s.diff > 0
    assert by["iqa/x"].test == BOOTSTRAP_TEST
    assert result.verdict.startswith("strong [pretrained] is better than weak [pretrained] on")
    assert all(s.p_holm >= s.p for s in result.settings)


def test_two_equal_backbones_cannot_be_told_apart(tmp_path):
    _results(tmp_path)
    result = compare(tmp_path, "strong", "twin", resamples=RESAMPLES, tasks=["knn/*", "ncm/*"])
    assert [s.setting for s in result.settings] == ["knn/x", "ncm/x"]
    assert all(s.verdict == "no significant difference" for s in result.settings)
    assert all(s.ci_low < 0 < s.ci_high for s in result.settings)
    assert "cannot be told apart" in result.verdict


def test_several_seeds_use_the_bootstrap_and_names_resolve(tmp_path):
    _results(tmp_path, seeds=2)
    result = compare(tmp_path, "strong", "strong [random]", resamples=RESAMPLES)
    assert result.a == "strong [pretrained]" and result.b == "strong [random]"
    (only,) = result.settings
    assert only.test == BOOTSTRAP_TEST and only.verdict == "A better"


def test_usage_errors(tmp_path):
    _results(tmp_path)
    with pytest.raises(UsageError, match="No results for backbone 'nope'"):
        compare(tmp_path, "nope", "weak")
    with pytest.raises(UsageError, match="share no setting matching --task"):
        compare(tmp_path, "strong", "weak", tasks=["detection/*"])
    with pytest.raises(UsageError, match="compare two different rows"):
        compare(tmp_path, "strong", "strong [pretrained]")
    write_sampled_result(tmp_path, "amb", "knn/x", hits_samples(np.ones(400, bool)), weights="random")
    write_sampled_result(tmp_path, "amb", "knn/x", hits_samples(np.ones(400, bool)), weights="/w.pth")
    with pytest.raises(UsageError, match="names 2 rows"):
        compare(tmp_path, "amb", "weak")


def test_settings_without_files_are_listed_not_tested(tmp_path):
    _results(tmp_path)
    write_sampled_result(tmp_path, "strong", "old/x", None, value=0.9)
    write_sampled_result(tmp_path, "weak", "old/x", None, value=0.1)
    result = compare(tmp_path, "strong", "weak", resamples=RESAMPLES)
    old = next(s for s in result.settings if s.setting == "old/x")
    assert old.verdict == "not tested" and "no per-sample file" in old.note
    assert "1 setting(s) without per-sample files were not tested" in result.verdict


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(compare_command)
    return app


def test_the_command_prints_a_table_and_a_verdict_or_json(tmp_path):
    _results(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(_app(), ["strong", "weak", "--results-dir", str(tmp_path), "--resamples", "200"])
    assert shown.exit_code == 0, shown.output
    assert "McNemar (exact)" in shown.output and "is better than" in shown.output
    as_json = runner.invoke(
        _app(),
        ["strong", "weak", "--results-dir", str(tmp_path), "--resamples", "200", "--json", "-t", "knn/*"],
    )
    data = json.loads(as_json.stdout)
    assert data["correction"] == "Holm" and [s["setting"] for s in data["settings"]] == ["knn/x"]
    bad = runner.invoke(_app(), ["nope", "weak", "--results-dir", str(tmp_path)])
    assert isinstance(bad.exception, UsageError) and bad.exception.exit_code == 2
