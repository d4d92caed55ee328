"""The Python API: what the `bob` command line does, as functions a notebook calls in one line.

    >>> import bob
    >>> outcomes = bob.run("timm/test_resnet", "linear-probe/shapes-mini", weights="random",
    ...                    task_args={"epochs": 2})
    >>> outcomes[0].result.metrics["top1"]
    >>> bob.list_tasks("knn/*")                      # rows, as `bob ls tasks 'knn/*'` shows them
    >>> board = bob.leaderboard("results/raw", "results").table   # a pandas DataFrame

Every function checks its whole input before anything runs and raises bob's errors (`bob.errors`):
`UsageError` (`UnknownNameError` with did-you-mean suggestions) for bad names, arguments and files.
A run that fails is data, not an exception: its outcome holds the `failed` result, as on the command
line. Nothing here prints (progress bars aside, when asked for); the CLI (`bob.cli`) parses flags,
calls these functions and prints their results.

Importing this module imports neither torch nor pandas: torch loads when a run, a check or a backbone
build starts, pandas when a leaderboard is built. The listings live in `bob.listing` (re-exported
here), where each loads only the registry it lists, for a fast `bob ls`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bob import distributed
from bob import progress as progress_bars
from bob.backbones import build_backbone as _build_backbone
from bob.backbones.meta import Extraction
from bob.cache import default_cache_root
from bob.errors import ResultFileError, UnknownNameError, UsageError
from bob.listing import backbone_namespaces, list_backbones, list_datasets, list_task_args, list_tasks
from bob.preflight import Target, require_writable_dirs
from bob.results import ResultStore
from bob.run_plan import RunPlan, plan_runs
from bob.runner import RunOptions, RunOutcome, execute, resolve_device
from bob.selection import Selection, check_grid_size, dataset_problem, require_datasets, select
from bob.spec import RunSpec, make_spec, parse_backbone_args
from bob.suites import SUITES
from bob.sweep.display import SweepDisplay
from bob.sweep.driver import SweepState, SweepSummary, check_size, plan_sweep, run_sweep, survey_plan
from bob.sweep.executors import make_executor
from bob.sweep.expand import arg_text
from bob.sweep.plan import Plan, own_backbones
from bob.sweep.spec import load_sweep
from bob.task import parse_assignments
from bob.trackers import tracker_names

if TYPE_CHECKING:
    from bob.backbones.base import Backbone
    from bob.check import CheckResult
    from bob.compare import Comparison
    from bob.leaderboard import BuildOutput

__all__ = [
    "RunOutcome",
    "SweepDisplay",
    "backbone_namespaces",
    "build_backbone",
    "check",
    "check_own_backbones",
    "compare",
    "leaderboard",
    "list_backbones",
    "list_datasets",
    "list_task_args",
    "list_tasks",
    "load_outcomes",
    "plan_run",
    "run",
    "run_specs",
    "sweep",
    "sweep_plan",
    "sweep_status",
]

RESULTS_DIR = Path("results/raw")
SWEEP_MODES = ("missing", "failed", "all")

# Arguments given as a mapping ({"epochs": 2}) or as the CLI's KEY=VALUE strings (["epochs=2"]).
Assignments = Mapping[str, object] | Sequence[str] | None


# ------------------------------------------------------------------------------------------- runs


def run_specs(
    backbones: str | Sequence[str],
    tasks: str | Sequence[str],
    weights: str | Sequence[str] = "pretrained",
    seeds: int | Sequence[int] = 0,
    task_args: Assignments = None,
    backbone_args: Assignments = None,
    *,
    yes: bool = True,
    on_selection: Callable[[Selection], None] | None = None,
) -> list[RunSpec]:
    """Every (backbone, weights, task, seed) combination as a RunSpec, validated before anything runs.

    Backbones and tasks take globs, comma lists and (tasks) bare suite names: `"torchvision/mobilenet_v3*"`,
    `"knn"` (every task of the suite whose data is on disk), `"knn/*,linear-probe/shapes-mini"`
    (`bob.selection`); `on_selection(selection)` sees what they expanded to. A backbone `NAME@WEIGHTS`
    runs with those weights only; `weights` is the product for the others. With `yes=False`, a grid
    that a pattern expanded past `bob.selection.MAX_RUNS` runs is a UsageError.

    A task arg `KEY` applies to every task of the grid; `SUITE:KEY` only to that suite's tasks (e.g.
    `{"linear-probe:epochs": 50, "knn:k": 10}`), and a suite with no task in the grid is a UsageError.
    Duplicates (same run id) are listed once."""
    scoped = _scope_task_args(_assignments(task_args, "--task-arg"))
    selection = select(_as_list(backbones), _as_list(tasks), _data_on_disk(scoped))
    if on_selection is not None:
        on_selection(selection)
    weight_list, seed_list = _as_list(weights), _as_list(seeds)
    check_grid_size(selection, selection.runs(weight_list, seed_list), yes)
    _check_scopes(scoped, selection.tasks)
    bargs = _backbone_args(backbone_args)
    specs: dict[str, RunSpec] = {}
    several = len(selection.tasks) > 1
    for b, pinned in selection.backbones:
        for t in selection.tasks:
            targs = {**scoped.get("", {}), **scoped.get(t.partition("/")[0], {})}
            for w, s in itertools.product([pinned] if pinned is not None else weight_list, seed_list):
                spec = _grid_spec(b, t, w, s, bargs, targs, several)
                specs.setdefault(spec.id, spec)
    return list(specs.values())


def _grid_spec(
    backbone: str,
    task: str,
    weights: str,
    seed: int,
    backbone_args: dict[str, Any],
    task_args: dict[str, str],
    several_tasks: bool,
) -> RunSpec:
    """One run of the grid; an arg one of several tasks rejects points at `SUITE:KEY` scoping."""
    try:
        return make_spec(backbone, task, weights, seed, backbone_args, task_args)
    except UnknownNameError as err:
        if err.kind.startswith("task arg") and several_tasks:
            raise UsageError(f"{err} Scope an arg to one suite with --task-arg SUITE:KEY=VALUE.") from None
        raise


def _check_scopes(scoped: dict[str, dict[str, str]], tasks: Sequence[str]) -> None:
    """A `SUITE:KEY=VALUE` task arg whose suite has no task in the grid would be silently ignored:
    a UsageError naming the arg and the grid's suites."""
    suites = list(dict.fromkeys(t.partition("/")[0] for t in tasks))
    for suite, args in scoped.items():
        if suite and suite not in suites:
            key, value = next(iter(args.items()))
            raise UsageError(
                f"--task-arg {suite}:{key}={value} applies to no task of this run: its tasks are of the "
                f"suite{'s' if len(suites) > 1 else ''} {', '.join(suites)}. Add a {suite}/... task or "
                "drop the arg."
            )


