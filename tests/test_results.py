"""RunSpec identity, the result store, resume, failures recorded as data, and writes the disk refuses."""

from __future__ import annotations

import errno
import json
import os

import pytest

import bob.backbones
from bob.errors import ResultFileError, StorageError
from bob.results import SCHEMA_VERSION, ResultStore, RunResult, read_result
from bob.runner import RunOptions, execute
from bob.spec import make_spec

TINY = "timm/test_resnet"


def _options(results_dir, cache_dir, **kw) -> RunOptions:
    return RunOptions(results_dir=results_dir, cache_dir=cache_dir, device="cpu", num_workers=0, **kw)


def test_spec_id_is_stable_and_fills_defaults():
    a = make_spec(TINY, "linear-probe/digits", "random")
    b = make_spec(TINY, "linear-probe/digits", "random", task_args={"epochs": "10", "root": "/somewhere"})
    c = make_spec(TINY, "linear-probe/digits", "random", seed=1)
    assert a.id == b.id and a.id != c.id
    assert a.task_args["epochs"] == 10 and "root" not in a.task_args
    assert a.task_version == "1" and len(a.id) == 16
    assert a.id == make_spec(TINY, "linear-probe/digits", "random").id


def test_result_roundtrip_and_schema_checks(tmp_path):
    result = RunResult(id="x", status="ok", spec={}, metrics={"top1": 0.5, "bad": float("nan")})
    path = tmp_path / "r.json"
    path.write_text(result.to_json())
    loaded = read_result(path)
    assert loaded.metrics == {"top1": 0.5, "bad": None}, "NaN is stored as null, keeping the file valid JSON"
    data = json.loads(path.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(ResultFileError, match="schema_version"):
        read_result(path)
    path.write_text('{"id": "x", ')
    with pytest.raises(ResultFileError, match="not valid JSON"):
        read_result(path)


def test_run_writes_one_json_and_resume_skips_it(results_dir, cache_dir, monkeypatch):
    spec = make_spec(TINY, "knn/digits", "random")
    first = execute(spec, _options(results_dir, cache_dir))
    assert first.result.ok and not first.skipped
    assert first.path == ResultStore(results_dir).path_for(spec) and first.path.exists()
    stored = read_result(first.path)
    assert stored.id == spec.id and stored.task["main_metric"] == "top1" and 0 < stored.metrics["top1"] <= 1
    assert stored.env["torch"] and stored.backbone["weights"]["kind"] == "random"
    assert list(results_dir.rglob("*.json")) == [first.path]

    monkeypatch.setattr(
        bob.backbones, "resolve_backbone", lambda *a, **k: pytest.fail("a done run must be skipped")
    )
    again = execute(spec, _options(results_dir, cache_dir))
    assert again.skipped and again.result.metrics == stored.metrics


def test_a_run_that_raises_becomes_a_failed_result(results_dir, cache_dir):
    spec = make_spec(TINY, "knn/digits", "random", backbone_args={"no_such_kwarg": 1})
    outcome = execute(spec, _options(results_dir, cache_dir))
    assert outcome.result.status == "failed"
    error = read_result(outcome.path).error
    assert error["type"] == "TypeError" and "no_such_kwarg" in error["message"]
    assert any("Traceback" in line or "File" in line for line in error["traceback"])


def test_corrupt_result_file_is_reported_and_kept(results_dir, cache_dir):
    spec = make_spec(TINY, "knn/digits", "random")
    path = ResultStore(results_dir).path_for(spec)
    path.parent.mkdir(parents=True)
    path.write_text("{ truncated")
    with pytest.raises(ResultFileError, match="not valid JSON"):
        execute(spec, _options(results_dir, cache_dir))
    assert path.read_text() == "{ truncated"
    replaced = execute(spec, _options(results_dir, cache_dir, overwrite=True))
    assert replaced.result.ok and read_result(path).ok


def test_iter_results_reports_bad_files_without_raising(tmp_path):
    good = RunResult(id="a", status="ok", spec={})
    (tmp_path / "a.json").write_text(good.to_json())
    (tmp_path / "b.json").write_text("[]")
    found = dict(ResultStore(tmp_path).iter_results())
    assert isinstance(found[tmp_path / "a.json"], RunResult)
    assert isinstance(found[tmp_path / "b.json"], ResultFileError)


def test_result_files_get_the_usual_file_mode(tmp_path):
    import os

    from bob.weights import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644, "readable in a shared results folder"
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600, "the umask is respected"


def test_the_sweep_token_is_kept_and_absent_outside_sweeps(tmp_path):
    spec = make_spec(TINY, "knn/digits", "random")
    plain = RunResult(id=spec.id, status="ok", spec=spec.to_dict())
    assert "sweep" not in json.loads(plain.to_json())  # `bob run` results keep their layout
    swept = RunResult(id=spec.id, status="ok", spec=spec.to_dict(), sweep="a1b2")
    path = ResultStore(tmp_path).write(swept, spec)
    assert read_result(path).sweep == "a1b2"


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (errno.ENOSPC, "no space left on the device"),
        (errno.EROFS, "the file system is read-only"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_a_refused_result_write_is_one_line_and_leaves_the_old_file(tmp_path, monkeypatch, code, cause):
    import bob.weights

    spec = make_spec(TINY, "knn/digits", "random")
    store = ResultStore(tmp_path)
    path = store.write(RunResult(id=spec.id, status="failed", spec=spec.to_dict()), spec)
    before = path.read_text()

    def refuse(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(bob.weights.os, "fsync", refuse)
    with pytest.raises(StorageError) as err:
        store.write(RunResult(id=spec.id, status="ok", spec=spec.to_dict()), spec)
    assert str(err.value).startswith(f"Cannot write result {path}: {cause}")
    assert "\n" not in str(err.value)
    assert path.read_text() == before, "the stored result is untouched"
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temp file is left behind"


def test_a_refused_artifact_write_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """A full disk while saving a head or checkpoint: StorageError with the path and the cause, no temp file left."""
    import errno

    import torch

    from bob.context import RunContext
    from bob.errors import StorageError
    from bob.spec import make_spec

    def full_disk(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    spec = make_spec("timm/test_resnet", "linear-probe/shapes-mini", "random")
    ctx = RunContext.__new__(RunContext)
    ctx.spec, ctx.store = spec, ResultStore(tmp_path / "raw")
    with pytest.raises(StorageError, match=r"Cannot write the head artifact .*: no space left on the device"):
        ctx.save_artifact("head", {"w": 1})
    assert not [p for p in (tmp_path / "raw").rglob("*") if p.is_file()]
