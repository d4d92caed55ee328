"""RunResult (one JSON file per run) and the ResultStore that reads and writes them.

Layout: `<results_dir>/<suite>/<dataset>/<backbone slug>/<run id>.json`, artifacts (e.g. a
probe's head) beside it as `<run id>.<name>.pt`. Files are written atomically (temp file + rename);
an existing file that cannot be parsed is reported and never overwritten unless asked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bob.errors import ResultFileError
from bob.spec import RunSpec, slug
from bob.weights import atomic_write_text

SCHEMA_VERSION = 1
# `skipped`: the task does not apply to the backbone (TaskNotApplicable); `reason` says why.
STATUSES = ("ok", "failed", "skipped")


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as null rather than writing invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


@dataclass
class RunResult:
    id: str
    status: str
    spec: dict[str, Any]
    backbone: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    created_at: str = ""
    schema_version: int = SCHEMA_VERSION
    reason: str | None = None  # why a `skipped` run did not apply; absent from the JSON otherwise
    sweep: str | None = None  # the sweep invocation that wrote it; absent for `bob run` results

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def settled(self) -> bool:
        """Done for good: ok, or skipped because the task does not apply (re-running changes nothing)."""
        return self.status in ("ok", "skipped")

    @property
    def main_metric(self) -> tuple[str, float | None]:
        name = self.task.get("main_metric", "")
        return name, self.metrics.get(name)

    def to_json(self) -> str:
        data = asdict(self)
        for optional in ("reason", "sweep"):
            if data[optional] is None:
                del data[optional]  # results without them keep the layout they always had
        return json.dumps(_finite(data), indent=2, sort_keys=False, default=str) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: Path | str = "<memory>") -> RunResult:
        if not isinstance(data, dict):
            raise ResultFileError(f"Result file {source} does not hold a JSON object.")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultFileError(
                f"Result file {source} has schema_version {version!r}; this bob reads version {SCHEMA_VERSION}. "
                "It was written by another bob version; upgrade bob or re-run the run."
            )
        missing = [k for k in ("id", "status", "spec") if k not in data]
        if missing or data.get("status") not in STATUSES:
            raise ResultFileError(
                f"Result file {source} is not a bob result (missing {missing or 'a valid status'})."
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class ResultStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._folders: dict[tuple[str, str], Path] = {}  # (task, backbone) -> folder: sweeps ask 10^6 times

    def folder_for(self, task: str, backbone: str) -> Path:
        folder = self._folders.get((task, backbone))
        if folder is None:
            suite, _, dataset = task.partition("/")
            folder = self._folders[(task, backbone)] = (
                self.root / slug(suite) / slug(dataset) / slug(backbone)
            )
        return folder

    def path_for(self, spec: RunSpec) -> Path:
        return self.folder_for(spec.task, spec.backbone) / f"{spec.id}.json"

    def artifact_path(self, spec: RunSpec, name: str) -> Path:
        return self.path_for(spec).with_suffix(f".{slug(name)}.pt")

    def load(self, spec: RunSpec) -> RunResult | None:
        """The stored result of `spec`, None if absent. A damaged file raises ResultFileError."""
        path = self.path_for(spec)
        if not path.exists():
            return None
        return read_result(path)

    def write(self, result: RunResult, spec: RunSpec) -> Path:
        path = self.path_for(spec)
        atomic_write_text(path, result.to_json(), "result")
        return path

    def iter_results(self) -> Iterator[tuple[Path, RunResult | ResultFileError]]:
        """Every result file under the root; unreadable ones come back as their error, not raised."""
        for path in sorted(self.root.rglob("*.json")):
            try:
                yield path, read_result(path)
            except ResultFileError as err:
                yield path, err


def read_result(path: Path) -> RunResult:
    try:
        data = json.loads(Path(path).read_text())
    except UnicodeDecodeError as err:
        raise ResultFileError(f"Result file {path} is not text ({err.reason}).") from err
    except json.JSONDecodeError as err:
        raise ResultFileError(
            f"Result file {path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})."
        ) from err
    return RunResult.from_dict(data, path)
