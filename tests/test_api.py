"""The Python API (`bob.api`, re-exported from `bob`): each function on tiny offline data, the errors it
raises for bad input, and an `import bob` that stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from leaderboard_results import write_result

from bob import api
from bob.errors import UnknownNameError, UsageError
from bob.results import read_result

TINY = "timm/test_resnet"
PROBE = {"epochs": 2, "min_steps": 20}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")


def test_import_bob_is_light_and_reaches_the_api():
    code = (
        "import sys, bob\n"
        "heavy = [m for m in ('torch', 'pandas', 'numpy', 'bob.api', 'bob.suites') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "from bob import run, list_tasks\n"
        "assert run is bob.run is bob.api.run and callable(bob.leaderboard) and callable(bob.check)\n"
        "print('TASKS', len(list_tasks('knn/*')))\n"
        "print('TORCH', 'torch' in sys.modules, 'PANDAS', 'pandas' in sys.modules)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    assert "TORCH False PANDAS False" in proc.stdout, "listing through the API imports neither"
    assert int(proc.stdout.split("TASKS ")[1].split()[0]) >= 3


def test_api_names_that_are_also_modules_stay_both():
    """`bob.sweep`, `bob.leaderboard` and `bob.check` call the API; once their modules are imported,
    they are those modules too, so attribute chains (`bob.sweep.locks`) keep working."""
    code = (
        "import bob\n"
        "from bob.sweep.locks import HOST\n"
        "import bob.leaderboard.format\n"
        "from bob.check import check_backbone\n"
        "assert bob.sweep.locks.HOST == HOST and bob.leaderboard.format.LEGEND\n"
        "assert bob.check.check_backbone is check_backbone\n"
        "for name in ('sweep', 'leaderboard', 'check'):\n"
        "    assert callable(getattr(bob, name)), name\n"
        "try:\n"
        "    bob.sweep('/nonexistent/sweep.yaml')\n"
        "except bob.api.UsageError as err:\n"
        "    print('ERROR', err)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR Sweep file /nonexistent/sweep.yaml does not exist" in proc.stdout


def test_run_writes_a_result_then_skips_it(tmp_path):
    seen: list[str] = []
    outcomes = api.run(
        TINY,
        "linear-probe/shapes-mini",
        weights="random",
        task_args=PROBE,
        results_dir=tmp_path / "raw",
        cache_dir=tmp_path / "cache",
        device="cpu",
        num_workers=0,
        on_start=lambda i, n, spec: seen.append(f"{i}/{n} {spec.task}"),
    )
    assert seen == ["1/1 linear-probe/shapes-mini"]
    (outcome,) = outcomes
    assert outcome.result.ok and not outcome.skipped and outcome.metrics_are_fractions
    assert 0 <= outcome.result.metrics["top1"] <= 1
    assert read_result(outcome.path).id == outcome.spec.id
    again = api.run(
        [TINY], ["linear-probe/shapes-mini"], ["random"], [0], task_args=["epochs=2", "min_steps=20"],
        results_dir=tmp_path / "raw", device="cpu",
    )  # fmt: skip
    assert again[0].skipped and again[0].spec.id == outcome.spec.id, "the mapping and KEY=VALUE agree"
    assert api.load_outcomes([outcome.spec], tmp_path / "raw")[0].result.metrics == outcome.result.metrics


def test_run_specs_is_the_product_and_scopes_task_args():
    specs = api.run_specs(
        TINY, ["knn/shapes-mini", "linear-probe/shapes-mini"], ["random", "pretrained"], [0, 1],
        task_args={"knn:k": 5, "linear-probe:epochs": 3},
    )  # fmt: skip
    assert len(specs) == 8
    assert {s.task_args["k"] for s in specs if s.task.startswith("knn/")} == {5}
    assert {s.task_args["epochs"] for s in specs if s.task.startswith("linear-probe/")} == {3}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"backbones": "timm/resnet5O"}, UnknownNameError, "Did you mean: timm/resnet50"),
        ({"tasks": "knn/digitz"}, UnknownNameError, "Did you mean: knn/digits"),
        ({"task_args": {"kk": 3}}, UnknownNameError, "Unknown task arg for knn/digits 'kk'"),
        ({"task_args": ["k"]}, UsageError, "Malformed --task-arg 'k'"),
        ({"task_args": {"k": "three"}}, UsageError, "takes an integer, got 'three'"),
        ({"task_args": {"knnn:k": 3}}, UnknownNameError, "Unknown task suite 'knnn'"),
        ({"weights": "pretrianed"}, UsageError, "'pretrained', 'random' or the path"),
        ({"seeds": -1}, UsageError, "--seed must be a non-negative integer"),
        ({"device": "cuda:7"}, UsageError, "CUDA is not available"),
    ],
)
def test_bad_input_raises_before_anything_is_written(tmp_path, kwargs, error, message):
    call = {"backbones": TINY, "tasks": "knn/digits", "weights": "random", **kwargs}
    with pytest.raises(error, match=message.replace("(", r"\(")) as raised:
        api.run(**call, results_dir=tmp_path / "r")
    assert raised.value.exit_code == 2
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("*.json"))


def test_listings():
    tasks = [row["name"] for row in api.list_tasks("linear-probe/*")]
    assert "linear-probe/animal-mnist" in tasks
    assert all(name.startswith("linear-probe/") for name in tasks)
    assert "animal-mnist" in [row["name"] for row in api.list_datasets()]
    names = [row["name"] for row in api.list_backbones("timm/vit_small_patch16_224.*")]
    assert "timm/vit_small_patch16_224.augreg_in21k_ft_in1k" in names
    small_vits = api.list_backbones(family="vit", max_params="30M")
    assert small_vits and all(r["family"] == "vit" and r["params"] < 30e6 for r in small_vits)
    assert "timm" in [ns["prefix"] for ns in api.backbone_namespaces()]
    assert "k" in [arg["arg"] for arg in api.list_task_args("knn")]
    with pytest.raises(UsageError, match="--max-params takes a count"):
        api.list_backbones(max_params="many")
    with pytest.raises(UnknownNameError, match="Unknown task suite"):
        api.list_task_args("knnn")


def test_build_backbone_and_check():
    import torch

    model = api.build_backbone(TINY, "random", input_size=32)
    assert model.forward_pooled(torch.zeros(2, 3, 32, 32)).shape[0] == 2
    results = {r.name: r for r in api.check(TINY, "random", image_size=32, suites="knn")}
    assert results["pooled output"].status == "pass"
    assert results["mock run: knn"].status == "pass"
    assert results["mock run: linear-probe"].status == "skip"
    contract = api.check(TINY, "random", image_size=32, mock_runs=False)
    assert contract and not any(r.name.startswith("mock run") for r in contract)
    with pytest.raises(UsageError, match="matches no suite"):
        api.check(TINY, "random", suites="no-such-suite")
    with pytest.raises(UnknownNameError):
        api.build_backbone("timm/resnet5O")


def test_sweep_plans_runs_and_resumes(tmp_path):
    path = tmp_path / "tiny.yaml"
    grid = {"backbones": [TINY], "weights": ["random"], "tasks": ["knn/shapes-mini"]}
    path.write_text(yaml.safe_dump({"name": "tiny", "grids": [grid]}))
    plan = api.sweep_plan(path)
    assert plan.name == "tiny" and plan.runs == 1 and plan.extractions == 1
    raw = tmp_path / "raw"
    assert len(api.sweep_status(plan, raw).todo) == 1
    summary = api.sweep(path, results_dir=raw, cache_dir=tmp_path / "cache", device="cpu", num_workers=0)
    assert summary.counts["ok"] == 1 and summary.exit_code == 0
    assert api.load_outcomes(plan.specs(), raw)[0].result.ok
    again = api.sweep(plan, results_dir=raw, device="cpu")
    assert again.counts["done_before"] == 1 and "ok" not in again.counts
    with pytest.raises(UsageError, match="Sweep mode 'some'"):
        api.sweep(plan, mode="some", results_dir=raw)
    with pytest.raises(UnknownNameError, match="Unknown executor 'rey'"):
        api.sweep(plan, executor="rey", results_dir=raw)


def test_leaderboard_returns_the_board_and_its_summary(tmp_path):
    raw = tmp_path / "raw"
    for i, backbone in enumerate(["cnn-a", "vit-b", "vit-c", "swin-d"]):
        write_result(raw, backbone, "linear-probe/animal-mnist", 0.5 + 0.1 * i)
    out = api.leaderboard(raw, tmp_path / "out", group_by="family", formats=["csv"])
    assert out.table["backbone_key"].iloc[0].startswith("swin-d")
    assert out.summary is not None and set(out.summary["family"]) == {"cnn", "vit", "hierarchical"}
    assert all(Path(p).exists() for p in out.paths) and not (tmp_path / "out" / "leaderboard.html").exists()
    with pytest.raises(UsageError, match="--group-by takes one of"):
        api.leaderboard(raw, tmp_path / "out", group_by="colour")
    with pytest.raises(UsageError, match="does not exist"):
        api.leaderboard(tmp_path / "missing", tmp_path / "out")
