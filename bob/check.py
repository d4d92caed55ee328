"""`bob check`: the submission gate for a backbone.

Runs the contract checks (resolution, build, pooled shape and finiteness, eval-mode determinism,
batch-size invariance, feature levels against `feature_info`, parameter count) and then a mock run of
every task suite on a tiny generated dataset (at most `MOCK_LIMIT` samples per split, through the
`limit` task arg, where the suite sets no limit of its own and its data takes one), in a throwaway
results dir and feature cache: nothing is written to the user's results. Each check passes, fails (with the reason) or is skipped (with the
reason); any failure makes the command exit 1.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bob.backbones import resolve_backbone
from bob.backbones.base import Backbone, check_pooled
from bob.data import dataset_info
from bob.data.base import LIMIT_TASK_TYPES
from bob.errors import UsageError
from bob.registry import match
from bob.runner import RunOptions, execute
from bob.spec import make_spec, validate_backbone_name
from bob.suites import SUITES
from bob.weights import WeightsRequest

DEFAULT_SIZE = 64
# Samples per split of a mock run (the `limit` task arg) where the suite's own check args set none and
# its check dataset takes one: every class of the 10-class mock sets keeps several samples per split.
MOCK_LIMIT = 40


@dataclass
class CheckResult:
    name: str
    status: str  # "pass" | "fail" | "skip"
    detail: str = ""
    seconds: float = 0.0


class _Skip(Exception):
    pass


def _run(
    results: list[CheckResult], name: str, fn: Callable[[], str | None], usage_errors_raise: bool = False
) -> bool:
    """Run one check into `results`. With `usage_errors_raise`, bad input (a UsageError: an unknown
    name, a factory the file does not define) stops the command with exit 2 instead of a failed row."""
    start = time.perf_counter()
    try:
        detail = fn() or ""
        results.append(CheckResult(name, "pass", detail, time.perf_counter() - start))
        return True
    except _Skip as skip:
        results.append(CheckResult(name, "skip", str(skip), time.perf_counter() - start))
        return True
    except Exception as err:  # a check reports every failure, whatever raised it
        if usage_errors_raise and isinstance(err, UsageError):
            raise
        results.append(CheckResult(name, "fail", f"{type(err).__name__}: {err}", time.perf_counter() - start))
        return False


# Each contract check takes the model in eval mode and a fixed batch of 3 images; it returns the
# detail to show, raises _Skip, or raises with the reason it fails.


def _pooled(model: Backbone, x: torch.Tensor) -> str:
    with torch.no_grad():
        out = check_pooled(model.meta.name, model.forward_pooled(x), 3)
    declared = model.meta.pooled_dim
    if declared is not None and out.shape[1] != declared:
        raise AssertionError(
            f"pooled dimension {out.shape[1]} differs from the declared pooled_dim {declared}"
        )
    return f"[B, {out.shape[1]}], finite"


def _determinism(model: Backbone, x: torch.Tensor) -> str:
    with torch.no_grad():
        a, b = model.forward_pooled(x), model.forward_pooled(x)
    if not torch.allclose(a, b, atol=1e-5, rtol=1e-4):
        raise AssertionError(f"two eval-mode passes differ by up to {(a - b).abs().max().item():.3g}")
    return "two passes agree"


def _batch_invariance(model: Backbone, x: torch.Tensor) -> str:
    with torch.no_grad():
        batched = model.forward_pooled(x)
        single = torch.cat([model.forward_pooled(x[i : i + 1]) for i in range(len(x))])
    if not torch.allclose(batched, single, atol=1e-4, rtol=1e-3):
        diff = (batched - single).abs().max().item()
        raise AssertionError(f"an image's features depend on its batch (max difference {diff:.3g})")
    return "batch of 3 = 3 batches of 1"


def _features(model: Backbone, x: torch.Tensor) -> str:
    if not model.feature_info:
        raise _Skip("no feature levels: dense suites (detection, segmentation) will not run")
    size = x.shape[-1]
    with torch.no_grad():
        maps = model.forward_features(x[:1])
    for fmap, info in zip(maps, model.feature_info, strict=True):
        expect = {size // info.stride, -(-size // info.stride)}
        if fmap.ndim != 4 or fmap.shape[1] != info.channels or fmap.shape[2] not in expect:
            raise AssertionError(f"level {info} produced {tuple(fmap.shape)}")
        if not torch.isfinite(fmap).all():
            raise AssertionError(f"level {info} has non-finite values")
    return f"{len(maps)} levels, strides {[i.stride for i in model.feature_info]}"


def _params(model: Backbone, x: torch.Tensor) -> str:
    counted = sum(p.numel() for p in model.parameters())
    if model.meta.params not in (None, counted):
        raise AssertionError(f"meta.params {model.meta.params} != {counted} counted in the module")
    return f"{counted:,}"


CONTRACT_CHECKS = (
    ("pooled output", _pooled),
    ("eval determinism", _determinism),
    ("batch-size invariance", _batch_invariance),
    ("feature levels", _features),
    ("parameter count", _params),
)


def _contract_checks(model: Backbone, size: int, results: list[CheckResult]) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 3, size, size)
    model.eval()
    for check, fn in CONTRACT_CHECKS:
        _run(results, check, functools.partial(fn, model, x))


def selected_suites(pattern: str) -> set[str]:
    """The suite names `--suites` selects (globs, comma-separated); none is a usage error listing them."""
    names = SUITES.names()
    selected = {name for part in pattern.split(",") if part.strip() for name in match(part.strip(), names)}
    if not selected:
        raise UsageError(f"--suites '{pattern}' matches no suite; the suites are: {', '.join(names)}.")
    return selected


def _mock_runs(
    backbone: str,
    weights: str,
    backbone_args: dict[str, Any],
    size: int,
    results: list[CheckResult],
    dense: bool = True,
    suites: str = "*",
) -> None:
    selected = selected_suites(suites)
    with tempfile.TemporaryDirectory(prefix="bob-check-") as tmp:
        options = RunOptions(Path(tmp) / "results", Path(tmp) / "cache", device="cpu", num_workers=0)
        for cls in SUITES.classes():
            if cls.suite not in selected:
                results.append(
                    CheckResult(f"mock run: {cls.suite}", "skip", f"not selected by --suites {suites}")
                )
                continue
            if "features" in cls.needs and not dense:
                reason = "skipped: the backbone declares no feature levels, which this dense suite needs"
                results.append(CheckResult(f"mock run: {cls.suite}", "skip", reason))
                continue
            mock_args = mock_task_args(cls.check_args, cls.check_dataset, size)

            def run_suite(
                suite: str = cls.suite, args: dict[str, str] = mock_args, dataset: str = cls.check_dataset
            ) -> str:
                spec = make_spec(backbone, f"{suite}/{dataset}", weights, 0, backbone_args, args)
                outcome = execute(spec, options)
                if outcome.result.status == "skipped":  # the task does not apply (zero-shot, no text tower)
                    raise _Skip(f"not applicable: {outcome.result.reason}")
                if not outcome.result.ok:
                    error = outcome.result.error or {}
                    raise AssertionError(f"{error.get('type')}: {error.get('message')}")
                metric, value = outcome.result.main_metric
                return f"{metric} = {value:.3f} on {dataset} (a smoke test, not a benchmark)"

            _run(results, f"mock run: {cls.suite}", run_suite)


def mock_task_args(check_args: dict[str, str], dataset: str, size: int) -> dict[str, str]:
    """A suite's mock-run task args: its own check args at the check's image size, with at most
    `MOCK_LIMIT` samples per split where they set no limit and the dataset takes one."""
    args = {**check_args, "image_size": str(size)}
    if MOCK_LIMIT and "limit" not in args and dataset_info(dataset).task_type in LIMIT_TASK_TYPES:
        args["limit"] = str(MOCK_LIMIT)
    return args


def check_backbone(
    backbone: str,
    weights: str = "pretrained",
    backbone_args: dict[str, Any] | None = None,
    image_size: int = DEFAULT_SIZE,
    mock_runs: bool = True,
    suites: str = "*",
) -> list[CheckResult]:
    """Every check, in order; later checks are skipped when the backbone cannot be built.
    `mock_runs=False` stops after the contract checks (the gate `bob sweep` applies)."""
    if mock_runs:
        selected_suites(suites)  # a bad pattern stops before anything is built
    # Bad input is a usage error (exit 2) before anything is built, not a failed check: an unknown
    # name (with did-you-mean), a factory its file does not define, a weights file that is not there.
    validate_backbone_name(backbone)
    WeightsRequest.parse(weights)
    results: list[CheckResult] = []
    args = dict(backbone_args or {})
    state: dict[str, Any] = {}

    def resolve() -> str:
        state["ref"] = resolve_backbone(backbone, weights, args)
        return f"{state['ref'].resolved_name} ({state['ref'].adapter}, weights {state['ref'].weights.kind})"

    def build() -> str:
        state["model"] = state["ref"].build(image_size)
        meta = state["model"].meta
        return f"family {meta.family}, method {meta.method}, {meta.params:,} parameters"

    if _run(results, "resolve", resolve, usage_errors_raise=True) and _run(results, "build", build):
        _contract_checks(state["model"], image_size, results)
        if not mock_runs:
            return results
        if all(r.status != "fail" for r in results):
            dense = bool(state["model"].feature_info)
            _mock_runs(backbone, weights, args, image_size, results, dense, suites)
            return results
    results.append(CheckResult("mock runs", "skip", "skipped: fix the failures above first"))
    return results
