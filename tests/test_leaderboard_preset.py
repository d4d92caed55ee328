"""`bob leaderboard --preset bob`: BoB's aggregation recomputed independently on hand-built results —
task types of equal weight, detection's best lr, mask AP beside box AP, Sim10k → Cityscapes under
OOD, other suites left off — and the default board unchanged on the same files."""

from __future__ import annotations

import html
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from bob import api
from bob.errors import UsageError
from bob.leaderboard import BoardOptions, build_leaderboard, load_results
from bob.leaderboard.aggregate import build_board
from bob.leaderboard.presets import BOB, get_preset
from bob.leaderboard.render_md import esc
from tests.leaderboard_results import write_result

PRETRAINED = ["cnn-a", "vit-b", "vit-c", "swin-d"]
LRS = (1e-4, 3e-4)


def _write(root: Path, backbone: str, task: str, metrics: dict[str, float], main: str, *,
           task_args: dict[str, Any] | None = None, weights: str = "pretrained", seed: int = 0) -> None:  # fmt: skip
    write_result(root, backbone, task, metrics[main], seed=seed, weights=weights, task_args=task_args,
                 main_metric=main, metrics=metrics)  # fmt: skip


def _value(b: int, k: int) -> float:
    """A spread of distinct values per backbone index b and setting index k."""
    return 0.2 + ((b * 7 + k * 3) % 11) / 20


def _corpus(root: Path) -> dict[str, dict[str, float]]:
    """Write the corpus; return the expected cell per preset setting: setting → backbone → score."""
    cells: dict[str, dict[str, float]] = {}
    backbones = [*PRETRAINED, "rand"]
    for b, name in enumerate(backbones):
        backbone, weights = ("cnn-a", "random") if name == "rand" else (name, "pretrained")

        def put(setting: str, value: float, backbone=backbone, weights=weights) -> None:
            cells.setdefault(setting, {})[f"{backbone} [{weights}]"] = value

        for k, task in enumerate(["finetune/x", "linear-probe/x", "ood/imagenet-r", "retrieval/roxford5k"]):
            metric = "map" if task.startswith("retrieval") else "top1"
            _write(root, backbone, task, {metric: _value(b, k)}, metric, weights=weights)
            put(task, _value(b, k))
        for k, frac in enumerate((0.01, 0.1)):
            _write(root, backbone, "few-label/x", {"top1": _value(b, 10 + k)}, "top1",
                   task_args={"fraction": frac}, weights=weights)  # fmt: skip
            put(f"few-label/x [fraction={frac}]", _value(b, 10 + k))
        for mode in ("frozen", "finetune"):
            box = {lr: _value(b, 20 + int(lr * 1e4) + len(mode)) for lr in LRS}
            mask = {lr: _value(b, 40 + int(lr * 1e4) + len(mode)) / 2 for lr in LRS}
            for lr in LRS:
                _write(root, backbone, "detection/coco2017", {"box_ap": box[lr], "mask_ap": mask[lr]}, "box_ap",
                       task_args={"mode": mode, "lr": lr}, weights=weights)  # fmt: skip
            put(f"detection/coco2017 [metric=box_ap, mode={mode}]", max(box.values()))
            put(f"detection/coco2017 [metric=mask_ap, mode={mode}]", max(mask.values()))
        _write(root, backbone, "detection/sim10k-cityscapes", {"box_ap": _value(b, 60)}, "box_ap",
               task_args={"lr": 1e-4}, weights=weights)  # fmt: skip
        put("detection/sim10k-cityscapes", _value(b, 60))
        # Not a task BoB ran: left off the preset's board.
        _write(root, backbone, "knn/x", {"top1": _value(b, 70)}, "top1", weights=weights)
    return cells


TYPE_OF = {"finetune": "classification", "linear-probe": "classification", "few-label": "classification",
           "detection/coco2017": "detection", "detection/sim10k-cityscapes": "ood", "ood": "ood",
           "retrieval": "retrieval"}  # fmt: skip


def _type(setting: str) -> str:
    task = setting.split(" ")[0]
    return TYPE_OF.get(task) or TYPE_OF[task.split("/")[0]]


def _expected(cells: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """z per setting over the pretrained backbones (scipy), type = mean z, overall = mean of types."""
    z: dict[tuple[str, str], float] = {}
    for setting, values in cells.items():
        ref = [f"{b} [pretrained]" for b in PRETRAINED]
        mu, sd = np.mean([values[r] for r in ref]), np.std([values[r] for r in ref])
        assert np.allclose(stats.zscore([values[r] for r in ref]), [(values[r] - mu) / sd for r in ref])
        for key, v in values.items():
            z[(key, setting)] = (v - mu) / sd
    out = {}
    for key in {k for k, _ in z}:
        types: dict[str, list[float]] = {}
        for (k, setting), value in z.items():
            if k == key:
                types.setdefault(_type(setting), []).append(value)
        per_type = {t: float(np.mean(v)) for t, v in types.items()}
        out[key] = {"types": per_type, "overall": float(np.mean(list(per_type.values())))}
    return out


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, dict[str, dict[str, float]]]:
    cells = _corpus(tmp_path / "raw")
    return tmp_path / "raw", cells


