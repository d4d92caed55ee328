"""The command line: listings, a real run, exit codes and one-paragraph errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bob.results import read_result

TINY = "timm/test_resnet"


def bob(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "bob.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_version_and_help():
    assert bob("--version").stdout.startswith("bob ")
    proc = bob("--help")
    assert proc.returncode == 0 and "run" in proc.stdout and "ls" in proc.stdout


@pytest.mark.parametrize(
    ("kind", "pattern", "expect"),
    [
        ("backbones", "torchvision/mobilenet_v2*", "torchvision/mobilenet_v2.IMAGENET1K_V2"),
        ("backbones", "timm/vit_small_patch16_224.*", "timm/vit_small_patch16_224.augreg_in21k_ft_in1k"),
        ("tasks", "linear-probe/*", "linear-probe/animal-mnist"),
        ("datasets", None, "animal-mnist"),
    ],
)
def test_ls(kind, pattern, expect):
    proc = bob("ls", kind, *([pattern] if pattern else []), "--json")
    assert proc.returncode == 0, proc.stderr
    names = [row["name"] for row in json.loads(proc.stdout)]
    assert expect in names
    if pattern:
        from bob.registry import match

        assert match(pattern, names) == names


def test_ls_datasets_shows_a_dash_for_datasets_without_a_class_count():
    proc = bob("ls", "datasets", "imagefolder")
    assert proc.returncode == 0, proc.stderr
    assert "imagefolder" in proc.stdout and "—" in proc.stdout and "None" not in proc.stdout
    row = json.loads(bob("ls", "datasets", "imagefolder", "--json").stdout)[0]
    assert row["classes"] is None  # JSON keeps the null


def test_ls_tasks_args_prints_help_texts_that_hold_brackets():
    """open-vocab's text_encoder help reads `open_clip:<model>[/<pretrained>]`: text, not rich markup."""
    proc = bob("ls", "tasks", "open-vocab/*", "--args")
    assert proc.returncode == 0, proc.stderr
    assert "task args of open-vocab" in proc.stdout and "text_encoder" in proc.stdout
    assert "[/<pretrained>]" in proc.stdout


def test_ls_backbones_without_pattern_summarises_namespaces():
    proc = bob("ls", "backbones")
    assert proc.returncode == 0 and "timm/…" in proc.stdout and "architectures" in proc.stdout


def test_run_writes_results_and_prints_a_table(tmp_path):
    results = tmp_path / "results"
    proc = bob(
        "run",
        "-b",
        TINY,
        "-w",
        "random",
        "-t",
        "knn/digits",
        "--results-dir",
        str(results),
        "--num-workers",
        "0",
    )
    assert proc.returncode == 0, proc.stderr
    assert "knn/digits" in proc.stdout and "top1" in proc.stdout
    files = list(results.rglob("*.json"))
    assert len(files) == 1 and read_result(files[0]).ok
    again = bob("run", "-b", TINY, "-w", "random", "-t", "knn/digits", "--results-dir", str(results), "-q")
    assert again.returncode == 0 and "already done" in again.stderr


BAD_INPUT = [
    (
        ["-b", "timm/resnet5O", "-t", "knn/digits"],
        "Unknown backbone 'timm/resnet5O'. Did you mean: timm/resnet50",
    ),
    (["-b", TINY, "-t", "knn/digitz"], "Unknown task 'knn/digitz'. Did you mean: knn/digits"),
    (["-b", TINY, "-t", "linear-prob/digits"], "Did you mean: linear-probe/digits"),
    (["-b", TINY, "-t", "knn/digits", "--task-arg", "k"], "Malformed --task-arg 'k'"),
    (
        ["-b", TINY, "-t", "knn/digits", "--task-arg", "kk=3"],
        "Unknown task arg for knn/digits 'kk'. Did you mean: k",
    ),
    (["-b", TINY, "-t", "knn/digits", "--task-arg", "k=three"], "takes an integer, got 'three'"),
    (["-b", TINY, "-t", "knn/digits", "--task-arg", "k=0"], "k must be a positive integer"),
    (
        ["-b", TINY, "-t", "knn/digits", "-t", "linear-probe/digits", "-a", "k=3"],
        "--task-arg SUITE:KEY=VALUE",
    ),
    (["-b", TINY, "-t", "knn/digits", "-a", "knnn:k=3"], "Unknown task suite 'knnn'"),
    (["-b", TINY, "-t", "knn/digits", "-w", "pretrianed"], "'pretrained', 'random' or the path"),
    (["-b", TINY, "-t", "knn/digits", "--device", "cuda:7"], "CUDA is not available"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_exits_2_with_one_clear_paragraph(tmp_path, args, message):
    proc = bob("run", *args, "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("*.json")), "nothing is written"


def test_unknown_listing_kind_exits_2():
    proc = bob("ls", "models")
    assert proc.returncode == 2 and "Unknown listing 'models'" in proc.stderr


def test_missing_weights_fail_the_run_with_exit_1(tmp_path):
    results = tmp_path / "r"
    proc = bob(
        "run",
        "-b",
        "torchvision/mobilenet_v2",
        "-t",
        "knn/digits",
        "--results-dir",
        str(results),
        env={"BOB_WEIGHTS_PATH": ""},
    )
    assert proc.returncode == 1
    assert "mobilenet_v2-b0353104.pth" in proc.stderr and "--weights random" in proc.stderr
    assert "Traceback" not in proc.stderr
    (path,) = results.rglob("*.json")
    result = read_result(path)
    assert result.status == "failed" and result.error["type"] == "WeightsError"


def test_corrupt_result_file_exits_2_and_is_untouched(tmp_path):
    from bob.results import ResultStore
    from bob.spec import make_spec

    results = tmp_path / "r"
    path: Path = ResultStore(results).path_for(make_spec(TINY, "knn/digits", "random"))
    path.parent.mkdir(parents=True)
    path.write_text("{")
    proc = bob("run", "-b", TINY, "-w", "random", "-t", "knn/digits", "--results-dir", str(results))
    assert proc.returncode == 2 and "is not valid JSON" in proc.stderr and "--overwrite" in proc.stderr
    assert path.read_text() == "{"


def test_debug_shows_the_traceback(tmp_path):
    proc = bob(
        "--debug",
        "run",
        "-b",
        TINY,
        "-w",
        "random",
        "-t",
        "knn/digits",
        "--backbone-arg",
        "bogus=1",
        "--results-dir",
        str(tmp_path / "r"),
        "-q",
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "bogus" in proc.stderr
