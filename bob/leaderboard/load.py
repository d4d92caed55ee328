"""Result files → one long table: one row per run, plus a report of every file that was skipped and why.

Only files that pass the result schema (`bob.results.read_result`) and carry what a leaderboard needs
(a task block naming the main metric and its direction, a finite main-metric value for ok runs) become
rows. Anything else is skipped with its path and the reason; nothing is guessed, so a damaged file can
never change the numbers silently.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bob.errors import ResultFileError, UsageError
from bob.results import RunResult

# The columns of the long table, in order (the run's metrics follow as `metric:<name>` columns).
LONG_COLUMNS = [
    "id",
    "status",
    "backbone",
    "weights",
    "weights_path",
    "backbone_args",
    "backbone_key",
    "family",
    "method",
    "pretrain_data",
    "params",
    "is_random",
    "task",
    "suite",
    "dataset",
    "task_version",
    "task_args",
    "main_metric",
    "higher_is_better",
    "value",
    "seed",
    "total_s",
    "created_at",
    "error",
    "path",
]


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class LoadedResults:
    """`runs`: one row per ok run; `failed`: one row per failed run (never averaged in);
    `not_applicable`: one row per run whose task did not apply to its backbone (status `skipped`),
    kept off the board and out of the failures."""

    runs: pd.DataFrame
    failed: pd.DataFrame
    skipped: list[Skipped] = field(default_factory=list)
    files_seen: int = 0
    not_applicable: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LONG_COLUMNS))


def _canonical(obj: Any) -> str:
    return json.dumps(obj or {}, sort_keys=True, separators=(",", ":"), default=str)


def backbone_key(name: str, weights: str, backbone_args: dict[str, Any]) -> str:
    """How a backbone is named on the board: name, weights, and its args when it has any."""
    key = f"{name} [{weights}]"
    return f"{key} {_canonical(backbone_args)}" if backbone_args else key


_SHA256 = re.compile(r"[0-9a-f]{64}")
WEIGHTS_DIGEST_CHARS = 8  # `sha256:1a2b3c4d`, as short as a git commit and as unlikely to collide on a board


def weights_label(weights: str, recorded: Any) -> str:
    """The board's name for a run's weights: `pretrained`, `random`, or a weights file's short sha256
    (`sha256:1a2b3c4d`) from the provenance the run recorded (`backbone.weights.sha256`), so the same
    checkpoint at two paths is one backbone and two files at one path are two. A result without that
    record (written before bob recorded it) keeps the path it was given."""
    if weights in ("pretrained", "random"):
        return weights
    sha = recorded.get("sha256") if isinstance(recorded, dict) else None
    if isinstance(sha, str) and _SHA256.fullmatch(sha.lower()):
        return f"sha256:{sha.lower()[:WEIGHTS_DIGEST_CHARS]}"
    return weights


class _Invalid(Exception):
    pass


def _need(cond: bool, reason: str) -> None:
    if not cond:
        raise _Invalid(reason)


def _row(rel: str, data: RunResult) -> dict[str, Any]:
    """Validate one parsed RunResult and flatten it; raises _Invalid with the reason."""
    spec, task, meta = data.spec, data.task, data.backbone
    _need(isinstance(spec, dict), "`spec` is not an object")
    _need(isinstance(task, dict) and task, "no `task` block (suite, main_metric, higher_is_better)")
    _need(isinstance(meta, dict), "`backbone` is not an object")
    _need(isinstance(data.metrics, dict), "`metrics` is not an object")
    for key in ("backbone", "task", "weights"):
        _need(isinstance(spec.get(key), str) and spec[key], f"spec.{key} is missing or not a string")
    seed = spec.get("seed", 0)
    _need(isinstance(seed, int) and not isinstance(seed, bool), "spec.seed is not an integer")
    _need(isinstance(spec.get("task_args", {}), dict), "spec.task_args is not an object")
    _need(isinstance(spec.get("backbone_args", {}), dict), "spec.backbone_args is not an object")
    main, hib = task.get("main_metric"), task.get("higher_is_better")
    _need(isinstance(main, str) and main, "task.main_metric is missing")
    _need(isinstance(hib, bool), "task.higher_is_better is missing or not true/false")
    _need(task.get("name", spec["task"]) == spec["task"], "task.name disagrees with spec.task")
    suite, _, dataset = spec["task"].partition("/")
    suite, dataset = task.get("suite") or suite, task.get("dataset") or dataset
    _need(isinstance(suite, str) and isinstance(dataset, str), "task.suite or task.dataset is not a string")
    value = data.metrics.get(main)
    if data.status == "ok":
        _need(
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
            f"ok run without a finite value for its main metric {main!r}",
        )
    params = meta.get("params")
    _need(params is None or (isinstance(params, (int, float)) and params >= 0), "backbone.params is invalid")
    error = data.error if isinstance(data.error, dict) else {}
    b_args = spec.get("backbone_args") or {}
    weights = weights_label(spec["weights"], meta.get("weights"))
    return {
        "id": str(data.id),
        "status": data.status,
        "backbone": spec["backbone"],
        "weights": weights,
        "weights_path": "" if weights == spec["weights"] else spec["weights"],
        "backbone_args": _canonical(b_args) if b_args else "",
        "backbone_key": backbone_key(spec["backbone"], weights, b_args),
        "family": str(meta.get("family") or "unknown"),
        "method": str(meta.get("method") or "unknown"),
        "pretrain_data": str(meta.get("pretrain_data") or "unknown"),
        "params": float(params) if params is not None else math.nan,
        # A weights file is trained weights whatever the factory calls its method: never a baseline.
        "is_random": spec["weights"] == "random"
        or (spec["weights"] == "pretrained" and meta.get("method") == "random"),
        "task": spec["task"],
        "suite": suite,
        "dataset": dataset,
        "task_version": str(spec.get("task_version", "")),
        "task_args": _canonical(spec.get("task_args")),
        "main_metric": main,
        "higher_is_better": hib,
        "value": float(value) if data.status == "ok" else math.nan,
        "seed": seed,
        "total_s": (data.timings or {}).get("total_s", math.nan),
        "created_at": str(data.created_at or ""),
        "error": f"{error.get('type', '')}: {error.get('message', '')}".strip(": ")
        if error
        else data.reason or "",
        "path": rel,
        "metrics": {k: v for k, v in data.metrics.items() if isinstance(v, (int, float))},
        # The per-sample file's record (file, sha256, kind): the intervals read it without reparsing.
        "samples_record": data.protocol.get("samples") if isinstance(data.protocol, dict) else None,
    }


def _result_files(root: Path) -> list[str]:
    """Every `*.json` under root, as sorted paths relative to it (os.walk: pathlib is slow at 10^4 files)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found += [prefix + f for f in filenames if f.endswith(".json")]
    return sorted(found)


