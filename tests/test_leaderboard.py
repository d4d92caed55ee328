"""`bob leaderboard`: golden z-scores and ranks, settings, views, bad files, escaping and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from leaderboard_results import XSS_NAMES, write_result, xss_results
from scipy import stats

from bob.errors import UsageError
from bob.leaderboard import BoardOptions, RowFilter, build_leaderboard, load_results
from bob.leaderboard.aggregate import build_board
from bob.leaderboard.analyses import group_summary, params_correlation, spearman, task_correlation

PRETRAINED = ["cnn-a", "vit-b", "vit-c", "swin-d"]
# setting → (suite, task, task_args, higher_is_better, {backbone: [values per seed]}); "rand" = cnn-a random init
GOLDEN = {
    "linear-probe/p1": ("linear-probe", "linear-probe/p1", {}, True,
                        {"cnn-a": [0.8, 0.6], "vit-b": [0.5], "vit-c": [0.9, 0.85], "swin-d": [0.3], "rand": [0.1]}),
    "linear-probe/p2": ("linear-probe", "linear-probe/p2", {}, True,
                        {"cnn-a": [0.2], "vit-b": [0.4], "vit-c": [0.4], "rand": [0.05]}),
    "ood/q": ("ood", "ood/q", {}, False, {"cnn-a": [0.10], "vit-b": [0.30], "vit-c": [0.20], "swin-d": [0.05], "rand": [0.5]}),
    "det/r [lr=0.0001]": ("det", "det/r", {"lr": 1e-4}, True,
                          {"cnn-a": [0.30], "vit-b": [0.35], "vit-c": [0.25], "swin-d": [0.40], "rand": [0.01]}),
    "det/r [lr=0.0003]": ("det", "det/r", {"lr": 3e-4}, True,
                          {"cnn-a": [0.33], "vit-b": [0.31], "vit-c": [0.20], "swin-d": [0.41]}),
    "few/s": ("few", "few/s", {}, True, {"cnn-a": [0.5], "vit-b": [0.6]}),
}  # fmt: skip


def _write_golden(root: Path) -> None:
    for _setting, (_suite, task, args, hib, values) in GOLDEN.items():
        for name, seeds in values.items():
            backbone, weights = ("cnn-a", "random") if name == "rand" else (name, "pretrained")
            for seed, v in enumerate(seeds):
                metric = "top1" if hib else "ece"
                write_result(root, backbone, task, v, seed=seed, weights=weights, task_args=args,
                             main_metric=metric, higher_is_better=hib)  # fmt: skip
    # A failed run with a number in it must not move anything.
    write_result(root, "vit-b", "linear-probe/p1", 0.99, seed=7, status="failed")


def _expected(settings: dict, weighting: str = "suite") -> dict:
    """z, rank, per-suite and overall scores computed independently with numpy/scipy."""
    z, rank = {}, {}
    for setting, (_s, _t, _a, hib, values) in settings.items():
        score = {b: (1 if hib else -1) * np.mean(v) for b, v in values.items()}
        ref = [b for b in PRETRAINED if b in score]
        if len(ref) < 3:
            continue
        ref_scores = np.array([score[b] for b in ref])
        for b, zb in zip(ref, stats.zscore(ref_scores), strict=True):
            z[(b, setting)] = zb
        for b, rb in zip(ref, stats.rankdata(-ref_scores), strict=True):
            rank[(b, setting)] = rb
        if "rand" in score:
            z[("rand", setting)] = (score["rand"] - ref_scores.mean()) / ref_scores.std()
            rank[("rand", setting)] = 1 + (ref_scores > score["rand"]).sum()
    out = {}
    for b in [*PRETRAINED, "rand"]:
        mine = {s: v for (bb, s), v in z.items() if bb == b}
        suites: dict[str, list[float]] = {}
        for s, v in mine.items():
            suites.setdefault(settings[s][0], []).append(v)
        suite_mean = {k: np.mean(v) for k, v in suites.items()}
        overall = np.mean(list(suite_mean.values())) if weighting == "suite" else np.mean(list(mine.values()))
        ranks = [v for (bb, _s), v in rank.items() if bb == b]
        out[b] = {
            "suites": suite_mean,
            "overall": overall,
            "mean_rank": np.mean(ranks),
            "covered": len(mine),
            "z": mine,
        }
    return out


def _row(table, name):
    key = "cnn-a [random]" if name == "rand" else f"{name} [pretrained]"
    return table.set_index("backbone_key").loc[key]


@pytest.fixture
def golden_dir(tmp_path: Path) -> Path:
    _write_golden(tmp_path / "raw")
    return tmp_path / "raw"


@pytest.mark.parametrize("weighting", ["suite", "setting"])
def test_golden_zscores_ranks_and_suite_means(golden_dir, weighting):
    board = build_board(load_results(golden_dir), BoardOptions(weighting=weighting))
    expected = _expected(GOLDEN, weighting)
    for name, exp in expected.items():
        row = _row(board.table, name)
        assert row["overall"] == pytest.approx(exp["overall"], abs=1e-9), name
        assert row["mean_rank"] == pytest.approx(exp["mean_rank"], abs=1e-9), name
        assert row["covered"] == exp["covered"]
        for suite, value in exp["suites"].items():
            assert row[f"suite:{suite}"] == pytest.approx(value, abs=1e-9), (name, suite)
        for setting, value in exp["z"].items():
            assert row[f"z:{setting}"] == pytest.approx(value, abs=1e-9), (name, setting)
    settings = board.settings.set_index("setting")
    assert set(settings.index) == set(GOLDEN)
    assert not settings.loc["few/s", "zscored"] and "2 pretrained" in settings.loc["few/s", "note"]
    assert settings.loc["ood/q", "mean"] == pytest.approx(np.mean([0.10, 0.30, 0.20, 0.05]))
    # swin-d misses linear-probe/p2: flagged, never given a position; the random baseline has its own row.
    standing = board.table.set_index("backbone_key")["standing"]
    assert standing["swin-d [pretrained]"] == "incomplete" and standing["cnn-a [random]"] == "baseline"
    assert list(board.table["position"][board.table["standing"] == "ranked"]) == [1, 2, 3]
    ranked = board.table[board.table["standing"] == "ranked"]
    assert list(ranked["overall"]) == sorted(ranked["overall"], reverse=True)


def test_seeds_are_mean_and_std_and_failed_runs_stay_out(golden_dir):
    board = build_board(load_results(golden_dir))
    cell = board.cells.set_index(["backbone_key", "setting"]).loc[("cnn-a [pretrained]", "linear-probe/p1")]
    assert cell["mean"] == pytest.approx(0.7) and cell["std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert cell["n_seeds"] == 2
    assert len(board.failed) == 1 and board.failed["seed"].iloc[0] == 7
    assert 0.99 not in set(board.runs["value"])


def test_best_of_grid_collapses_a_task_arg(golden_dir):
    board = build_board(load_results(golden_dir), BoardOptions(best_of=("lr",)))
    cells = board.cells.set_index(["backbone_key", "setting"])
    assert "det/r" in set(board.settings["setting"])
    assert cells.loc[("cnn-a [pretrained]", "det/r"), "mean"] == pytest.approx(0.33)
    assert cells.loc[("cnn-a [pretrained]", "det/r"), "chosen"] == "det/r [lr=0.0003]"
    collapsed = {k: v for k, v in GOLDEN.items() if not k.startswith("det/")}
    best = {b: [max(GOLDEN["det/r [lr=0.0001]"][4].get(b, [-1])[0], GOLDEN["det/r [lr=0.0003]"][4].get(b, [-1])[0])]
            for b in GOLDEN["det/r [lr=0.0001]"][4]}  # fmt: skip
    collapsed["det/r"] = ("det", "det/r", {}, True, best)
    exp = _expected(collapsed)
    for name, e in exp.items():
        assert _row(board.table, name)["overall"] == pytest.approx(e["overall"], abs=1e-9)


def test_views_filter_rows_without_changing_scores(golden_dir, tmp_path):
    full = build_leaderboard(golden_dir, tmp_path / "a", formats=())
    vits = build_leaderboard(golden_dir, tmp_path / "b", filters=[RowFilter.parse("family=vit")], formats=())
    assert set(vits.table["family"]) == {"vit"} and len(vits.table) == 2
    merged = vits.table.merge(full.table, on="backbone_key", suffixes=("", "_full"))
    assert np.allclose(merged["overall"], merged["overall_full"])
    small = build_leaderboard(golden_dir, tmp_path / "c", filters=[RowFilter.parse("size=small")], formats=())
    assert set(small.table["backbone"]) == {"cnn-a", "vit-b"}
    ssl = build_leaderboard(golden_dir, tmp_path / "d", filters=[RowFilter.parse("method=ssl:*")], formats=())
    assert list(ssl.table["backbone"]) == ["vit-b"]
    with pytest.raises(UsageError, match="Unknown --filter key"):
        RowFilter.parse("colour=red")
    with pytest.raises(UsageError, match="No results for suite"):
        build_board(load_results(golden_dir), BoardOptions(suites=("nope",)))
    only_det = build_board(load_results(golden_dir), BoardOptions(suites=("det",)))
    assert only_det.suites == ["det"]


def test_analyses_match_scipy(golden_dir):
    board = build_board(load_results(golden_dir))
    corr = params_correlation(board).set_index("family")
    pre = board.table[~board.table["is_random"]]
    expected = stats.spearmanr(pre["params"], pre["overall"])
    assert corr.loc["all", "spearman_rho"] == pytest.approx(expected.statistic)
    assert corr.loc["all", "p_value"] == pytest.approx(expected.pvalue)
    rng = np.random.default_rng(0)
    for _ in range(20):  # randomised, ties included
        x, y = pd.Series(rng.integers(0, 6, 12)), pd.Series(rng.normal(size=12))
        rho, p = spearman(x, y)
        assert (rho, p) == pytest.approx(tuple(stats.spearmanr(x, y)))
    matrix = task_correlation(board)
    a = [np.mean(GOLDEN["ood/q"][4][b]) * -1 for b in PRETRAINED]
    c = [np.mean(GOLDEN["det/r [lr=0.0001]"][4][b]) for b in PRETRAINED]
    assert matrix.loc["ood/q", "det/r [lr=0.0001]"] == pytest.approx(stats.spearmanr(a, c).statistic)
    summary = group_summary(board, "method_class").set_index("method_class")
    assert summary.loc["ssl", "best"] == "vit-b [pretrained]" and "random" not in summary.index


BAD_FILES = {
    "not-json.json": ("{not json", "not valid JSON"),
    "truncated.json": ('{"schema_version": 1, "id": "x", "sta', "not valid JSON"),
    "empty.json": ("", "not valid JSON"),
    "binary.json": (b'{"id": "\x80\x81"}', "not text"),
    "array.json": ("[1, 2]", "does not hold a JSON object"),
    "future.json": ({"schema_version": 2}, "schema_version 2"),
    "no-status.json": ('{"schema_version": 1, "id": "x", "spec": {}}', "not a bob result"),
    "odd-status.json": ({"status": "weird"}, "not a bob result"),
    "no-task.json": ({"task": {}}, "no `task` block"),
    "no-metric.json": ({"metrics": {}}, "finite value"),
    "null-metric.json": ({"metrics": {"top1": None}}, "finite value"),
    "string-metric.json": ({"metrics": {"top1": "0.9"}}, "finite value"),
    "bad-direction.json": ({"task": {"main_metric": "top1", "higher_is_better": "yes"}}, "higher_is_better"),
    "bad-seed.json": ({"spec": {"seed": "0"}}, "spec.seed"),
    "bad-params.json": ({"backbone": {"params": "big"}}, "backbone.params"),
    "task-mismatch.json": (
        {"task": {"name": "knn/other", "main_metric": "top1", "higher_is_better": True}},
        "disagrees",
    ),
}


def test_malformed_corpus_is_reported_and_never_changes_numbers(golden_dir, tmp_path):
    clean = build_board(load_results(golden_dir))
    template_path = next(golden_dir.rglob("*.json"))
    template = json.loads(template_path.read_text())
    bad_dir = golden_dir / "zz-bad"
    bad_dir.mkdir()
    for name, (content, _) in BAD_FILES.items():
        path = bad_dir / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            data = json.loads(json.dumps(template))
            for key, value in content.items():
                data[key] = (
                    {**data[key], **value} if isinstance(value, dict) and value and key in data else value
                )
            data["id"] = f"bad-{name}"
            path.write_text(json.dumps(data))
    (bad_dir / "duplicate.json").write_text(template_path.read_text())
    loaded = load_results(golden_dir)
    reasons = {Path(s.path).name: s.reason for s in loaded.skipped}
    assert set(reasons) == {*BAD_FILES, "duplicate.json"}
    for name, (_, fragment) in BAD_FILES.items():
        assert fragment in reasons[name], (name, reasons[name])
    assert "duplicate of run" in reasons["duplicate.json"]
    board = build_board(loaded)
    assert board.table.drop(columns="n_runs").equals(clean.table.drop(columns="n_runs"))


def test_strings_from_results_are_escaped_in_markdown_and_html(tmp_path):
    xss_results(tmp_path / "raw")
    out = build_leaderboard(tmp_path / "raw", tmp_path / "out")
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    for payload in XSS_NAMES:
        assert payload not in md and payload not in page
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt; [pretrained]" in page
    assert "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    assert len(out.table) == 7


def test_outputs_are_written_and_self_contained(golden_dir, tmp_path):
    out = build_leaderboard(golden_dir, tmp_path / "out", title="golden")
    names = sorted(p.name for p in out.paths)
    assert names == ["leaderboard.csv", "leaderboard.html", "leaderboard.md", "leaderboard_long.csv"]
    wide = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert wide.set_index("backbone_key").loc["cnn-a [pretrained]", "std:linear-probe/p1"] == pytest.approx(
        np.std([0.8, 0.6], ddof=1), abs=1e-5
    )
    assert len(wide) == 5 and {"overall", "suite:det", "z:ood/q", "params", "family", "method"} <= set(
        wide.columns
    )
    long = pd.read_csv(tmp_path / "out" / "leaderboard_long.csv")
    assert len(long) == sum(len(s) for *_, v in GOLDEN.values() for s in v.values()) + 1
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert "<script src=" not in page and '<link rel="stylesheet"' not in page  # plotly.js is inline
    assert 'href="../raw/' in page  # every run links to its result file


def test_cli_prints_the_board_and_exits_2_on_an_empty_dir(golden_dir, tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [
        sys.executable,
        "-m",
        "bob.cli",
        "leaderboard",
        "--results-dir",
        str(golden_dir),
        "--out",
        str(tmp_path / "o"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (
        "vit-c [pretrained]" in proc.stdout
        and "convention:" in proc.stderr
        and "few/s: not z-scored" in proc.stderr
    )
    (tmp_path / "empty").mkdir()
    cmd[5] = str(tmp_path / "empty")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "error:" in proc.stderr and "holds no result files" in proc.stderr
    with pytest.raises(UsageError, match="does not exist") as err:
        build_leaderboard(tmp_path / "missing", tmp_path / "o")
    assert err.value.exit_code == 2


def test_leaderboard_never_imports_torch(golden_dir, tmp_path):
    code = (
        "import sys; from bob.leaderboard import build_leaderboard; "
        f"build_leaderboard({str(golden_dir)!r}, {str(tmp_path / 'o')!r}); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_efficiency_results_sit_beside_the_board_and_are_not_zscored(golden_dir, tmp_path):
    for i, name in enumerate(PRETRAINED):
        write_result(golden_dir, name, "efficiency/throughput", 100.0 * (i + 1), main_metric="img_per_s")
    out = build_leaderboard(golden_dir, tmp_path / "out")
    assert "efficiency" not in out.board.suites and "efficiency/throughput" not in set(
        out.board.settings["setting"]
    )
    eff = out.board.efficiency.set_index("backbone_key")
    assert eff.loc["vit-b [pretrained]", "efficiency/throughput (img_per_s)"] == pytest.approx(200.0)
    clean = build_board(load_results(golden_dir), BoardOptions(efficiency_suites=("none",)))
    assert "efficiency" in clean.suites  # only the option makes it a side view
    expected = _expected(GOLDEN)
    assert _row(out.board.table, "vit-c")["overall"] == pytest.approx(expected["vit-c"]["overall"])
    assert (tmp_path / "out" / "leaderboard_efficiency.csv").exists()
    assert "Efficiency (not part of the z-scores)" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_runs_that_disagree_on_version_or_metric_are_separate_settings(tmp_path):
    for name, value in zip(PRETRAINED, (0.1, 0.2, 0.3, 0.4), strict=True):
        write_result(tmp_path, name, "ood/q", value, main_metric="top1")
        write_result(tmp_path, name, "ood/q", value / 10, seed=1, main_metric="ece", higher_is_better=False)
    board = build_board(load_results(tmp_path))
    assert sorted(board.settings["setting"]) == ["ood/q [metric=-ece]", "ood/q [metric=top1]"]
    z = board.table.set_index("backbone_key")
    assert (
        z.loc["swin-d [pretrained]", "z:ood/q [metric=top1]"]
        > 0
        > z.loc["swin-d [pretrained]", "z:ood/q [metric=-ece]"]
    )
