"""A first board: raw scores on every output, positions only for z-scored rows, a line in place of
every empty plot, the accuracy-vs-MACs plot from raw scores, weights files as pretrained rows named
by their sha256, and the page with plotly.js from its CDN."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from leaderboard_results import FIRST_BACKBONE, FIRST_GMACS, FIRST_TASKS, first_board_results, write_result

from bob.errors import UsageError
from bob.leaderboard import BoardOptions, build_leaderboard, load_results
from bob.leaderboard import format as fmt
from bob.leaderboard.figures import PARETO_PLOT_ID, PLOT_IDS
from bob.leaderboard.render_md import esc as md_escape
from bob.spec import RunSpec

OPTIONS = BoardOptions(resamples=100)
PRETRAINED, RANDOM = f"{FIRST_BACKBONE} [pretrained]", f"{FIRST_BACKBONE} [random]"


@pytest.fixture
def first(tmp_path):
    first_board_results(tmp_path / "raw")
    return build_leaderboard(tmp_path / "raw", tmp_path / "out", OPTIONS), tmp_path / "out"


def test_a_first_board_ranks_nothing_and_says_why(first):
    out, folder = first
    table = out.table.set_index("backbone_key")
    assert list(table["position"]) == [0, 0]
    assert table.loc[PRETRAINED, "standing"] == "unranked" and table.loc[RANDOM, "standing"] == "baseline"
    note = out.board.unranked_note(out.table)
    assert "1 row(s) unranked" in note and "the most is 1" in note
    md = (folder / "leaderboard.md").read_text()
    board_rows = [line for line in md.splitlines() if line.startswith("| ") and "mobilenet" in line]
    assert board_rows and not any(re.match(r"\| \d", line) for line in board_rows)  # no `#1`, no `#2`
    assert note in md.replace("\\", "")
    assert "unranked-note" in (folder / "leaderboard.html").read_text()


def test_raw_scores_are_on_every_output(first):
    out, folder = first
    runs = out.board.runs
    md, page = (folder / "leaderboard.md").read_text(), (folder / "leaderboard.html").read_text()
    wide = pd.read_csv(folder / "leaderboard.csv").set_index("backbone_key")
    for task in FIRST_TASKS:
        for key in (PRETRAINED, RANDOM):
            value = runs.loc[(runs["backbone_key"] == key) & (runs["task"] == task), "value"].mean()
            assert wide.loc[key, f"value:{task}"] == pytest.approx(value, abs=1e-6)
            assert wide.loc[key, f"value:{task}_ci_low"] <= value <= wide.loc[key, f"value:{task}_ci_high"]
            shown = fmt.num(value, 4)
            assert shown in md and shown in page
        header = fmt.setting_header(task, "top1", True)
        assert header in page and md_escape(header) in md


def test_empty_plots_are_one_line_each_and_pareto_uses_raw_scores(first):
    out, folder = first
    page = (folder / "leaderboard.html").read_text()
    for plot_id in PLOT_IDS:
        assert f'id="{plot_id}"' not in page
        assert f'data-plot="{plot_id}"' in page
    assert "no setting is z-scored yet" in page
    # No overall score: the Pareto view plots the raw score of a setting, with the MACs measured on
    # random weights joined to both rows of the backbone.
    assert out.board.pareto_y.startswith("value:")
    frame = out.board.pareto(out.table).set_index("backbone_key")
    assert set(frame.index) == {PRETRAINED, RANDOM}
    assert frame.loc[PRETRAINED, "gmacs"] == pytest.approx(FIRST_GMACS) and frame.loc[PRETRAINED, "pareto"]
    assert f'id="{PARETO_PLOT_ID}"' in page
    assert (folder / "leaderboard_pareto.csv").exists()


def test_no_efficiency_results_leave_a_line_not_a_plot(tmp_path):
    first_board_results(tmp_path / "raw", efficiency=False)
    build_leaderboard(tmp_path / "raw", tmp_path / "out", BoardOptions(intervals=False))
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert f'data-plot="{PARETO_PLOT_ID}"' in page and "no efficiency results" in page
    assert "Plotly.newPlot" not in page and len(page) < 100_000  # nothing drawn: no plotly.js either


def _file_runs(root, sha: str, paths: list[str]) -> list[str]:
    """The same checkpoint, found at each of `paths`, run on two settings; returns the run ids."""
    ids = []
    for path in paths:
        for task, value in (("knn/x", 0.7), ("linear-probe/x", 0.8)):
            record = {"kind": "file", "source": "factory:mine.py:build", "path": path, "sha256": sha}
            write_result(
                root, "mine.py:build", task, value, weights=path, weights_record=record, method="random"
            )
            ids.append(RunSpec("mine.py:build", task, path, 0, task_version="1").id)
    return ids


def test_a_weights_file_is_a_pretrained_row_named_by_its_sha256(tmp_path):
    root, sha = tmp_path / "raw", "1a2b3c4d" + "e" * 56
    for name, value in (("cnn-a", 0.6), ("vit-b", 0.75)):
        for task in ("knn/x", "linear-probe/x"):
            write_result(root, name, task, value)
    ids = _file_runs(root, sha, ["/home/a/mine.pth", "/scratch/b/copy-of-mine.pth"])
    loaded = load_results(root)
    # Run ids keep the path (only the board's label changes); the copy's runs are the same
    # measurements (same checkpoint, task and seed), so one of each pair is read and the other is
    # reported as skipped, never averaged in as another seed.
    read = set(loaded.runs["id"]) & set(ids)
    skipped = {Path(s.path).stem for s in loaded.skipped}
    assert len(read) == 2 and read | skipped == set(ids) and not read & skipped
    assert all(
        "the same checkpoint (sha256:1a2b3c4d), task, args and seed as" in s.reason for s in loaded.skipped
    )
    out = build_leaderboard(root, tmp_path / "out", BoardOptions(intervals=False))
    table = out.table.set_index("backbone_key")
    key = "mine.py:build [sha256:1a2b3c4d]"
    assert key in table.index and len(table) == 3  # two paths, one checkpoint: one row
    row = table.loc[key]
    # A weights file is trained weights even when the factory calls its method "random": a reference
    # backbone of the z-scores, ranked on both settings.
    assert not row["is_random"] and row["standing"] == "ranked" and row["position"] > 0
    assert row["covered"] == row["n_settings"] == 2
    assert set(out.board.settings["n_reference"]) == {3}
    # With z-scores, each raw score is followed by its z-score.
    z = fmt.num(row["z:knn/x"], signed=True)
    assert fmt.raw_cell(row, "knn/x") == f"{fmt.num(row['value:knn/x'], 4)} · z {z}"
    assert fmt.raw_cell(row, "knn/x") in (tmp_path / "out" / "leaderboard.md").read_text()
    assert row["seeds:knn/x"] == 1 and row["n_runs"] == 2
    long = pd.read_csv(tmp_path / "out" / "leaderboard_long.csv")
    paths = set(long.loc[long["backbone_key"] == key, "weights_path"])
    assert len(paths) == 1 and paths <= {"/home/a/mine.pth", "/scratch/b/copy-of-mine.pth"}


def test_a_weights_file_without_a_recorded_sha256_keeps_its_path(tmp_path):
    write_result(tmp_path, "mine.py:build", "knn/x", 0.7, weights="/home/a/mine.pth")
    runs = load_results(tmp_path).runs
    assert list(runs["backbone_key"]) == ["mine.py:build [/home/a/mine.pth]"]
    assert not runs["is_random"].any()


def test_the_page_can_load_plotly_from_its_cdn(tmp_path):
    first_board_results(tmp_path / "raw")
    options = BoardOptions(intervals=False)
    build_leaderboard(tmp_path / "raw", tmp_path / "inline", options, formats=("html",))
    build_leaderboard(tmp_path / "raw", tmp_path / "cdn", options, formats=("html",), plotly="cdn")
    inline = (tmp_path / "inline" / "leaderboard.html").read_text()
    cdn = (tmp_path / "cdn" / "leaderboard.html").read_text()
    assert "<script src=" not in inline and re.search(r'<script [^>]*src="https://cdn\.plot\.ly/', cdn)
    assert len(cdn) * 20 < len(inline)
    with pytest.raises(UsageError, match="--plotly takes one of inline, cdn"):
        build_leaderboard(tmp_path / "raw", tmp_path / "bad", options, plotly="web")
    assert not (tmp_path / "bad").exists()


def test_the_cli_takes_plotly_cdn_and_refuses_other_values(tmp_path, capsys):
    from cli_harness import invoke

    first_board_results(tmp_path / "raw")  # with MACs, so the page draws a plot and loads plotly.js
    args = ["leaderboard", "--results-dir", str(tmp_path / "raw"), "--no-intervals"]
    code, output = invoke([*args, "--out", str(tmp_path / "bad"), "--plotly", "web"], capsys)
    assert code == 2 and "--plotly takes one of inline, cdn" in output
    assert not (tmp_path / "bad").exists()
    code, output = invoke([*args, "--out", str(tmp_path / "out"), "--plotly", "cdn"], capsys)
    assert code == 0, output
    assert "cdn.plot.ly" in (tmp_path / "out" / "leaderboard.html").read_text()
    assert "unranked" in output and (tmp_path / "out" / "leaderboard.md").exists()


def test_the_terminal_lists_raw_scores_of_a_wide_board(tmp_path):
    from rich.console import Console

    from bob.cli.board import MAX_RAW_SETTINGS, raw_table

    tasks = [f"knn/d{i}" for i in range(MAX_RAW_SETTINGS + 1)]
    for i, task in enumerate(tasks):
        for name in ("cnn-a", "vit-b"):
            write_result(tmp_path / "raw", name, task, 0.5 + i / 100 + (name == "vit-b") / 10)
    out = build_leaderboard(
        tmp_path / "raw", tmp_path / "out", BoardOptions(intervals=False), formats=("csv",)
    )
    console = Console(record=True, width=200)
    console.print(raw_table(out.board, out.table, top=20))
    text = console.export_text()
    for task in tasks:
        line = next(line for line in text.splitlines() if task in line)
        for value in out.board.cells.loc[out.board.cells["setting"] == task, "mean"]:
            assert fmt.num(value, 4) in line