def _data_on_disk(scoped: dict[str, dict[str, str]]) -> Callable[[str], bool]:
    """Whether a task's dataset can be read with the grid's `root` and `download` task args: what
    a task pattern keeps (a pattern never expands to tasks whose data is missing)."""

    def present(task: str) -> bool:
        suite, _, dataset = task.partition("/")
        args = {**scoped.get("", {}), **scoped.get(suite, {})}
        download = args.get("download", "").strip().lower() in ("true", "1", "yes")
        return dataset_problem(dataset, args.get("root"), download) is None

    return present


def _runnable_specs(
    backbones: str | Sequence[str],
    tasks: str | Sequence[str],
    weights: str | Sequence[str],
    seeds: int | Sequence[int],
    task_args: Assignments,
    backbone_args: dict[str, Any],
    yes: bool,
    on_selection: Callable[[Selection], None] | None,
) -> list[RunSpec]:
    """`run_specs`, then every real dataset of the grid checked on disk: what `run` and `plan_run`
    both check before they go on."""
    specs = run_specs(
        backbones, tasks, weights, seeds, task_args, backbone_args, yes=yes, on_selection=on_selection
    )
    require_datasets((s.task, s.data_root, s.download) for s in specs)
    return specs


def data_parallel_refusals(
    backbones: str | Sequence[str],
    tasks: str | Sequence[str],
    weights: str | Sequence[str] = "pretrained",
    seeds: int | Sequence[int] = 0,
    *,
    task_args: Assignments = None,
    backbone_args: Assignments = None,
    yes: bool = False,
) -> list[tuple[str, str]]:
    """(task, why) for every run of the grid that cannot run data-parallel (`bob run --gpus-per-run
    N`, bob/distributed.py), after the same checks as `run`: empty when all can. A run can when its
    suite trains data-parallel with its task args, or when it reads the frozen-feature cache (each
    rank extracts its shard of every split into one cache entry; the rest runs on every rank)."""
    specs = _runnable_specs(
        backbones, tasks, weights, seeds, task_args, _backbone_args(backbone_args), yes, None
    )
    refusals = []
    for spec in specs:
        suite = SUITES.get(spec.task.partition("/")[0])
        why = suite.data_parallel_refusal(spec.task_args)
        if why is not None and not suite.uses_feature_cache(spec.task_args):
            refusals.append((spec.task, f"{why}, and does not read the frozen-feature cache"))
    return refusals


