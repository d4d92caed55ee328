"""Sweeps at scale: streamed planning agrees with the materialised plan, every problem of a file is
reported at once, a big sweep asks for --yes, and a 10^5-run dry run stays fast and small."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import yaml

from bob.errors import UsageError
from bob.sweep.driver import check_size, plan_sweep, survey_plan
from bob.sweep.expand import Expansion, expand
from bob.sweep.plan import make_plan
from bob.sweep.spec import DEFAULT_MAX_RUNS, SweepSpecError, load_sweep, parse_sweep

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
TINY = "timm/test_resnet"


def _materialised(sweep):
    specs = [r.spec for r in expand(sweep)]
    return specs, make_plan(specs)


@pytest.mark.parametrize("name", ["quickstart.yaml", "bob.yaml", "bob-smoke.yaml", "seed-papers-smoke.yaml"])
def test_streamed_counts_equal_the_materialised_plan(name):
    sweep = load_sweep(SWEEPS / name)
    streamed = plan_sweep(sweep)
    specs, plan = _materialised(sweep)
    assert streamed.runs == plan.runs == len(specs)
    assert streamed.extractions == plan.extractions
    assert streamed.training_runs == plan.training_runs
    assert streamed.group_count == len(plan.groups) == len(streamed.groups)
    assert streamed.breakdown() == plan.breakdown()
    assert [s.id for s in streamed.specs()] == [s.id for s in plan.specs()]


def test_template_ids_equal_spec_ids():
    """`SpecTemplate.run_id` assembles the canonical JSON by hand; it must hash what RunSpec.id hashes."""
    data = {
        "name": "ids",
        "grids": [
            {
                "backbones": [TINY, "torchvision/mobilenet_v2", "composite(timm/test_resnet)"],
                "weights": ["pretrained", "random"],
                "seeds": [0, 7],
                "backbone_args": {"drop_path_rate": 0.1, "ünïcode": "é"},
                "tasks": [
                    {"task": "knn/shapes-mini", "grid": {"k": [5, 10]}},
                    {"task": "linear-probe/digits", "args": {"epochs": 3}},
                    {"task": "detection/scenes", "grid": {"lr": [1.0e-4, 3.0e-4]}},
                ],
            }
        ],
    }
    expansion = Expansion(parse_sweep(data))
    runs = list(expansion.runs())
    assert len(runs) == 3 * 2 * 2 * 5
    for combo, backbone, weights, seed in runs:
        assert (
            combo.template.run_id(backbone, weights, seed) == combo.template.spec(backbone, weights, seed).id
        )


def test_excludes_and_seeds_per_entry_stream_like_the_list():
    data = {
        "name": "t",
        "grids": [
            {
                "backbones": [TINY, "torchvision/mobilenet_v2"],
                "weights": ["pretrained", "random"],
                "seeds": [0, 1, 2],
                "tasks": ["knn/shapes-mini", {"task": "ncm/shapes-mini", "seeds": [5]}],
            }
        ],
        "exclude": [
            {"backbone": "torchvision/*", "weights": "random", "seed": 1},
            {"task": "ncm/*", "weights": "pretrained"},
            {"backbone": TINY, "task": "knn/*", "seed": 2},
        ],
    }
    sweep = parse_sweep(data)
    streamed = plan_sweep(sweep)
    specs, plan = _materialised(sweep)
    assert streamed.runs == len(specs) == 2 * 2 * 3 - 1 - 2 + 2 * 1  # knn: 12 - 1 - 2; ncm: random only
    assert streamed.breakdown() == plan.breakdown()


def test_a_file_with_several_problems_reports_all_of_them(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: t
            colour: blue
            grids:
              - backbones: [timm/resnet5O, {TINY}]
                weigths: [random]
                tasks: [knn/shapes-mimi, {{task: knn/shapes-mini, args: {{kk: 3}}}}]
              - backbones: [{{family: vits}}]
                seeds: [zero]
                tasks: [knn/shapes-mini]
            """
        )
    )
    with pytest.raises(SweepSpecError) as err:
        plan_sweep(load_sweep(path))
    text = str(err.value)
    for expected in (
        "(top level).colour: unknown key",
        "grids[0].weigths: unknown key. Did you mean: weights?",
        "Unknown backbone 'timm/resnet5O'",
        "Unknown task 'knn/shapes-mimi'",
        "Unknown task arg for knn/shapes-mini 'kk'",
        "grids[1].seeds[0]: expected a non-negative integer",
    ):
        assert expected in text, text
    assert text.startswith(f"6 problems in sweep file {path}")


def test_a_duplicate_found_by_the_streamed_plan_names_both_places():
    data = {
        "name": "t",
        "grids": [
            {"backbones": [TINY], "weights": ["random"], "tasks": ["knn/shapes-mini"]},
            {
                "backbones": [TINY],
                "weights": ["random"],
                "tasks": [{"task": "knn/shapes-mini", "args": {"k": 20}}],
            },
        ],
    }
    with pytest.raises(
        SweepSpecError, match=r"asked for by grids\[0\]\.tasks\[0\].*again by grids\[1\]\.tasks\[0\]"
    ):
        plan_sweep(parse_sweep(data))