def test_bob_preset_matches_an_independent_recomputation(corpus):
    root, cells = corpus
    board = build_board(load_results(root), BoardOptions(preset="bob", intervals=False))
    assert set(board.settings["setting"]) == set(cells)
    assert board.suites == ["classification", "detection", "ood", "retrieval"]
    expected = _expected(cells)
    table = board.table.set_index("backbone_key")
    for key, exp in expected.items():
        assert table.at[key, "overall"] == pytest.approx(exp["overall"], abs=1e-9), key
        for kind, value in exp["types"].items():
            assert table.at[key, f"suite:{kind}"] == pytest.approx(value, abs=1e-9), (key, kind)
    settings = board.settings.set_index("setting")
    assert settings.at["detection/sim10k-cityscapes", "suite"] == "ood"
    assert settings.at["detection/coco2017 [metric=mask_ap, mode=frozen]", "main_metric"] == "mask_ap"
    # Best of lr: the chosen full setting is named per cell, per metric.
    cell = board.cells.set_index(["backbone_key", "setting"]).loc[
        ("vit-b [pretrained]", "detection/coco2017 [metric=mask_ap, mode=frozen]")
    ]
    assert "lr=" in cell["chosen"] and cell["mean"] == pytest.approx(
        cells["detection/coco2017 [metric=mask_ap, mode=frozen]"]["vit-b [pretrained]"]
    )
    # knn is left off and said so; every file counts once in n_runs (mask rows share their file).
    assert not board.runs["task"].str.startswith("knn/").any()
    assert any("knn (5)" in note for note in board.preset_notes)
    assert table.at["vit-b [pretrained]", "n_runs"] == 4 + 2 + 2 * len(LRS) + 1


def test_default_board_is_unchanged_on_the_same_files(corpus):
    root, _ = corpus
    board = build_board(load_results(root), BoardOptions(intervals=False))
    assert board.suites == ["detection", "few-label", "finetune", "knn", "linear-probe", "ood", "retrieval"]
    labels = set(board.settings["setting"])
    assert "detection/coco2017 [lr=0.0001, mode=frozen]" in labels  # four lr × mode settings
    assert not any("mask_ap" in s for s in labels) and not board.preset_notes
    assert board.settings.set_index("setting").at["detection/sim10k-cityscapes", "suite"] == "detection"
    assert "preset" not in board.options.convention()


def test_weighting_by_setting_pools_every_setting_under_the_preset(corpus):
    root, cells = corpus
    board = build_board(load_results(root), BoardOptions(preset="bob", weighting="setting", intervals=False))
    row = board.table.set_index("backbone_key").loc["swin-d [pretrained]"]
    zs = [row[f"z:{s}"] for s in cells]
    assert row["overall"] == pytest.approx(np.mean(zs), abs=1e-12)


def test_pages_name_every_reconstructed_choice(corpus, tmp_path, monkeypatch):
    root, _ = corpus
    monkeypatch.setenv("BOB_CACHE_DIR", str(tmp_path / "cache"))
    out = build_leaderboard(root, tmp_path / "o", BoardOptions(preset="bob", resamples=50))
    md = (tmp_path / "o" / "leaderboard.md").read_text()
    page = (tmp_path / "o" / "leaderboard.html").read_text()
    for choice in BOB.choices:
        assert esc(choice) in md and html.escape(choice, quote=True) in page
    assert "task type" in md and 'id="preset"' in page
    # Mask AP has no per-sample file of its own: its rows say why instead of an interval.
    reasons = out.board.intervals.runs_without
    derived = [i for i in reasons if i.endswith("#mask_ap")]
    assert len(derived) == 5 * 2 * len(LRS) and all("box AP's matches only" in reasons[i] for i in derived)


def test_unknown_preset_is_a_usage_error(corpus, tmp_path):
    root, _ = corpus
    with pytest.raises(UsageError, match="Unknown leaderboard preset 'bobb'; known: bob"):
        api.leaderboard(root, tmp_path / "o", preset="bobb", intervals=False)
    assert get_preset("") is None and get_preset("bob") is BOB


def test_a_results_dir_without_bob_tasks_is_a_usage_error(tmp_path):
    _write(tmp_path / "raw", "cnn-a", "knn/x", {"top1": 0.5}, "top1")
    with pytest.raises(UsageError, match=r"No run to score under preset 'bob': left off .*knn \(1\)"):
        build_board(load_results(tmp_path / "raw"), BoardOptions(preset="bob", intervals=False))


def test_cli_preset_prints_the_task_types(corpus, tmp_path):
    root, _ = corpus
    env = {**os.environ, "COLUMNS": "220", "BOB_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "bob.cli", "leaderboard", "--results-dir", str(root), "--out",
           str(tmp_path / "o"), "--preset", "bob", "--no-intervals"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "classification" in proc.stdout and "retrieval" in proc.stdout
    assert "Preset bob:" in proc.stderr and "left off" in proc.stderr
    proc = subprocess.run(
        [*cmd[:-3], "--preset", "nope", "--no-intervals"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "Unknown leaderboard preset" in proc.stderr


def test_bobs_protocol_replaces_the_default_one_where_a_task_has_both(corpus):
    root, _ = corpus
    bob_values = {}
    for b, name in enumerate(PRETRAINED):
        bob_values[f"{name} [pretrained]"] = _value(b, 90)
        _write(root, name, "finetune/x", {"top1": _value(b, 90)}, "top1", task_args={"protocol": "bob"})
    board = build_board(load_results(root), BoardOptions(preset="bob", intervals=False))
    settings = set(board.settings["setting"])
    assert "finetune/x" in settings and not any(s.startswith("finetune/x [") for s in settings)
    cells_bob = board.cells[board.cells["setting"] == "finetune/x"].set_index("backbone_key")["mean"]
    assert cells_bob.to_dict() == pytest.approx(bob_values)  # the random baseline ran only the default
    assert any("left off (not protocol=bob): 5 run(s)" in note for note in board.preset_notes)
    # The default board keeps both protocols as two settings.
    default = build_board(load_results(root), BoardOptions(intervals=False))
    assert {"finetune/x [protocol=null]", "finetune/x [protocol=bob]"} <= set(default.settings["setting"])
