"""Your own backbone: factories from a file, a module or an entry point, and the `bob check` gate."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bob.backbones import resolve_backbone
from bob.check import check_backbone
from bob.errors import BackboneContractError, UsageError
from bob.results import read_result
from bob.runner import RunOptions, execute
from bob.spec import make_spec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_backbone.py"

BROKEN = '''
import torch
from torch import nn

META = {"input_size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


class Nan(nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 4), float("nan"))


class Tokens(nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 5, 4)


class BatchMean(nn.Module):
    """Normalises across the batch, so an image's features depend on its neighbours."""

    def forward(self, x):
        f = x.mean(dim=(2, 3))
        return f - f.mean(0, keepdim=True)


def raises():
    raise RuntimeError("cannot build")


def wrong_type():
    return "a string"


def nan():
    return Nan(), META


def tokens():
    return Tokens(), META


def batch_mean():
    return BatchMean(), META


def no_meta():
    return Tokens()
'''


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    return path


def _bob(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bob.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_the_example_passes_bob_check():
    proc = _bob("check", "--backbone", f"{EXAMPLE}:tiny_convnet", "--weights", "random")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All checks passed" in proc.stdout and "mock run: linear-probe" in proc.stdout


@pytest.mark.parametrize(
    ("factory", "check", "message"),
    [
        ("raises", "resolve", "check 'factory' failed: the factory raised RuntimeError: cannot build"),
        ("wrong_type", "resolve", "returned str; expected a bob Backbone"),
        ("no_meta", "resolve", "returned Tokens; expected a bob Backbone"),
        ("nan", "pooled output", "non-finite"),
        ("tokens", "pooled output", "expected [B, D]"),
        ("batch_mean", "batch-size invariance", "depend on its batch"),
    ],
)
def test_broken_backbones_fail_the_named_check(broken, factory, check, message):
    results = {r.name: r for r in check_backbone(f"{broken}:{factory}", weights="random", image_size=32)}
    assert results[check].status == "fail", results
    assert message in results[check].detail
    assert results.get("mock runs") is None or results["mock runs"].status == "skip"


def test_check_exits_1_and_writes_nothing(broken, tmp_path):
    proc = _bob(
        "check",
        "-b",
        f"{broken}:nan",
        "-w",
        "random",
        "--image-size",
        "32",
        env={"BOB_CACHE_DIR": str(tmp_path / "c")},
    )
    assert proc.returncode == 1 and "FAILED: pooled output" in proc.stdout
    assert not Path("results/raw").exists() or not any(Path("results/raw").rglob("*broken*"))


def test_unknown_factory_names(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        resolve_backbone(f"{tmp_path}/nope.py:f", weights="random")
    with pytest.raises(UsageError, match="has no callable 'nope'"):
        resolve_backbone(f"{EXAMPLE}:nope", weights="random")
    with pytest.raises(BackboneContractError, match="check 'import' failed"):
        resolve_backbone("no_such_package_xyz.mod:factory", weights="random")


def test_a_user_backbone_runs_like_any_other(tmp_path):
    name = f"{EXAMPLE}:tiny_convnet"
    options = RunOptions(tmp_path / "r", tmp_path / "c", device="cpu", num_workers=0)
    outcome = execute(make_spec(name, "knn/shapes-mini", "random"), options)
    assert outcome.result.ok, outcome.result.error
    result = read_result(outcome.path)
    assert result.backbone["adapter"] == "user" and len(result.backbone["weights"]["sha256"]) == 64
    again = execute(
        make_spec(name, "linear-probe/shapes-mini", "random", task_args={"min_steps": "20"}), options
    )
    assert again.result.cache["extractions"] == 0, "same factory, same weights: features come from the cache"


def test_module_factory_and_entry_point(tmp_path):
    """`package.module:fn` and an installed package's `bob.backbones` entry point, end to end."""
    (tmp_path / "my_nets.py").write_text(EXAMPLE.read_text())
    dist = tmp_path / "my_nets-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-nets\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[bob.backbones]\nmy-convnet = my_nets:tiny_convnet\nbroken-net = no_such_module_xyz:factory\n"
    )
    env = {"PYTHONPATH": str(tmp_path)}
    listed = _bob("ls", "backbones", "my-*", "--json", env=env)
    assert '"my-convnet"' in listed.stdout
    # the full gate runs in test_the_example_passes_bob_check; here one suite's mock run is enough
    ok = _bob("check", "-b", "my-convnet", "-w", "random", "--suites", "knn", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "mock run: knn" in ok.stdout and "not selected by --suites knn" in ok.stdout
    by_module = _bob("check", "-b", "my_nets:tiny_convnet", "-w", "random", "--suites", "knn", env=env)
    assert by_module.returncode == 0, by_module.stdout + by_module.stderr
    nothing = _bob("check", "-b", "my-convnet", "-w", "random", "--suites", "knnn", env=env)
    assert nothing.returncode == 2 and "matches no suite" in nothing.stdout + nothing.stderr
    bad = _bob("check", "-b", "broken-net", "-w", "random", env=env)
    assert bad.returncode == 1
    assert "check 'import' failed: entry point 'broken-net' (my-nets)" in bad.stdout


def test_plain_module_without_stages_says_dense_suites_need_features(tmp_path):
    (tmp_path / "flat.py").write_text(
        "from torch import nn\n"
        "def mlp():\n"
        "    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 16))\n"
        "    return net, {'input_size': 32, 'mean': (0.5,) * 3, 'std': (0.5,) * 3}\n"
    )
    model = resolve_backbone(f"{tmp_path}/flat.py:mlp", weights="random").build()
    assert model.feature_info == [] and model.forward_pooled(torch.zeros(2, 3, 32, 32)).shape == (2, 16)
    with pytest.raises(BackboneContractError, match="Dense suites need them"):
        model.forward_features(torch.zeros(1, 3, 32, 32))
    results = {r.name: r for r in check_backbone(f"{tmp_path}/flat.py:mlp", weights="random", image_size=32)}
    assert results["feature levels"].status == "skip" and "dense suites" in results["feature levels"].detail


def test_example_file_is_short():
    code = [line for line in textwrap.dedent(EXAMPLE.read_text()).splitlines() if line.strip()]
    assert len(code) <= 25


def test_a_sweep_refuses_a_user_backbone_that_fails_bob_check(broken, tmp_path):
    from bob.api import check_own_backbones
    from bob.sweep.driver import plan_sweep
    from bob.sweep.plan import own_backbones
    from bob.sweep.spec import load_sweep

    sweep = tmp_path / "mine.yaml"
    sweep.write_text(
        f"name: mine\ngrids:\n  - backbones: ['{EXAMPLE}:tiny_convnet', '{broken}:nan']\n"
        "    weights: [random]\n    tasks: [knn/shapes-mini]\n"
    )
    proc = _bob("sweep", str(sweep), "--results-dir", str(tmp_path / "raw"), "--device", "cpu", "-q")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"Backbone '{broken}:nan' [random] fails `bob check` (pooled output" in " ".join(
        proc.stderr.split()
    )
    assert not (tmp_path / "raw").exists(), "nothing may run before every user backbone passes"

    good = tmp_path / "good.yaml"
    good.write_text(sweep.read_text().replace(f", '{broken}:nan'", ""))
    plan = plan_sweep(load_sweep(good))
    assert [b for b, _, _ in own_backbones(plan)] == [f"{EXAMPLE}:tiny_convnet"]
    check_own_backbones(plan)  # the example passes: no error