def _read(path: str) -> RunResult:
    """`bob.results.read_result`, reading bytes (json decodes UTF-8 itself, faster than text mode)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as err:
        raise ResultFileError(f"Result file is not text ({err.reason}).") from err
    except json.JSONDecodeError as err:
        raise ResultFileError(
            f"Result file is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})."
        ) from err
    return RunResult.from_dict(data, "")


def load_results(results_dir: Path | str) -> LoadedResults:
    """Every `*.json` under `results_dir` as a row, or as a Skipped entry with the reason."""
    root = Path(results_dir)
    if root.exists() and not root.is_dir():
        raise UsageError(
            f"Results dir {root} is a file, not a folder of result files. Pass --results-dir DIR, the "
            "folder `bob run` and `bob sweep` write to (default results/raw)."
        )
    rows: list[dict[str, Any]] = []
    skipped: list[Skipped] = []
    seen_ids: dict[str, str] = {}
    paths = _result_files(root) if root.is_dir() else []
    base = str(root) + os.sep
    for rel in paths:
        try:
            row = _row(rel, _read(base + rel))
        except ResultFileError as err:
            skipped.append(Skipped(rel, " ".join(str(err).split())))
            continue
        except (_Invalid, TypeError, ValueError, AttributeError) as err:
            skipped.append(Skipped(rel, f"not a usable result: {err}"))
            continue
        if row["id"] in seen_ids:
            skipped.append(
                Skipped(rel, f"duplicate of run {row['id']} already read from {seen_ids[row['id']]}")
            )
            continue
        seen_ids[row["id"]] = rel
        rows.append(row)
    rows = _one_per_checkpoint(rows, skipped)
    frame = _frame(rows)
    ok, na = frame["status"] == "ok", frame["status"] == "skipped"
    return LoadedResults(
        runs=frame[ok].reset_index(drop=True),
        failed=frame[~ok & ~na].reset_index(drop=True),
        skipped=skipped,
        files_seen=len(paths),
        not_applicable=frame[na].reset_index(drop=True),
    )


def _one_per_checkpoint(rows: list[dict[str, Any]], skipped: list[Skipped]) -> list[dict[str, Any]]:
    """One ok run per (checkpoint, task, args, seed): the same weights file run from two paths has two
    run ids (the path is in the id) but is one measurement, so the later copy is skipped, not averaged
    in as a second seed."""
    seen: dict[tuple[Any, ...], str] = {}
    kept = []
    for row in rows:
        if row["status"] == "ok" and row["weights_path"]:
            key = (row["backbone_key"], row["task"], row["task_version"], row["task_args"], row["seed"])
            if key in seen:
                skipped.append(
                    Skipped(
                        row["path"],
                        f"the same checkpoint ({row['weights']}), task, args and seed as {seen[key]}; "
                        f"its weights file was at another path ({row['weights_path']})",
                    )
                )
                continue
            seen[key] = row["path"]
        kept.append(row)
    return kept


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    metrics = [row.pop("metrics") for row in rows]
    records = [row.pop("samples_record") for row in rows]
    frame = pd.DataFrame(rows, columns=LONG_COLUMNS)
    # Kept beside the long columns, so the intervals read each run's record without reparsing its file.
    frame["samples_record"] = pd.Series(records, index=frame.index, dtype=object)
    if rows:
        extra = pd.DataFrame(metrics).add_prefix("metric:")
        frame = pd.concat([frame, extra.set_index(frame.index)], axis=1)
    frame["is_random"] = frame["is_random"].astype(bool)
    frame["higher_is_better"] = frame["higher_is_better"].astype(bool)
    return frame
