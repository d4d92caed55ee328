"""The board's confidence intervals (bob/leaderboard/intervals.py, replicates.py): every interval is
the percentile interval of the board's own numbers recomputed on paired resamples, checked here
against independent recomputations with the board's point-estimate code; missing per-sample files
are reported, never papered over; the CSVs carry the intervals and neutralise spreadsheet formulas."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
from sample_results import hits_samples, write_sampled_result

from bob.errors import UsageError
from bob.leaderboard import BoardOptions, build_leaderboard
from bob.leaderboard.aggregate import _backbone_table, _zscore
from bob.leaderboard.render_csv import neutralise
from bob.leaderboard.replicates import RunSamples, _key, run_replicates
from bob.samples import read_samples, samples_path
from bob.samples.draws import Draws, seed_draws

RESAMPLES = 200
ACCURACY = {"a": 0.82, "b": 0.80, "c": 0.62, "d": 0.45}
TASKS = ("linear-probe/x", "knn/x", "knn/y")


def _write_board(root, n: int = 300, seeds: int = 2, rng_seed: int = 0) -> None:
    """Four pretrained backbones of known skill on three settings (two seeds each), one baseline."""
    rng = np.random.default_rng(rng_seed)
    for name, acc in ACCURACY.items():
        for task in TASKS:
            for seed in range(seeds):
                write_sampled_result(root, name, task, hits_samples(rng.random(n) < acc), seed=seed)
    write_sampled_result(root, "a", "knn/x", hits_samples(rng.random(n) < 0.3), weights="random")


def _build(root, out, **options):
    return build_leaderboard(root, out, BoardOptions(resamples=RESAMPLES, **options), formats=("csv",))


@pytest.fixture
def board_dir(tmp_path):
    _write_board(tmp_path / "raw")
    return tmp_path / "raw"


def test_run_replicates_are_the_metric_on_the_shared_draws(board_dir, tmp_path):
    out = _build(board_dir, tmp_path / "out")
    runs = out.board.runs.set_index("id")
    first = runs.index[0]
    path = samples_path(board_dir / runs.at[first, "path"])
    samples = read_samples(path)
    weights = np.vstack(list(Draws(samples.n_units, samples.key, None, RESAMPLES, 0)))
    hits = (samples.arrays["pred"] == samples.arrays["label"]).astype(float)
    expected = np.quantile(weights @ hits / samples.n_units, [0.025, 0.975])
    assert runs.loc[first, ["value_ci_low", "value_ci_high"]].tolist() == pytest.approx(expected)
    assert (runs["samples"] == "ok").all()


def test_identical_predictions_differ_by_exactly_zero_in_every_resample():
    """Paired: two runs on one test set see the same draws, so equal hits give equal replicates."""
    hits = np.random.default_rng(1).random(120) < 0.7
    samples = RunSamples(sets={"r1": hits_samples(hits), "r2": hits_samples(hits)})
    reps = run_replicates(samples, RESAMPLES, seed=0)
    assert np.array_equal(reps["r1"], reps["r2"]) and reps["r1"].std() > 0


def _per_resample_board(out) -> pd.DataFrame:
    """The overall score of every backbone in every resample, recomputed with the board's own
    point-estimate code (aggregate._zscore, _backbone_table) on the resampled cell scores."""
    board, iv = out.board, out.board.intervals
    reference = ~board.cells["backbone_key"].str.endswith("[random]")
    rows = []
    for b in range(iv.resamples):
        cells = board.cells[
            ["backbone_key", "setting", "suite", "task", "main_metric", "higher_is_better"]
        ].copy()
        cells["score"] = [
            iv.cells[(k, s)][b] for k, s in zip(cells["backbone_key"], cells["setting"], strict=True)
        ]
        cells, settings = _zscore(cells, reference, board.options.min_backbones)
        for kind in ("mean", "std", "n_seeds"):
            cells[kind] = 0.0
        table = _backbone_table(
            board.runs[board.runs["suite"] != "efficiency"], cells, settings, board.options.weighting
        )
        rows.append(table.set_index("backbone_key")["overall"])
    return pd.DataFrame(rows)


@pytest.mark.parametrize("weighting", ["suite", "setting"])
def test_overall_intervals_and_rank_ranges_recompute_the_board_per_resample(board_dir, tmp_path, weighting):
    out = _build(board_dir, tmp_path / "out", weighting=weighting)
    per_resample = _per_resample_board(out)
    table = out.board.table.set_index("backbone_key")
    for key in per_resample.columns:
        expected = np.quantile(per_resample[key], [0.025, 0.975])
        assert table.loc[key, ["overall_ci_low", "overall_ci_high"]].tolist() == pytest.approx(expected), key
    ranked = [k for k in per_resample.columns if table.loc[k, "standing"] == "ranked"]
    ranks = per_resample[ranked].rank(axis=1, ascending=False, method="min")
    for key in ranked:
        low, high = np.floor(np.quantile(ranks[key], 0.025)), np.ceil(np.quantile(ranks[key], 0.975))
        assert (table.loc[key, "rank_low"], table.loc[key, "rank_high"]) == (low, high)
    # a and b are 2 points apart on 300 images: their ranks overlap; d is last in every resample.
    assert table.loc["a [pretrained]", "rank_high"] >= 2 and table.loc["b [pretrained]", "rank_low"] <= 1
    assert table.loc["d [pretrained]", ["rank_low", "rank_high"]].tolist() == [4, 4]
    told, pairs = out.board.intervals.distinguishable
    assert pairs == 3 and 1 <= told <= 2


def test_a_cell_resamples_its_seeds_and_best_of_takes_the_best_per_resample(tmp_path):
    rng = np.random.default_rng(3)
    for lr in (0.1, 0.01):
        for seed in range(3):
            for name in ("a", "b", "c"):
                hits = rng.random(100) < (0.7 if lr == 0.1 else 0.6)
                write_sampled_result(
                    tmp_path / "raw", name, "det/x", hits_samples(hits), seed=seed, task_args={"lr": lr}
                )
    out = _build(tmp_path / "raw", tmp_path / "out", best_of=("lr",))
    runs, iv = out.board.runs, out.board.intervals
    mine = runs[runs["backbone_key"] == "a [pretrained]"]
    best = None
    for full, group in mine.sort_values("seed").groupby("setting_full", sort=True):
        samples = RunSamples()
        for run_id, rel in zip(group["id"], group["path"], strict=True):
            samples.sets[run_id] = read_samples(samples_path(tmp_path / "raw" / rel))
        reps = run_replicates(samples, RESAMPLES, 0)
        stacked = np.stack([reps[i] for i in group["id"]])
        picks = seed_draws(3, RESAMPLES, 0, _key("a [pretrained]", full))
        mean = stacked[picks, np.arange(RESAMPLES)[:, None]].mean(axis=1)
        best = mean if best is None else np.fmax(best, mean)
    assert np.allclose(iv.cells[("a [pretrained]", "det/x")], best)


def test_runs_without_files_are_reported_and_their_gaps_propagate(board_dir, tmp_path):
    write_sampled_result(board_dir, "old", "knn/x", None, value=0.5)  # a result from before sample files
    off = {"stored": False, "reason": "turned off (--no-samples)"}
    write_sampled_result(board_dir, "old", "knn/y", None, value=0.5, record=off)
    path = write_sampled_result(board_dir, "old", "linear-probe/x", hits_samples(np.ones(300, bool)))
    samples_path(path).write_bytes(hits_samples(np.zeros(300, bool)).to_bytes())  # changed after the run
    out = _build(board_dir, tmp_path / "out")
    runs = out.board.runs.set_index("backbone_key").loc["old [pretrained]"].set_index("setting")["samples"]
    assert "before bob stored them" in runs["knn/x"]
    assert "--no-samples" in runs["knn/y"]
    assert "does not match the sha256" in runs["linear-probe/x"]
    table = out.board.table.set_index("backbone_key")
    assert np.isnan(
        table.loc["a [pretrained]", "overall_ci_low"]
    )  # every setting has a reference without files
    assert table["rank_low"].isna().all()
    assert any("no rank ranges" in n for n in out.board.intervals.notes)
    assert len(out.board.intervals.runs_without) == 3


def test_a_file_that_disagrees_with_its_result_gives_no_interval(tmp_path):
    for name in ("a", "b", "c"):
        write_sampled_result(
            tmp_path / "raw",
            name,
            "knn/x",
            hits_samples(np.arange(50) % 2 == 0),
            value=0.9 if name == "a" else None,
        )
    out = _build(tmp_path / "raw", tmp_path / "out")
    status = out.board.runs.set_index("backbone_key")["samples"]
    assert "the result 0.9" in status["a [pretrained]"] and status["b [pretrained]"] == "ok"


def test_intervals_are_seeded_and_can_be_turned_off(board_dir, tmp_path):
    one = _build(board_dir, tmp_path / "1").board.table["overall_ci_low"]
    two = _build(board_dir, tmp_path / "2").board.table["overall_ci_low"]
    other = _build(board_dir, tmp_path / "3", bootstrap_seed=1).board.table["overall_ci_low"]
    assert one.equals(two) and not one.equals(other)
    off = _build(board_dir, tmp_path / "4", intervals=False)
    assert off.board.intervals is None and "overall_ci_low" not in off.board.table
    with pytest.raises(UsageError, match="resamples"):
        BoardOptions(resamples=10)
    with pytest.raises(UsageError, match="confidence"):
        BoardOptions(confidence=1.0)


def test_a_top1_interval_is_close_to_the_normal_approximation(tmp_path):
    n, p = 2000, 0.7
    hits = np.arange(n) < int(p * n)
    samples = RunSamples(sets={"r": hits_samples(hits)})
    low, high = np.quantile(run_replicates(samples, 1000, 0)["r"], [0.025, 0.975])
    half = 1.96 * np.sqrt(p * (1 - p) / n)
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_replicates_are_cached_until_a_file_changes(board_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BOB_CACHE_DIR", str(tmp_path / "cache"))
    first = _build(board_dir, tmp_path / "1").board.table["overall_ci_low"]
    assert list((tmp_path / "cache" / "bootstrap").rglob("index.json"))
    import bob.leaderboard.replicates as replicates

    real = replicates._resample_group

    def fail(*args, **kwargs):
        pytest.fail("recomputed although every file is unchanged")

    monkeypatch.setattr(replicates, "_resample_group", fail)
    assert _build(board_dir, tmp_path / "2").board.table["overall_ci_low"].equals(first)
    monkeypatch.setattr(replicates, "_resample_group", real)
    path = next(board_dir.rglob("*.samples.npz"))
    path.write_bytes(path.read_bytes() + b"x")  # changed after the run: read again, and refused
    rebuilt = _build(board_dir, tmp_path / "3")
    assert any("does not match the sha256" in s for s in rebuilt.board.runs["samples"])


def test_csvs_carry_the_intervals(board_dir, tmp_path):
    _build(board_dir, tmp_path / "out")
    with open(tmp_path / "out" / "leaderboard.csv") as fh:
        header = next(csv.reader(fh))
    for column in (
        "rank_low",
        "rank_high",
        "overall_ci_low",
        "overall_ci_high",
        "suite:knn_ci_low",
        "z:knn/x_ci_high",
        "value:knn/y_ci_low",
    ):
        assert column in header, column
    assert header.index("overall_ci_low") == header.index("overall") + 1
    long = pd.read_csv(tmp_path / "out" / "leaderboard_long.csv")
    assert {"value_ci_low", "value_ci_high", "samples"} <= set(long.columns)
    assert (long["value_ci_low"] <= long["value"]).all() and (long["value"] <= long["value_ci_high"]).all()


def test_csv_text_cells_that_look_like_formulas_are_neutralised_and_numbers_are_not(tmp_path):
    frame = pd.DataFrame(
        {
            "name": ["=cmd|' /C calc'!A0", "+1", "-2+3", "@SUM(A1)", "\tx", "\ry", "safe", "a=b"],
            "z": [-1.5, 2, -3, 0, 1, 1, 1, 1],
        }
    )
    out = neutralise(frame.rename(columns={"name": "=HYPERLINK(x)"}))
    assert list(out.columns) == ["'=HYPERLINK(x)", "z"]
    assert out.iloc[:, 0].tolist() == [
        "'=cmd|' /C calc'!A0",
        "'+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\tx",
        "'\ry",
        "safe",
        "a=b",
    ]
    assert out["z"].tolist() == [-1.5, 2, -3, 0, 1, 1, 1, 1]
    rng = np.random.default_rng(0)
    for name in ("=cmd", "b", "c"):
        write_sampled_result(tmp_path / "raw", name, "knn/x", hits_samples(rng.random(60) < 0.5))
    _build(tmp_path / "raw", tmp_path / "out")
    with open(tmp_path / "out" / "leaderboard.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert "'=cmd [pretrained]" in {r["backbone_key"] for r in rows}
    assert any(r["z:knn/x"].startswith("-") for r in rows)  # a negative z stays a number


def test_markdown_and_html_show_intervals_rank_ranges_and_what_has_none(board_dir, tmp_path):
    write_sampled_result(board_dir, "old", "knn/x", None, value=0.5, weights="random")  # not a reference
    out = build_leaderboard(board_dir, tmp_path / "out", BoardOptions(resamples=RESAMPLES))
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "## How sure is the ranking?" in md and "[n/a]" in md and "before bob stored them" in md
    assert "| 1 (1–2) |" in md or "| 1 (1) |" in md
    html = (tmp_path / "out" / "leaderboard.html").read_text()
    assert 'id="compare"' in html and 'id="replicates"' in html and "plot-overall-intervals" in html
    payload = json.loads(html.split('id="replicates">', 1)[1].split("</script>", 1)[0])
    assert len(payload["rows"]) == len(out.table) and payload["resamples"] == RESAMPLES


def test_the_loaders_copy_of_the_record_is_used_when_it_has_one(board_dir, tmp_path):
    """A loader that keeps `protocol.samples` as `samples_record` spares re-reading every result file."""
    from bob.leaderboard.aggregate import build_board
    from bob.leaderboard.intervals import compute_intervals
    from bob.leaderboard.load import load_results

    loaded = load_results(board_dir)
    loaded.runs["samples_record"] = [{"stored": False, "reason": "x"}] * len(loaded.runs)
    board = build_board(loaded, BoardOptions(resamples=RESAMPLES))
    compute_intervals(board, board_dir, None)
    assert set(board.runs["samples"]) == {"per-sample file turned off (--no-samples)"}
