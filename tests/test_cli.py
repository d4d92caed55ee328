"""The command line: listings, a real run, exit codes and one-paragraph errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bob.cli import placed_flags
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


# ------------------------------------------------------------------- hardening (issue 17)


def test_check_table_titles_with_brackets_are_text_not_markup(capsys):
    """`bob check -w /abs/path.pth` titles its table `bob check X [/abs/path.pth]`, which rich once
    parsed as a closing tag and crashed on, after every check had run."""
    from bob.check import CheckResult
    from bob.cli.check import print_checks

    code = print_checks("bob check timm/x [/abs/path.pth]", [CheckResult("resolve", "pass", "[/x] ok")])
    assert code == 0
    out = capsys.readouterr().out
    assert "[/abs/path.pth]" in out and "[/x] ok" in out


@pytest.mark.slow
def test_check_with_an_absolute_weights_path_prints_its_table(tmp_path):
    import torch

    from bob.api import build_backbone

    path = tmp_path / "tiny.pth"
    torch.save(build_backbone(TINY, "random").model.state_dict(), path)
    proc = bob("check", "-b", TINY, "-w", str(path.resolve()), "--suites", "ncm")
    assert proc.returncode == 0, proc.stderr
    assert f"[{path.resolve()}]" in proc.stdout and "All checks passed" in proc.stdout


def test_a_full_disk_at_result_time_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    """The run computes, then its result cannot be written: one line naming the file and the cause
    (the write was atomic, so no partial file), exit 1 (a run failed), no traceback."""
    import errno
    import os

    import bob.weights
    from tests.cli_harness import invoke

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bob.weights.os, "fsync", full)
    results = tmp_path / "raw"
    args = ["run", "-b", TINY, "-w", "random", "-t", "knn/digits", "--results-dir", str(results), "-q"]
    code, text = invoke([*args, "--cache-dir", str(tmp_path / "cache")], capsys)
    flat = " ".join(text.split())
    assert code == 1, text
    assert "Cannot write result" in flat and "no space left on the device" in flat
    assert "Traceback" not in text
    assert not [p for p in results.rglob("*") if p.is_file()], "nothing half-written"
    assert os.environ.get("BOB_OFFLINE") == "1"


def test_a_full_cache_disk_fails_the_run_naming_the_entry(tmp_path, monkeypatch, capsys):
    import bob.cache
    from bob.results import read_result
    from tests.cli_harness import invoke

    def short_write(*args, **kwargs):
        raise OSError("689664 requested and 262112 written")

    monkeypatch.setattr(bob.cache.np, "save", short_write)
    results, cache = tmp_path / "raw", tmp_path / "cache"
    args = ["run", "-b", TINY, "-w", "random", "-t", "knn/digits", "--results-dir", str(results), "-q"]
    code, text = invoke([*args, "--cache-dir", str(cache)], capsys)
    flat = " ".join(text.split())
    assert code == 1 and "StorageError" in flat and "no space left on the device" in flat, text
    (path,) = results.rglob("*.json")
    error = read_result(path).error
    assert error["type"] == "StorageError" and str(cache) in error["message"]
    assert not [p for p in cache.rglob("*") if p.name.startswith(".tmp-")]


def test_low_free_space_is_a_warning_before_the_run(tmp_path, monkeypatch, caplog):
    import bob.preflight
    from bob.preflight import Target, require_writable_dirs

    monkeypatch.setattr(bob.preflight, "free_bytes", lambda path: 5 << 20)
    with caplog.at_level("WARNING", logger="bob.preflight"):
        require_writable_dirs([Target(tmp_path / "raw", "Results dir", "--results-dir")])
    assert "only 5.0 MB free on its disk" in caplog.text
    assert not (tmp_path / "raw").exists(), "the pre-flight check creates nothing"


@pytest.mark.parametrize(
    ("argv", "placed"),
    [
        (["run", "-b", "x", "--debug"], ["--debug", "run", "-b", "x"]),
        (["--debug", "run", "-b", "x"], ["--debug", "run", "-b", "x"]),
        (["--quiet", "sweep", "s.yaml"], ["sweep", "s.yaml", "--quiet"]),
        (["-q", "run", "--debug"], ["--debug", "run", "-q"]),
        (["cache", "list", "--debug"], ["--debug", "cache", "list"]),
        (["--quiet", "ls", "tasks"], ["--quiet", "ls", "tasks"]),  # ls has no --quiet: click says so
        (["run", "--", "--debug"], ["run", "--", "--debug"]),
        (["--debug"], ["--debug"]),
    ],
)
def test_debug_and_quiet_are_accepted_before_or_after_the_command(argv, placed):
    assert placed_flags(argv) == placed


def test_debug_after_the_command_shows_the_traceback(tmp_path):
    proc = bob(
        "run", "-b", TINY, "-w", "random", "-t", "knn/digits", "--backbone-arg", "bogus=1",
        "--results-dir", str(tmp_path / "r"), "--debug",
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "bogus" in proc.stderr