def _with_extraction(
    backbone_args: Assignments, pipeline: str, precision: str, channels_last: bool
) -> dict[str, Any]:
    """The backbone args with the extraction settings merged in, each only where it is not its
    default (so the default leaves every run id as it was); a setting given twice is a UsageError."""
    args = _backbone_args(backbone_args)
    given, rest = Extraction.split_args(args)
    options = Extraction(pipeline, precision, channels_last).identity()
    clash = sorted(k for k in options if k in args and args[k] != options[k])
    if clash:
        raise UsageError(f"{', '.join(clash)} is given both as an option and as a --backbone-arg: keep one.")
    return {**rest, **given.identity(), **options}


def run(
    backbones: str | Sequence[str],
    tasks: str | Sequence[str],
    weights: str | Sequence[str] = "pretrained",
    seeds: int | Sequence[int] = 0,
    *,
    task_args: Assignments = None,
    backbone_args: Assignments = None,
    results_dir: str | Path = RESULTS_DIR,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 64,
    num_workers: int | None = None,
    overwrite: bool = False,
    samples: bool = True,
    pipeline: str = "pil",
    precision: str = "fp32",
    channels_last: bool = False,
    geometry_cache: str | Path | None = None,
    progress: bool = False,
    trackers: Sequence[str] = (),
    yes: bool = False,
    on_selection: Callable[[Selection], None] | None = None,
    on_start: Callable[[int, int, RunSpec], None] | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Run backbones × weights × tasks × seeds; one RunOutcome per run, in grid order.

    Each run writes one result JSON under `results_dir`; a run whose settled result is already there
    is not run again (`outcome.skipped`) unless `overwrite`. The whole grid is validated first
    (`run_specs`), so a typo stops everything before the first run. `weights` is `pretrained`,
    `random` or a checkpoint path; `device` is `auto`, `cpu`, `cuda`, `cuda:N` or `mps`.
    `on_start(i, n, spec)` and `on_outcome(outcome)` are called around each run (the CLI prints
    there). `samples=False` skips storing each run's per-sample outputs. Raises ResultFileError for a
    damaged stored result (left untouched).

    Extraction: `pipeline` (`pil`, or `tensor` for torchvision.io decode and uint8 tensor resize),
    `precision` (`fp32`, `bf16`, `fp16`) and `channels_last` become backbone args of the runs when not
    at their defaults (a run id of their own); `geometry_cache` is a folder where decoded pixels are
    shared by every backbone with the same eval geometry (docs/throughput.md).

    Selection (`run_specs`): globs, comma lists and suite names; `NAME@WEIGHTS` pins a backbone's
    weights; a grid a pattern expanded past `bob.selection.MAX_RUNS` runs needs `yes=True`. Before
    any run (each a UsageError): a real dataset that is not on disk, a weights file or factory that
    does not exist, an unusable results dir or feature cache, a tracker that is unknown or not installed.

    `trackers` (`mlflow`, `wandb`; plus those in $BOB_TRACKERS) mirror every settled run to those
    experiment trackers (docs/trackers.md); a tracker failing never fails a run."""
    bargs = _with_extraction(backbone_args, pipeline, precision, channels_last)
    specs = _runnable_specs(backbones, tasks, weights, seeds, task_args, bargs, yes, on_selection)
    options = _options(results_dir, cache_dir, device, batch_size, num_workers, overwrite, samples)
    options.geometry_cache = Path(geometry_cache) if geometry_cache is not None else None
    options.trackers = tracker_names(trackers)
    if Extraction.split_args(bargs)[0].precision == "fp16" and resolve_device(device).type == "cpu":
        raise UsageError("--precision fp16 needs a GPU (CPU float16 kernels are slow or missing); use bf16.")
    resolve_device(device)  # an unavailable device is bad input too: found before any run
    preflight(options)
    outcomes = []
    with _progress(progress):
        for i, spec in enumerate(specs, 1):
            if on_start is not None:
                on_start(i, len(specs), spec)
            outcome = execute(spec, options)
            if on_outcome is not None:
                on_outcome(outcome)
            outcomes.append(outcome)
    return outcomes


def plan_run(
    backbones: str | Sequence[str],
    tasks: str | Sequence[str],
    weights: str | Sequence[str] = "pretrained",
    seeds: int | Sequence[int] = 0,
    *,
    task_args: Assignments = None,
    backbone_args: Assignments = None,
    results_dir: str | Path = RESULTS_DIR,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
    pipeline: str = "pil",
    precision: str = "fp32",
    channels_last: bool = False,
    on_selection: Callable[[Selection], None] | None = None,
) -> RunPlan:
    """What `run` with these arguments would do, without running or writing anything (`bob run
    --dry-run`): each run with its id and whether its result is already there, and each feature
    set the runs read, cached or to be extracted (the sweep planner's extraction key). The same
    checks as `run` come first, but no size limit: listing a big grid is how to see it."""
    bargs = _with_extraction(backbone_args, pipeline, precision, channels_last)
    specs = _runnable_specs(backbones, tasks, weights, seeds, task_args, bargs, True, on_selection)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_root()
    return plan_runs(specs, ResultStore(Path(results_dir)), cache, overwrite)


def load_outcomes(specs: Sequence[RunSpec], results_dir: str | Path = RESULTS_DIR) -> list[RunOutcome]:
    """The stored outcomes of these runs (skipping runs without a result and unreadable files)."""
    store = ResultStore(Path(results_dir))
    outcomes = []
    for spec in specs:
        try:
            result = store.load(spec)
        except ResultFileError:
            continue
        if result is not None:
            outcomes.append(RunOutcome(spec, result, store.path_for(spec)))
    return outcomes


# ----------------------------------------------------------------------------------------- sweeps


def sweep_plan(file: str | Path) -> Plan:
    """Read, validate and expand a sweep file into its plan (runs grouped by feature extraction),
    without importing torch; `plan.name`, `plan.runs`, `plan.specs()`, `plan.breakdown()`."""
    return plan_sweep(load_sweep(Path(file)))


def sweep_status(
    plan: Plan, results_dir: str | Path = RESULTS_DIR, mode: str = "missing", keep: bool = True
) -> SweepState:
    """Where the plan's runs stand in `results_dir`: to do, done, failed, not applicable, unreadable.
    `keep=False` only counts the runs to do (`state.to_run`), for plans too big to hold."""
    _check_mode(mode)
    return survey_plan(plan, ResultStore(Path(results_dir)), mode, keep)


def sweep(
    file: str | Path | Plan,
    *,
    mode: str = "missing",
    executor: str = "local",
    executor_options: Mapping[str, Any] | None = None,
    results_dir: str | Path = RESULTS_DIR,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 64,
    num_workers: int | None = None,
    samples: bool = True,
    display: SweepDisplay | None = None,
    yes: bool = False,
    max_runs: int | None = None,
    geometry_cache: str | Path | None = None,
    trackers: Sequence[str] = (),
    ranks_per_run: int = 1,
) -> SweepSummary:
    """Run a sweep file (or its plan): every run of its grid, each feature set extracted once.

    `mode` picks the runs: `missing` (no settled result yet; a sweep resumes), `failed` (re-run the
    failed ones) or `all` (re-run everything, replacing results). `executor` is `local`, `ray` or
    `slurm`, configured by `executor_options` (e.g. `{"num_cpus": 4}` for ray). Before anything runs
    (each a UsageError): the results dir (which holds the run locks) and the feature cache must be
    writable folders; a sweep that would start more than `max_runs` runs (default: the file's
    `max_runs`, else 10,000) needs `yes=True`; a backbone of your own (a factory, an entry point)
    must pass `bob check`'s contract checks. Failed runs are counted in the summary, not raised.
    `geometry_cache`: a folder where each geometry's decoded pixels are stored once and read by every
    other extraction at that geometry (docs/throughput.md); the sweep file's backbone args set the
    pipeline, precision and channels_last. `trackers`: as for `run` (docs/trackers.md); each worker
    logs the runs it executes. `ranks_per_run`: every run whose suite trains data-parallel (with
    its task args) runs as that many ranks, one device each (docs/distributed.md): launched by the
    worker (local), in a placement group of that many devices (ray), or as one job of that many
    tasks (slurm); the other runs keep one process."""
    _check_mode(mode)
    if ranks_per_run < 1:
        raise UsageError(f"--ranks-per-run must be a positive integer, got {ranks_per_run}.")
    plan = file if isinstance(file, Plan) else sweep_plan(file)
    runner = make_executor(executor, **dict(executor_options or {}))
    options = _options(results_dir, cache_dir, device, batch_size, num_workers, samples=samples)
    options.geometry_cache = Path(geometry_cache) if geometry_cache is not None else None
    options.trackers = tracker_names(trackers)
    options.ranks_per_run = ranks_per_run
    if executor == "local":  # remote workers resolve the device on their own machines
        resolve_device(device)
        if ranks_per_run > 1:  # as many devices as ranks, here and now
            distributed.check_devices(device, ranks_per_run, "--ranks-per-run")
    preflight(options)
    state = survey_plan(plan, ResultStore(options.results_dir), mode)
    check_size(state, plan, max_runs, yes)
    check_own_backbones(plan)
    return run_sweep(plan, runner, options, mode, display, state=state)


def check_own_backbones(plan: Plan) -> None:
    """A user backbone joins a sweep only after it passes `bob check`'s contract checks (resolve,
    build, pooled shape and finiteness, determinism, batch invariance, feature levels)."""
    mine = own_backbones(plan)
    if not mine:
        return
    from bob.check import check_backbone  # torch: only when the sweep names a backbone of yours

    for name, weights, args in mine:
        args = Extraction.split_args(args)[
            1
        ]  # precision, pipeline, channels_last: run options, not the factory's
        failed = [r for r in check_backbone(name, weights, args, mock_runs=False) if r.status == "fail"]
        if failed:
            first = failed[0]
            raise UsageError(
                f"Backbone '{name}' [{weights}] fails `bob check` ({first.name}: {first.detail}), so this "
                f"sweep does not accept it; nothing ran. `bob check --backbone {name}` shows the whole report."
            )


# ------------------------------------------------------------------------------------ leaderboard


def leaderboard(
    results_dir: str | Path = RESULTS_DIR,
    out: str | Path = "results",
    *,
    suites: Sequence[str] = (),
    filters: Sequence[str] = (),
    weighting: str = "suite",
    best_of: Sequence[str] = (),
    min_backbones: int = 3,
    efficiency_suites: Sequence[str] = ("efficiency",),
    pareto_y: str = "overall",
    pareto_cost: str = "",
    group_by: str | None = None,
    formats: Sequence[str] = ("csv", "md", "html"),
    intervals: bool = True,
    resamples: int = 1000,
    confidence: float = 0.95,
    bootstrap_seed: int = 0,
    preset: str | None = None,
    plotly: str = "inline",
) -> BuildOutput:
    """Rank backbones by BoB z-scores from the result files; write CSV, Markdown and HTML to `out`.

    `filters` are `KEY=GLOB` strings over family, method, data, size, backbone, weights; `group_by`
    (family, method_class, pretrain_data or size) adds a summary by that key (`output.summary`).
    `intervals` adds percentile-bootstrap intervals to every score and rank from the runs' per-sample
    files (`resamples` paired resamples at `confidence`, seeded by `bootstrap_seed`). `preset="bob"`
    scores BoB's aggregation as far as it can be reconstructed (docs/leaderboard.md: four task types of
    equal weight, detection's best lr, mask AP beside box AP, Sim10k → Cityscapes under OOD), naming
    each reconstructed choice on the page. `plotly` is how the HTML page gets plotly.js: `inline`
    (self-contained, works offline) or `cdn` (a script tag: a page of tens of KB). Returns the board
    (`output.board`), the rows shown (`output.table`) and the written paths."""
    from bob.leaderboard import BoardOptions, RowFilter, build_leaderboard  # pandas: only here

    options = BoardOptions(
        weighting=weighting,
        best_of=tuple(best_of),
        min_backbones=min_backbones,
        suites=tuple(suites),
        efficiency_suites=tuple(efficiency_suites),
        pareto_y=pareto_y,
        pareto_cost=pareto_cost,
        intervals=intervals,
        resamples=resamples,
        confidence=confidence,
        bootstrap_seed=bootstrap_seed,
        preset=preset or "",
    )
    parsed = [RowFilter.parse(f) for f in filters]
    return build_leaderboard(
        results_dir, out, options, parsed, formats=tuple(formats), group_by=group_by, plotly=plotly
    )


def compare(
    a: str,
    b: str,
    results_dir: str | Path = RESULTS_DIR,
    *,
    tasks: Sequence[str] = (),
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    best_of: Sequence[str] = (),
) -> Comparison:
    """Backbones `a` and `b` (names or board rows such as `'NAME [random]'`) on every setting both ran
    (those matching a `tasks` glob, when given): paired differences with bootstrap intervals, paired
    tests (McNemar where it applies, else the paired bootstrap), Holm's correction, and a verdict."""
    from bob.compare import compare as run_compare  # pandas and numpy: only here

    return run_compare(results_dir, a, b, tasks, resamples=resamples, seed=seed, alpha=alpha, best_of=best_of)


# ------------------------------------------------------------------------------- backbones, checks


def build_backbone(
    name: str,
    weights: str = "pretrained",
    args: Assignments = None,
    *,
    seed: int = 0,
    input_size: int | None = None,
) -> Backbone:
    """Resolve and build one backbone (a bob Backbone, an nn.Module): `forward_pooled(x)` -> [B, D],
    `forward_features(x)` -> one map per feature level. Raises UnknownNameError, WeightsError."""
    return _build_backbone(name, weights, _backbone_args(args), seed, input_size)


def check(
    backbone: str,
    weights: str = "pretrained",
    backbone_args: Assignments = None,
    *,
    image_size: int = 64,
    suites: str = "*",
    mock_runs: bool = True,
) -> list[CheckResult]:
    """`bob check`: the contract checks, then (with `mock_runs`) a short, limited run of every suite
    `suites` selects (comma-separated globs). One CheckResult per check: pass, fail or skip, with
    the detail. Writes no results (mock runs go to a throwaway folder)."""
    from bob.check import check_backbone  # torch: the checks run the model

    args = _backbone_args(backbone_args)
    return check_backbone(backbone, weights, args, image_size, mock_runs=mock_runs, suites=suites)


# ----------------------------------------------------------------------------------------- helpers


def _as_list(value: str | int | Sequence[Any]) -> list[Any]:
    return [value] if isinstance(value, str | int) else list(value)


def _assignments(values: Assignments, what: str) -> dict[str, str]:
    """KEY=VALUE strings (parsed, malformed ones raise) or a mapping whose values become the text the
    task-arg parser reads (`True` -> `true`, a list -> `a,b`)."""
    if values is None:
        return {}
    if isinstance(values, Mapping):
        return {str(k): arg_text(list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
    return parse_assignments([values] if isinstance(values, str) else list(values), what)


def _backbone_args(values: Assignments) -> dict[str, Any]:
    """A mapping as it is; KEY=VALUE strings with JSON scalars parsed (`0.1`, `true`, `[1,2]`)."""
    if isinstance(values, Mapping):
        return dict(values)
    return parse_backbone_args(_assignments(values, "--backbone-arg"))


def _scope_task_args(args: dict[str, str]) -> dict[str, dict[str, str]]:
    """`SUITE:KEY` args under their suite (an unknown suite is a did-you-mean error), the rest under ''."""
    scoped: dict[str, dict[str, str]] = {}
    for key, value in args.items():
        suite, sep, name = key.rpartition(":")
        if sep:
            SUITES.get(suite)
        scoped.setdefault(suite, {})[name] = value
    return scoped


def _options(
    results_dir: str | Path,
    cache_dir: str | Path | None,
    device: str,
    batch_size: int,
    num_workers: int | None,
    overwrite: bool = False,
    samples: bool = True,
) -> RunOptions:
    cache = Path(cache_dir) if cache_dir is not None else None
    return RunOptions(Path(results_dir), cache, device, batch_size, num_workers, overwrite, samples)


def preflight(options: RunOptions) -> None:
    """The results dir and the feature cache exist or can be created and take a file, before any
    compute (a UsageError line, exit 2, naming the folder and the cause); a warning when either
    disk is nearly full."""
    require_writable_dirs(
        [
            Target(options.results_dir, "Results dir", "--results-dir"),
            Target(options.cache_dir or default_cache_root(), "Feature cache", "--cache-dir"),
        ]
    )


def _check_mode(mode: str) -> None:
    if mode not in SWEEP_MODES:
        raise UsageError(f"Sweep mode '{mode}' is not one of {', '.join(SWEEP_MODES)}.")


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[None]:
    """Progress bars on or off for one call; the previous setting comes back afterwards."""
    before = progress_bars.is_enabled()
    progress_bars.set_enabled(enabled)
    try:
        yield
    finally:
        progress_bars.set_enabled(before)
