"""bob.pareto and the leaderboard's efficiency and accuracy-vs-MACs views, on hand-built results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_leaderboard_browser import page  # noqa: F401  (the headless Chromium fixture)

from bob.errors import UsageError
from bob.leaderboard import BoardOptions, build_leaderboard
from bob.pareto import hypervolume_2d, pareto_front, pareto_mask
from bob.results import ResultStore, RunResult
from bob.spec import RunSpec

# ------------------------------------------------------------------------------------------ bob.pareto


def test_front_of_a_hand_built_cloud():
    #        cost, accuracy
    points = [(1.0, 0.50), (2.0, 0.70), (2.0, 0.60), (3.0, 0.70), (4.0, 0.90), (0.5, 0.40), (5.0, 0.85)]
    assert pareto_mask(points).tolist() == [True, True, False, False, True, True, False]
    assert pareto_front(points).tolist() == [5, 0, 1, 4]  # sorted by cost
    # Both axes maximised, or both minimised: the mirrored cloud has the mirrored front.
    assert pareto_mask([(1, 1), (2, 2), (2, 1)], minimize=(False, False)).tolist() == [False, True, False]
    assert pareto_mask([(1, 1), (2, 2), (1, 2)], minimize=(True, True)).tolist() == [True, False, False]


def test_ties_and_edge_cases():
    assert pareto_mask([(1, 1), (1, 1), (2, 0)]).tolist() == [True, True, False]  # equals: both kept
    assert pareto_mask(np.zeros((0, 2))).tolist() == []
    assert pareto_mask([(3, 0.2)]).tolist() == [True]
    with pytest.raises(ValueError, match="finite"):
        pareto_mask([(1, np.nan)])
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        pareto_mask([(1, 2, 3)])


def test_front_matches_brute_force_on_random_clouds():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.integers(0, 6, size=(rng.integers(1, 25), 2)).astype(float)  # many ties on purpose
        brute = [
            not any((q[0] <= x[0]) and (q[1] >= x[1]) and ((q[0] < x[0]) or (q[1] > x[1])) for q in p)
            for x in p
        ]
        assert pareto_mask(p).tolist() == brute


def test_hypervolume_by_hand():
    # minimise cost, maximise accuracy, reference (10, 0): rectangles 2×(… ) summed by hand
    points = [(2.0, 0.5), (4.0, 0.8), (6.0, 0.6)]  # the last one is dominated
    # x in [2, 4): best acc 0.5 → 2 × 0.5; x in [4, 10): 0.8 → 6 × 0.8
    assert hypervolume_2d(points, (10.0, 0.0)) == pytest.approx(2 * 0.5 + 6 * 0.8)
    assert hypervolume_2d([(1, 1)], (3, 4), minimize=(True, True)) == pytest.approx(6.0)
    assert hypervolume_2d([(11, 0.9)], (10, 0.0)) == 0.0  # worse than the reference on cost
    assert hypervolume_2d(np.zeros((0, 2)), (1, 1)) == 0.0


def test_hypervolume_matches_a_grid_count():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, size=(12, 2))
    ref = (1.0, 0.0)
    xs, ys = np.meshgrid(np.linspace(0, 1, 401)[:-1] + 1 / 800, np.linspace(0, 1, 401)[:-1] + 1 / 800)
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
    covered = ((p[None, :, 0] <= grid[:, None, 0]) & (p[None, :, 1] >= grid[:, None, 1])).any(axis=1)
    assert hypervolume_2d(p, ref) == pytest.approx(covered.mean(), abs=5e-3)


# ---------------------------------------------------------------------------------------- leaderboard

FAMILY = {"cnn-s": "cnn", "cnn-l": "cnn", "vit-s": "vit", "vit-l": "vit", "mixed": "hybrid"}
#            accuracy (top1), GMACs
BOARD = {
    "cnn-s": (0.60, 0.3),
    "cnn-l": (0.70, 4.1),
    "vit-s": (0.72, 1.3),
    "vit-l": (0.80, 17.6),
    "mixed": (0.65, 2.0),
}


def _write(
    root: Path, backbone: str, task: str, weights: str, metrics: dict, main: str, hib: bool, args=None
) -> None:
    spec = RunSpec(backbone, task, weights, 0, task_args=dict(args or {}), task_version="1")
    suite, _, dataset = task.partition("/")
    meta = {
        "name": backbone,
        "family": FAMILY[backbone],
        "method": "random" if weights == "random" else "supervised",
    }
    result = RunResult(
        id=spec.id,
        status="ok",
        spec=spec.to_dict(),
        backbone={**meta, "pretrain_data": "IN-1k", "params": 1e6},
        task={
            "name": task,
            "suite": suite,
            "dataset": dataset,
            "version": "1",
            "main_metric": main,
            "higher_is_better": hib,
        },
        metrics=metrics,
        timings={"total_s": 1.0},
    )
    ResultStore(root).write(result, spec)


def _results(root: Path) -> Path:
    for name, (acc, gmacs) in BOARD.items():
        _write(root, name, "linear-probe/x", "pretrained", {"top1": acc}, "top1", True)
        _write(root, name, "knn/x", "pretrained", {"top1": acc - 0.05}, "top1", True)
        cost = {
            "latency_ms": 10 * gmacs,
            "gmacs": gmacs,
            "throughput_img_s": 100 / gmacs,
            "peak_mem_mb": 50.0,
        }
        _write(root, name, "efficiency/224", "random", cost, "latency_ms", False)  # costs: random weights
    _write(root, "cnn-s", "linear-probe/x", "random", {"top1": 0.1}, "top1", True)
    return root


def test_efficiency_view_shows_every_cost_metric(tmp_path):
    out = build_leaderboard(_results(tmp_path / "raw"), tmp_path / "out", formats=("csv", "md"))
    eff = out.board.efficiency.set_index("backbone_key")
    assert list(eff.columns[:4]) == [
        "efficiency/224 (latency_ms)",
        "efficiency/224 (gmacs)",
        "efficiency/224 (throughput_img_s)",
        "efficiency/224 (peak_mem_mb)",
    ]
    assert eff.loc["vit-l [random]", "efficiency/224 (gmacs)"] == pytest.approx(17.6)
    assert "efficiency" not in out.board.suites
    csv = pd.read_csv(tmp_path / "out" / "leaderboard_efficiency.csv")
    assert "efficiency/224 (throughput_img_s)" in csv.columns
    assert r"efficiency/224 \(peak\_mem\_mb\)" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_pareto_csv_flags_the_front_and_joins_costs_across_weights(tmp_path):
    out = build_leaderboard(
        _results(tmp_path / "raw"), tmp_path / "out", BoardOptions(pareto_y="value:linear-probe/x")
    )
    pareto = pd.read_csv(tmp_path / "out" / "leaderboard_pareto.csv").set_index("backbone_key")
    # Accuracy from pretrained runs, GMACs from random-weight efficiency runs of the same backbone.
    expected = {"cnn-s", "vit-s", "vit-l"}  # cnn-l (4.1, .70) and mixed (2.0, .65) are dominated by vit-s
    front = {k.split(" ")[0] for k in pareto.index[pareto["pareto"]]}
    assert front == expected
    assert pareto.loc["cnn-s [pretrained]", "gmacs"] == pytest.approx(0.3)
    assert not pareto.loc["cnn-s [random]", "pareto"]  # random baselines are drawn, never on the front
    assert set(pareto["cost_task"]) == {"efficiency/224"} and set(pareto["y_column"]) == {
        "value:linear-probe/x"
    }
    brute = pareto_mask(pareto.loc[[f"{b} [pretrained]" for b in BOARD], ["gmacs", "y"]].to_numpy())
    assert brute.sum() == len(expected)
    html = (tmp_path / "out" / "leaderboard.html").read_text()
    assert 'id="plot-pareto"' in html and "Pareto front" in html
    assert "Accuracy vs MACs: Pareto front" in (tmp_path / "out" / "leaderboard.md").read_text()
    assert out.board.pareto(out.table)["pareto"].sum() == len(expected)


def test_pareto_y_choices_and_errors(tmp_path):
    root = _results(tmp_path / "raw")
    out = build_leaderboard(root, tmp_path / "o1", BoardOptions(pareto_y="suite:knn"), formats=("csv",))
    frame = out.board.pareto(out.table)
    assert set(frame["y_column"]) == {"suite:knn"} and frame["pareto"].any()
    with pytest.raises(UsageError, match=r"not a board column.*overall"):
        build_leaderboard(root, tmp_path / "o2", BoardOptions(pareto_y="suite:nope"), formats=("csv",))
    with pytest.raises(UsageError, match="efficiency/64"):
        build_leaderboard(root, tmp_path / "o3", BoardOptions(pareto_cost="efficiency/64"), formats=("csv",))


def test_costs_come_from_one_setting_never_a_mix(tmp_path):
    root = _results(tmp_path / "raw")
    for name, (_, gmacs) in BOARD.items():  # the same task at another resolution: other MACs
        cost = {"latency_ms": 1.0, "gmacs": gmacs / 3}
        _write(root, name, "efficiency/224", "random", cost, "latency_ms", False, {"image_size": 128})
    options = BoardOptions(pareto_cost="efficiency/224 [image_size=128]")
    out = build_leaderboard(root, tmp_path / "out", options, formats=("csv",))
    frame = out.board.pareto(out.table).set_index("backbone_key")
    assert frame.loc["vit-l [pretrained]", "gmacs"] == pytest.approx(17.6 / 3)
    default = build_leaderboard(root, tmp_path / "o2", formats=("csv",)).board
    chosen = default.pareto(default.table)
    # Equally covered settings: the first label in sorted order ("…=128]" < "…=null]"), never a mix.
    assert set(chosen["cost_task"]) == {"efficiency/224 [image_size=128]"}
    assert chosen.set_index("backbone_key").loc["vit-l [pretrained]", "gmacs"] == pytest.approx(17.6 / 3)


def test_lower_is_better_y_is_minimised(tmp_path):
    root = tmp_path / "raw"
    for name, (acc, gmacs) in BOARD.items():
        _write(root, name, "ood/y", "pretrained", {"ece": 1 - acc}, "ece", False)
        _write(
            root, name, "efficiency/64", "random", {"latency_ms": 1.0, "gmacs": gmacs}, "latency_ms", False
        )
    out = build_leaderboard(root, tmp_path / "out", BoardOptions(pareto_y="value:ood/y"), formats=("csv",))
    frame = out.board.pareto(out.table).set_index("backbone_key")
    assert {k.split(" ")[0] for k in frame.index[frame["pareto"]]} == {"cnn-s", "vit-s", "vit-l"}


def test_no_efficiency_results_no_pareto_outputs(tmp_path):
    root = tmp_path / "raw"
    for name, (acc, _) in BOARD.items():
        _write(root, name, "linear-probe/x", "pretrained", {"top1": acc}, "top1", True)
    build_leaderboard(root, tmp_path / "out")
    assert not (tmp_path / "out" / "leaderboard_pareto.csv").exists()
    assert 'id="plot-pareto"' not in (tmp_path / "out" / "leaderboard.html").read_text()


@pytest.mark.slow
def test_the_cli_takes_the_pareto_options(tmp_path):
    from typer.testing import CliRunner

    from bob.cli import app

    root = _results(tmp_path / "raw")
    args = ["leaderboard", "--results-dir", str(root), "--out", str(tmp_path / "out")]
    ok = CliRunner().invoke(
        app, [*args, "--pareto-y", "suite:linear-probe", "--pareto-cost", "efficiency/224"]
    )
    assert ok.exit_code == 0, ok.output
    assert "efficiency (not z-scored)" in ok.output
    rows = pd.read_csv(tmp_path / "out" / "leaderboard_pareto.csv")
    assert set(rows["y_column"]) == {"suite:linear-probe"} and rows["pareto"].any()
    bad = CliRunner().invoke(app, [*args, "--pareto-y", "mean_rank"])
    assert bad.exit_code != 0


@pytest.mark.slow
def test_pareto_plot_renders_in_headless_chromium(tmp_path, page):  # noqa: F811  (the fixture)
    build_leaderboard(_results(tmp_path / "raw"), tmp_path / "out")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((tmp_path / "out" / "leaderboard.html").as_uri())
    page.wait_for_selector("#plot-pareto .main-svg", timeout=20_000)
    # 6 backbones with a cost and an accuracy (5 pretrained + 1 random baseline) + 3 front markers
    assert page.eval_on_selector_all("#plot-pareto .scatterlayer .point", "e => e.length") == 6 + 3
    legend = page.eval_on_selector_all("#plot-pareto .legendtext", "ts => ts.map(t => t.textContent)")
    assert "Pareto front" in legend
    assert page.eval_on_selector("#plot-pareto .xtitle", "t => t.textContent").startswith("GMACs per image")
    assert not errors
