"""Experiment trackers: a settled run is mirrored to MLflow (a local file store) and to W&B (offline
mode), through their own libraries; asking for one is checked before any run; a tracker that fails
never fails the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bob import trackers
from bob.errors import UsageError
from bob.results import ResultStore, RunResult
from bob.spec import RunSpec


def _run(tmp_path: Path, status: str = "ok") -> tuple[RunSpec, RunResult, Path]:
    spec = RunSpec(
        "timm/test_resnet",
        "knn/shapes-mini",
        "random",
        3,
        {"precision": "bf16"},
        {"k": 20, "metric": "cosine"},
        "1",
    )
    result = RunResult(
        id=spec.id,
        status=status,
        spec=spec.to_dict(),
        metrics={"top1": 0.625, "top5": 1.0, "n_test": 40, "per_class": [0.5, 0.75]},
    )
    path = ResultStore(tmp_path / "raw").write(result, spec)
    return spec, result, path


def test_params_flatten_the_identity_and_metrics_keep_only_numbers(tmp_path: Path) -> None:
    spec, result, _ = _run(tmp_path)
    params = trackers.run_params(spec)
    assert params["run_id"] == spec.id and params["suite"] == "knn" and params["seed"] == "3"
    assert params["task.k"] == "20" and params["task.metric"] == "cosine"
    assert params["backbone.precision"] == "bf16"
    assert trackers.numeric_metrics(result) == {"top1": 0.625, "top5": 1.0, "n_test": 40.0}


def test_unknown_or_missing_tracker_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(trackers.ENV, raising=False)
    with pytest.raises(UsageError, match="Unknown tracker 'tensorboardx'"):
        trackers.tracker_names(["tensorboardx"])
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match="pip install mlflow-skinny"):
        trackers.tracker_names(["mlflow"])


def test_names_come_from_flags_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(trackers.ENV, "wandb, mlflow")
    assert trackers.tracker_names(["mlflow"]) == ("mlflow", "wandb")
    monkeypatch.delenv(trackers.ENV)
    assert trackers.tracker_names() == ()


def test_mlflow_file_store_gets_one_run_with_params_metrics_and_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(store))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "bob-test")
    spec, result, path = _run(tmp_path)
    assert trackers.log_run(["mlflow"], spec, result, path) == []

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiment = client.get_experiment_by_name("bob-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == spec.label and run.info.status == "FINISHED"
    assert run.data.metrics == {"top1": 0.625, "top5": 1.0, "n_test": 40.0}
    assert run.data.params["task.k"] == "20" and run.data.tags["bob.run_id"] == spec.id
    (artifact,) = client.list_artifacts(run.info.run_id)
    local = Path(client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path / "dl")))
    assert json.loads(local.read_text())["id"] == spec.id


def test_wandb_offline_run_holds_config_and_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec, result, path = _run(tmp_path, status="failed")
    assert trackers.log_run(["wandb"], spec, result, path) == []
    import wandb

    wandb.teardown()  # the W&B service flushes its log when it stops (at exit in a real run)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    # Offline, W&B writes its records (config, summary) into the run's protobuf log for `wandb sync`;
    # their keys and JSON-encoded values appear there verbatim.
    (log_file,) = run_dir.glob("run-*.wandb")
    records = log_file.read_bytes()
    for text in (spec.id, "task.k", "top1", "0.625", "bob_status", '"failed"', spec.label):
        assert text.encode() in records, text
    assert (run_dir / "files" / path.name).read_bytes() == path.read_bytes()


def test_a_failing_tracker_warns_and_leaves_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def log_run(self, spec: RunSpec, result: RunResult, path: Path) -> None:
            raise ConnectionError("server unreachable")

    monkeypatch.setitem(trackers.TRACKERS, "mlflow", (Broken, "mlflow", "mlflow-skinny"))
    spec, result, path = _run(tmp_path)
    before = path.read_bytes()
    (warning,) = trackers.log_run(["mlflow"], spec, result, path)
    assert "tracker mlflow could not log run" in warning and "server unreachable" in warning
    assert path.read_bytes() == before


def test_bob_run_mirrors_each_run_to_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    pytest.importorskip("mlflow")
    from tests.cli_harness import TINY, invoke

    monkeypatch.delenv(trackers.ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "mlruns"))
    argv = ["run", "-b", TINY, "-w", "random", "-t", "knn/shapes-mini", "-s", "0", "-s", "1"]
    argv += ["--results-dir", str(tmp_path / "raw"), "--cache-dir", str(tmp_path / "cache"), "-q"]
    code, out = invoke([*argv, "--tracker", "mlflow"], capsys)
    assert code == 0, out
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    runs = client.search_runs([client.get_experiment_by_name("bob").experiment_id])
    stored = {json.loads(p.read_text())["id"]: p for p in (tmp_path / "raw").rglob("*.json")}
    assert sorted(r.data.tags["bob.run_id"] for r in runs) == sorted(stored)
    for r in runs:
        result = json.loads(stored[r.data.tags["bob.run_id"]].read_text())
        assert r.data.metrics["top1"] == pytest.approx(result["metrics"]["top1"])
    code, out = invoke([*argv, "--tracker", "mlflow"], capsys)  # already done: not logged twice
    assert code == 0 and len(client.search_runs([runs[0].info.experiment_id])) == 2


def test_an_unknown_tracker_stops_bob_run_before_anything_runs(tmp_path: Path, capsys) -> None:
    from tests.cli_harness import TINY, invoke

    argv = ["run", "-b", TINY, "-w", "random", "-t", "knn/shapes-mini", "--tracker", "neptune"]
    code, out = invoke([*argv, "--results-dir", str(tmp_path / "raw")], capsys)
    assert code == 2 and "Unknown tracker 'neptune'" in out
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").rglob("*.json"))