def test_a_sweep_above_its_size_limit_asks_for_yes(tmp_path):
    data = {
        "name": "big",
        "max_runs": 3,
        "grids": [
            {"backbones": [TINY], "weights": ["random"], "seeds": [0, 1, 2, 3], "tasks": ["knn/shapes-mini"]}
        ],
    }
    plan = plan_sweep(parse_sweep(data))
    from bob.results import ResultStore

    state = survey_plan(plan, ResultStore(tmp_path / "raw"), "missing")
    assert state.to_run == 4
    with pytest.raises(UsageError, match=r"would start 4 runs, more than 3 \(its max_runs key\).*--yes"):
        check_size(state, plan)
    check_size(state, plan, yes=True)
    check_size(state, plan, max_runs=4)
    plan.max_runs = None
    check_size(state, plan)  # 4 runs are far below the default limit
    assert DEFAULT_MAX_RUNS >= 10_000


def test_the_api_refuses_a_big_sweep_before_any_run(tmp_path, monkeypatch):
    import bob.api

    data = {
        "name": "big",
        "max_runs": 1,
        "grids": [
            {"backbones": [TINY], "weights": ["random"], "seeds": [0, 1], "tasks": ["knn/shapes-mini"]}
        ],
    }
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setattr("bob.sweep.driver.run_sweep", lambda *a, **k: pytest.fail("the sweep ran"))
    with pytest.raises(UsageError, match="pass --yes"):
        bob.api.sweep(path, results_dir=tmp_path / "raw", cache_dir=tmp_path / "cache", device="cpu")
    assert not (tmp_path / "raw").exists()


def _big_sweep(path: Path, seeds: int) -> None:
    """{group: bob} (42 backbones) × 2 weights × `seeds` seeds × 12 task combinations."""
    path.write_text(
        textwrap.dedent(
            f"""\
            name: scale
            max_runs: 2000000
            grids:
              - backbones: [{{group: bob}}]
                weights: [pretrained, random]
                seeds: {list(range(seeds))}
                tasks:
                  - tasks: [linear-probe/shapes, knn/shapes, ncm/shapes, retrieval/skimage-views]
                    grid: {{image_size: [32, 64]}}
                  - task: finetune/shapes
                    grid: {{lr: [1.0e-4, 2.0e-4], epochs: [1, 2]}}
            """
        )
    )


# The peak resident set of the dry run itself: VmHWM of its own address space (ru_maxrss would
# carry over the pytest process's peak across fork and exec).
PEAK = (
    "import re, sys, time\n"
    "t = time.perf_counter()\n"
    "from bob.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as e:\n"
    "    assert not e.code, e.code\n"
    "print('SECONDS', time.perf_counter() - t, file=sys.stderr)\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
    "print('PEAK_MB', int(hwm) / 1024, file=sys.stderr)\n"
)


def _dry_run(path: Path, results: Path) -> tuple[float, float, str]:
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, "sweep", str(path), "--dry-run", "--results-dir", str(results)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    values = dict(
        line.split() for line in proc.stderr.splitlines() if line.startswith(("SECONDS", "PEAK_MB"))
    )
    return float(values["SECONDS"]), float(values["PEAK_MB"]), proc.stdout


@pytest.mark.slow
def test_a_100k_run_dry_run_streams(tmp_path):
    """10^5 runs (42 × 2 × 100 × 12 = 100,800): measured 0.6 s and 80 MB on a 2-core CPU; the bounds
    leave room for a loaded CI machine, far below the 13 s and 136 MB planning took before."""
    _big_sweep(tmp_path / "big.yaml", 100)
    (tmp_path / "raw").mkdir()  # an existing results dir: the dry run also surveys it
    seconds, peak, out = _dry_run(tmp_path / "big.yaml", tmp_path / "raw")
    assert "100800 runs" in out and "100800 to run" in out
    assert seconds < 8 and peak < 200, (seconds, peak)


@pytest.mark.long
def test_a_million_run_dry_run_fits_the_target(tmp_path):
    """The issue's target: `--dry-run` of a 10^6-run sweep in at most 15 s and 300 MB."""
    _big_sweep(tmp_path / "big.yaml", 1000)
    (tmp_path / "raw").mkdir()
    seconds, peak, out = _dry_run(tmp_path / "big.yaml", tmp_path / "raw")
    assert "1008000 runs" in out
    assert seconds <= 15 and peak <= 300, (seconds, peak)


def test_survey_counts_without_holding_the_specs(tmp_path):
    from bob.results import ResultStore

    data = {
        "name": "t",
        "grids": [
            {"backbones": [TINY], "weights": ["random"], "seeds": [0, 1, 2], "tasks": ["knn/shapes-mini"]}
        ],
    }
    plan = plan_sweep(parse_sweep(data))
    counted = survey_plan(plan, ResultStore(tmp_path), "missing", keep=False)
    kept = survey_plan(plan, ResultStore(tmp_path), "missing")
    assert counted.to_run == kept.to_run == len(kept.todo) == 3 and counted.todo == []
    assert Counter(s.id for s in kept.todo) == Counter(s.id for s in plan.specs())


def test_the_dry_run_says_when_running_would_need_yes(tmp_path, capsys):
    from tests.cli_harness import invoke

    data = {
        "name": "big",
        "max_runs": 1,
        "grids": [
            {"backbones": [TINY], "weights": ["random"], "seeds": [0, 1], "tasks": ["knn/shapes-mini"]}
        ],
    }
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(data))
    code, text = invoke(["sweep", str(path), "--dry-run", "--results-dir", str(tmp_path / "raw")], capsys)
    assert code == 0 and "more than this sweep's limit of 1: running it needs --yes" in " ".join(text.split())
