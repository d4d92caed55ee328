"""Sweep files: validation with precise errors, deterministic expansion, the extract-once plan."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from bob.sweep.expand import expand
from bob.sweep.plan import extraction_key, make_plan
from bob.sweep.spec import SweepSpecError, load_sweep, parse_sweep

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
MOBILENET = "torchvision/mobilenet_v2"


def grid(**overrides):
    g = {"backbones": [MOBILENET], "tasks": ["linear-probe/shapes-mini"]}
    g.update(overrides)
    return {"name": "t", "grids": [g]}


BAD = {
    "unknown top-level key": ({"name": "t", "grids": [], "gridz": []}, "(top level).gridz: unknown key"),
    "unknown grid key": (grid(seed=[0]), "grids[0].seed: unknown key. Did you mean: seeds?"),
    "unknown task key": (
        grid(tasks=[{"task": "knn/shapes", "arg": {}}]),
        "grids[0].tasks[0].arg: unknown key",
    ),
    "missing name": ({"grids": [grid()["grids"][0]]}, "missing required key(s) name"),
    "seeds not integers": (grid(seeds=["zero"]), "grids[0].seeds[0]: expected a non-negative integer"),
    "backbones not a list": (
        grid(backbones={"family": "vit"}),
        "grids[0].backbones: expected a list, got a dict",
    ),
    "args not a mapping": (grid(tasks=[{"task": "knn/shapes", "args": [1]}]), "args: expected a mapping"),
    "empty grids": ({"name": "t", "grids": []}, "grids: is empty"),
    "empty tasks": (grid(tasks=[]), "grids[0].tasks: is empty"),
    "empty grid values": (grid(tasks=[{"task": "knn/shapes", "grid": {"k": []}}]), "grid.k: is empty"),
    "empty filter": (grid(backbones=[{}]), "grids[0].backbones[0]: an empty filter selects nothing"),
    "filter matches nothing": (
        grid(backbones=[{"family": "vit", "method": "ssl:nothing*"}]),
        "grids[0].backbones[0]: the filter family=vit, method=ssl:nothing* matches no catalog backbone",
    ),
    "unknown family": (grid(backbones=[{"family": "vits"}]), "Did you mean vit?"),
    "duplicate seed": (grid(seeds=[0, 0]), "grids[0].seeds[1]: 0 is listed twice (a duplicate run)"),
    "duplicate task entry": (
        grid(tasks=["knn/shapes", {"task": "knn/shapes", "args": {}}]),
        "duplicate run",
    ),
    "unknown backbone": (grid(backbones=["mobilenet_v3"]), "Unknown backbone"),
    "unknown task": (grid(tasks=["linear-probe/shape"]), "Did you mean: linear-probe/shapes"),
    "unknown task arg": (grid(tasks=[{"task": "knn/shapes", "args": {"kk": 5}}]), "Unknown task arg"),
    "bad task arg type": (grid(tasks=[{"task": "knn/shapes", "args": {"k": "many"}}]), "takes an integer"),
    "unknown suite in defaults": (
        {**grid(), "defaults": {"task_args": {"knnn": {"k": 3}}}},
        "defaults.task_args.knnn",
    ),
    "everything excluded": ({**grid(), "exclude": [{"task": "*"}]}, "expands to no runs"),
    "arg in args and grid": (
        grid(tasks=[{"task": "knn/shapes", "args": {"k": 5}, "grid": {"k": [5, 10]}}]),
        "set in both args and grid",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sweep_files_fail_with_file_and_key_path(case, tmp_path):
    data, expected = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SweepSpecError) as err:
        expand(load_sweep(path))
    assert str(path) in str(err.value), err.value
    assert expected in str(err.value), err.value


def test_unreadable_files(tmp_path):
    with pytest.raises(SweepSpecError, match="does not exist"):
        load_sweep(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SweepSpecError, match="not valid YAML"):
        load_sweep(tmp_path / "broken.yaml")


def test_expansion_is_the_full_product_and_stable():
    data = {
        "name": "t",
        "defaults": {"task_args": {"linear-probe": {"epochs": 3}}},
        "grids": [
            {
                "backbones": [MOBILENET, {"name": "timm/vit_small_patch16_224.augreg_in1k"}],
                "weights": ["pretrained", "random"],
                "seeds": [0, 1],
                "tasks": [
                    {"tasks": ["linear-probe/shapes-mini", "linear-probe/digits"]},
                    {"task": "knn/shapes-mini", "grid": {"k": [5, 10, 20]}},
                ],
            }
        ],
        "exclude": [{"backbone": "timm/*", "weights": "random", "task": "knn/*"}],
    }
    runs = expand(parse_sweep(data))
    # 2 backbones × 2 weights × 2 seeds × (2 probe tasks + 3 k) − excluded (1 × 1 × 2 × 3)
    assert len(runs) == 2 * 2 * 2 * 5 - 6
    probes = [r.spec for r in runs if r.spec.task.startswith("linear-probe")]
    assert all(s.task_args["epochs"] == 3 for s in probes)
    assert {r.spec.task_args["k"] for r in runs if r.spec.task == "knn/shapes-mini"} == {5, 10, 20}
    again = expand(parse_sweep(yaml.safe_load(yaml.safe_dump(data))))
    assert [r.spec.id for r in runs] == [r.spec.id for r in again]


def test_filters_select_from_the_catalog():
    runs = expand(parse_sweep(grid(backbones=[{"method": "ssl:dino", "family": "vit"}])))
    assert sorted(r.spec.backbone for r in runs) == ["dino/vit_base_patch16", "dino/vit_small_patch16"]
    runs = expand(parse_sweep(grid(backbones=[{"group": "bob", "max_params": "22M"}])))
    assert runs and all(r.spec.backbone != "timm/resnet50.a1_in1k" for r in runs)


def test_plan_extraction_count_equals_unique_groups():
    data = {
        "name": "t",
        "grids": [
            {
                "backbones": [MOBILENET, "timm/test_resnet"],
                "weights": ["pretrained", "random"],
                "seeds": [0, 1, 2],
                "tasks": [
                    {"tasks": ["linear-probe/shapes-mini", "knn/shapes-mini", "linear-probe/digits"]},
                    {"task": "knn/digits", "grid": {"k": [5, 10]}},
                    {"task": "linear-probe/digits", "args": {"image_size": 32}},
                ],
            }
        ],
    }
    specs = [r.spec for r in expand(parse_sweep(data))]
    plan = make_plan(specs)
    # Features depend on backbone, weights, dataset, size and (random weights only) the init seed.
    expected = {
        (
            s.backbone,
            s.weights,
            s.task.split("/")[1],
            s.task_args.get("image_size"),
            s.seed if s.weights == "random" else None,
        )
        for s in specs
    }
    assert plan.runs == len(specs) == 2 * 2 * 3 * 6
    assert plan.extractions == len(expected) == len({extraction_key(s) for s in specs})
    # pretrained: 2 backbones × (shapes-mini, digits, digits@32); random: the same × 3 seeds
    assert plan.extractions == 2 * 3 + 2 * 3 * 3
    assert plan.training_runs == 0
    for group in plan.groups:
        assert len({extraction_key(s) for s in group.specs}) == 1


def test_dry_run_needs_no_torch_and_prints_the_breakdown(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        from bob.cli import app
        try:
            app(["sweep", sys.argv[1], "--dry-run"], standalone_mode=False)
        finally:
            assert "torch" not in sys.modules, "the dry run imported torch"
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(SWEEPS / "quickstart.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "12 runs · 4 unique feature extractions" in proc.stdout
    assert "runs by suite" in proc.stdout and "runs by family" in proc.stdout


def test_cli_reports_a_bad_file_as_usage_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(grid(seeds=[-1])))
    proc = subprocess.run(
        [sys.executable, "-m", "bob.cli", "sweep", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "grids[0].seeds[0]: expected a non-negative integer seed" in proc.stderr.replace("\n", " ")


def test_big_groups_split_into_an_extracting_head_and_cache_reading_chunks():
    from bob.sweep.executors.ray import split_group
    from bob.sweep.plan import RunGroup

    specs = [r.spec for r in expand(parse_sweep(grid(seeds=list(range(8)))))]
    head, chunks = split_group(RunGroup("k", specs, extracts=True), chunk=3)
    assert head.specs == specs[:1] and [len(c.specs) for c in chunks] == [3, 3, 1]
    assert [s for c in chunks for s in c.specs] == specs[1:]
    whole, none = split_group(RunGroup("k", specs[:4], extracts=True), chunk=3)
    assert len(whole.specs) == 4 and none == []
    training, none = split_group(RunGroup("k", specs, extracts=False), chunk=3)
    assert len(training.specs) == 8 and none == []
