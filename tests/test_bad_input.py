"""The bad-input corpus: every way a user can get a command wrong, one parametrised case each.

Each case is a command line, the exit code it must end with (2: bad usage or bad input found before
anything ran), a phrase its one-paragraph message must contain, and the rule that it writes nothing:
the folder it runs in (the default results dir, the feature cache) holds the same files afterwards.
Every command a message suggests (`bob ...` in backticks) must exist with the options it names.

The commands run in this process through `bob.cli.main` (tests/cli_harness.py), so the corpus (99
cases when written) runs in about 7 s on a 2-core machine. Add a case whenever a new way to get a
command wrong turns up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_harness import (
    HINT,
    TINY,
    Setup,
    assert_hint_exists,
    damaged_result,
    files,
    full_disk,
    grid,
    invoke,
    read_only,
    results,
    sweep,
    tree,
)

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "my_backbone.py")


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    phrase: str
    code: int = 2
    setup: Setup | None = None


RUN = ("run", "-b", TINY, "-w", "random", "-t", "knn/digits")
CHECK = ("check", "-b", TINY, "-w", "random")
SWEEP = ("sweep", "s.yaml", "--device", "cpu", "-q")
BOARD = ("leaderboard", "--results-dir", "raw", "--out", "board")

CASES = [
    # ------------------------------------------------------------------------------------ bob run
    Case(
        "run-backbone-typo", ("run", "-b", "timm/resnet5O", "-t", "knn/digits"), "Did you mean: timm/resnet50"
    ),
    Case("run-task-typo", ("run", "-b", TINY, "-t", "knn/digitz"), "Did you mean: knn/digits"),
    Case("run-suite-typo", ("run", "-b", TINY, "-t", "linear-prob/digits"), "linear-probe/digits"),
    Case("run-task-without-suite", ("run", "-b", TINY, "-t", "digits"), "Task names read <suite>/<dataset>"),
    Case("run-task-arg-malformed", (*RUN, "-a", "k"), "Malformed --task-arg 'k'"),
    Case(
        "run-task-arg-unknown", (*RUN, "-a", "kk=3"), "Unknown task arg for knn/digits 'kk'. Did you mean: k"
    ),
    Case("run-task-arg-not-int", (*RUN, "-a", "k=three"), "takes an integer, got 'three'"),
    Case("run-task-arg-invalid", (*RUN, "-a", "k=0"), "k must be a positive integer"),
    Case("run-task-arg-twice", (*RUN, "-a", "k=3", "-a", "k=4"), "is given twice"),
    Case("run-task-arg-bool", (*RUN, "-a", "download=maybe"), "takes true or false"),
    Case("run-image-size-tiny", (*RUN, "-a", "image_size=4"), "image_size must be at least 8"),
    Case("run-unscoped-arg", (*RUN, "-t", "linear-probe/digits", "-a", "k=3"), "SUITE:KEY=VALUE"),
    Case("run-scope-typo", (*RUN, "-a", "knnn:k=3"), "Unknown task suite 'knnn'"),
    Case("run-weights-typo", ("run", "-b", TINY, "-t", "knn/digits", "-w", "pretrianed"), "or the path"),
    Case("run-weights-missing", ("run", "-b", TINY, "-t", "knn/digits", "-w", "no.pth"), "no such file"),
    Case("run-backbone-arg-malformed", (*RUN, "--backbone-arg", "x"), "Malformed --backbone-arg 'x'"),
    Case("run-device-absent", (*RUN, "--device", "cuda:7"), "CUDA is not available"),
    Case("run-device-unknown", (*RUN, "--device", "tpu"), "is not a device torch knows"),
    Case("run-seed-negative", (*RUN, "-s", "-1"), "--seed must be a non-negative integer"),
    Case("run-seed-not-int", (*RUN, "-s", "x"), "Invalid value"),
    Case("run-batch-size-zero", (*RUN, "--batch-size", "0"), "Invalid value"),
    Case("run-workers-negative", (*RUN, "--num-workers", "-1"), "Invalid value"),
    Case("run-unknown-option", (*RUN, "--bogus"), "No such option"),
    Case("run-no-task", ("run", "-b", TINY), "Missing option"),
    Case("run-factory-file-missing", ("run", "-b", "nowhere.py:f", "-t", "knn/digits"), "does not exist"),
    Case(
        "run-factory-attr-missing", ("run", "-b", f"{EXAMPLE}:nope", "-t", "knn/digits"), "no callable 'nope'"
    ),
    Case(
        "run-factory-syntax-error",
        ("run", "-b", "bad.py:f", "-t", "knn/digits"),
        "is not valid Python",
        setup=files(**{"bad.py": "def f(:\n"}),
    ),
    Case(
        "run-factory-module-missing",
        ("run", "-b", "no_such_pkg.mod:f", "-t", "knn/digits"),
        "cannot be found",
    ),
    Case(
        "run-composite-of-composite",
        ("run", "-b", f"composite(composite({TINY}))", "-t", "knn/digits"),
        "composites of composites",
    ),
    Case("run-results-dir-is-file", (*RUN, "--results-dir", "f"), "it is a file", setup=files(f="x")),
    Case("run-results-dir-under-file", (*RUN, "--results-dir", "f/raw"), "f is a file", setup=files(f="x")),
    Case("run-cache-dir-is-file", (*RUN, "--cache-dir", "f"), "Feature cache f", setup=files(f="x")),
    Case("run-results-dir-read-only", (*RUN, "--results-dir", "ro"), "read-only", setup=read_only("ro")),
    Case("run-results-disk-full", (*RUN, "--results-dir", "raw"), "its disk is full", setup=full_disk("raw")),
    Case(
        "run-cache-disk-full",
        (*RUN, "--cache-dir", "c"),
        "Feature cache c is not usable: its disk is full",
        setup=full_disk("c"),
    ),
    Case(
        "run-damaged-result",
        (*RUN, "--results-dir", "raw"),
        "is not valid JSON",
        setup=lambda tmp, mp: damaged_result(tmp / "raw"),
    ),
    # ------------------------------------------------------------------------------------- bob ls
    Case("ls-unknown-kind", ("ls", "models"), "Unknown listing 'models'"),
    Case("ls-kind-typo", ("ls", "backbone"), "Did you mean: backbones"),
    Case("ls-no-kind", ("ls",), "Missing argument"),
    Case("ls-family-unknown", ("ls", "backbones", "--family", "transformerz"), "Unknown backbone family"),
    Case("ls-group-typo", ("ls", "backbones", "--group", "bobb"), "Did you mean: bob?"),
    Case("ls-method-typo", ("ls", "backbones", "--method", "ssl:dinno"), "Did you mean: ssl:dino"),
    Case("ls-data-unknown", ("ls", "backbones", "--data", "IN-22kk"), "Unknown backbone data"),
    Case("ls-max-params-bad", ("ls", "backbones", "--max-params", "30Q"), "--max-params takes a count"),
    Case("ls-filter-on-tasks", ("ls", "tasks", "--family", "vit"), "filter backbones only"),
    Case("ls-filter-on-datasets", ("ls", "datasets", "--group", "bob"), "filter backbones only"),
    # ---------------------------------------------------------------------------------- bob check
    Case("check-backbone-typo", ("check", "-b", "timm/resnet5O"), "Did you mean: timm/resnet50"),
    Case(
        "check-factory-attr-missing", ("check", "-b", f"{EXAMPLE}:nope", "-w", "random"), "no callable 'nope'"
    ),
    Case("check-factory-file-missing", ("check", "-b", "nowhere.py:f"), "does not exist"),
    Case("check-weights-missing", ("check", "-b", TINY, "-w", "/no/such/file.pth"), "no such file"),
    Case("check-suites-nomatch", (*CHECK, "--suites", "nothing*"), "matches no suite"),
    Case("check-image-size-small", (*CHECK, "--image-size", "8"), "Invalid value"),
    Case("check-no-backbone", ("check",), "Missing option"),
    Case("check-backbone-arg-malformed", (*CHECK, "--backbone-arg", "x"), "Malformed --backbone-arg 'x'"),
    # ---------------------------------------------------------------------------------- bob sweep
    Case("sweep-file-missing", ("sweep", "missing.yaml"), "does not exist"),
    Case("sweep-file-is-folder", ("sweep", "d"), "is a folder", setup=lambda tmp, mp: (tmp / "d").mkdir()),
    Case("sweep-not-yaml", SWEEP, "not valid YAML", setup=sweep("name: [unclosed\n")),
    Case("sweep-not-mapping", SWEEP, "expected a mapping", setup=sweep("- a\n- b\n")),
    Case(
        "sweep-unknown-top-key",
        SWEEP,
        "(top level).gridz: unknown key",
        setup=sweep(grid(extra="gridz: 1\n")),
    ),
    Case("sweep-no-name", SWEEP, "missing required key(s) name", setup=sweep("grids: []\n")),
    Case("sweep-empty-grids", SWEEP, "grids: is empty", setup=sweep("name: t\ngrids: []\n")),
    Case("sweep-backbone-typo", SWEEP, "Unknown backbone", setup=sweep(grid(backbones="[timm/resnet5O]"))),
    Case(
        "sweep-task-typo",
        SWEEP,
        "Did you mean: knn/shapes-mini",
        setup=sweep(grid(tasks="[knn/shapes-mimi]")),
    ),
    Case(
        "sweep-task-arg-unknown",
        SWEEP,
        "Unknown task arg",
        setup=sweep(grid(tasks="[{task: knn/shapes-mini, args: {kk: 5}}]")),
    ),
    Case(
        "sweep-task-arg-type",
        SWEEP,
        "takes an integer",
        setup=sweep(grid(tasks="[{task: knn/shapes-mini, args: {k: many}}]")),
    ),
    Case(
        "sweep-duplicate-run",
        SWEEP,
        "duplicate run",
        setup=sweep(grid(tasks="[knn/shapes-mini, {task: knn/shapes-mini, args: {}}]")),
    ),
    Case(
        "sweep-all-excluded",
        SWEEP,
        "expands to no runs",
        setup=sweep(grid() + "exclude:\n  - {task: '*'}\n"),
    ),
    Case(
        "sweep-two-problems",
        SWEEP,
        "2 problems in sweep file",
        setup=sweep(grid(backbones="[timm/resnet5O]", tasks="[knn/shapes-mimi]")),
    ),
    Case(
        "sweep-filter-matches-nothing",
        SWEEP,
        "matches no catalog backbone",
        setup=sweep(grid(backbones="[{family: vit, method: 'ssl:nothing*'}]")),
    ),
    Case("sweep-family-typo", SWEEP, "Did you mean vit?", setup=sweep(grid(backbones="[{family: vits}]"))),
    Case(
        "sweep-max-runs-bad",
        SWEEP,
        "max_runs: expected a positive integer",
        setup=sweep(grid(extra="max_runs: -1\n")),
    ),
    Case(
        "sweep-above-max-runs",
        SWEEP,
        "pass --yes",
        setup=sweep(grid(tasks="[knn/shapes-mini, ncm/shapes-mini]", extra="max_runs: 1\n")),
    ),
    Case(
        "sweep-retry-and-overwrite",
        (*SWEEP, "--retry-failed", "--overwrite"),
        "exclude each other",
        setup=sweep(grid()),
    ),
    Case("sweep-executor-typo", (*SWEEP, "-x", "lokal"), "Did you mean: local", setup=sweep(grid())),
    Case(
        "sweep-results-dir-is-file",
        (*SWEEP, "--results-dir", "f"),
        "it is a file",
        setup=files(f="x", **{"s.yaml": grid()}),
    ),
    Case(
        "sweep-cache-dir-is-file",
        (*SWEEP, "--cache-dir", "f"),
        "Feature cache f",
        setup=files(f="x", **{"s.yaml": grid()}),
    ),
    Case(
        "sweep-results-read-only",
        (*SWEEP, "--results-dir", "ro"),
        "read-only",
        setup=lambda t, m: (sweep(grid())(t, m), read_only("ro")(t, m)),
    ),
    Case(
        "sweep-cache-disk-full",
        (*SWEEP, "--cache-dir", "c"),
        "its disk is full",
        setup=lambda t, m: (sweep(grid())(t, m), full_disk("c")(t, m)),
    ),
    Case("sweep-device-absent", (*SWEEP, "--device", "cuda:7"), "CUDA is not available", setup=sweep(grid())),
    Case(
        "sweep-seed-not-int",
        SWEEP,
        "expected a non-negative integer",
        setup=sweep(grid().replace("weights: [random]", "weights: [random]\n    seeds: [zero]")),
    ),
    Case("sweep-weights-typo", SWEEP, "or the path", setup=sweep(grid().replace("[random]", "[randum]"))),
    Case(
        "sweep-factory-attr-missing",
        SWEEP,
        "no callable 'nope'",
        setup=sweep(grid(backbones=f"['{EXAMPLE}:nope']")),
    ),
    Case(
        "sweep-defaults-suite-typo",
        SWEEP,
        "defaults.task_args.knnn",
        setup=sweep(grid(extra="defaults: {task_args: {knnn: {k: 3}}}\n")),
    ),
    Case(
        "sweep-grid-key-typo",
        SWEEP,
        "Did you mean: seeds?",
        setup=sweep(grid().replace("weights:", "seed: [0]\n    weights:")),
    ),
    # ----------------------------------------------------------------------------- bob leaderboard
    Case("board-results-missing", BOARD, "does not exist"),
    Case("board-results-is-file", BOARD, "is a file, not a folder of result files", setup=files(raw="x")),
    Case("board-results-empty", BOARD, "holds no result files", setup=lambda tmp, mp: (tmp / "raw").mkdir()),
    Case("board-only-failed-runs", BOARD, "no successful run to rank", setup=results("failed")),
    Case(
        "board-out-is-file",
        BOARD,
        "Leaderboard output folder board",
        setup=lambda t, m: (results()(t, m), files(board="x")(t, m)),
    ),
    Case(
        "board-out-under-file",
        (*BOARD[:3], "--out", "f/board"),
        "f is a file",
        setup=lambda t, m: (results()(t, m), files(f="x")(t, m)),
    ),
    Case(
        "board-out-read-only",
        (*BOARD[:3], "--out", "ro"),
        "read-only",
        setup=lambda t, m: (results()(t, m), read_only("ro")(t, m)),
    ),
    Case(
        "board-out-disk-full",
        BOARD,
        "Leaderboard output folder board is not usable: its disk is full",
        setup=lambda t, m: (results()(t, m), full_disk("board")(t, m)),
    ),
    Case("board-group-by-typo", (*BOARD, "--group-by", "famly"), "--group-by takes one of", setup=results()),
    Case(
        "board-filter-malformed", (*BOARD, "--filter", "family"), "--filter takes KEY=GLOB", setup=results()
    ),
    Case(
        "board-filter-key-unknown",
        (*BOARD, "--filter", "colour=red"),
        "Unknown --filter key",
        setup=results(),
    ),
    Case(
        "board-weighting-typo",
        (*BOARD, "--weighting", "suites"),
        "--weighting must be one of",
        setup=results(),
    ),
    Case("board-top-zero", (*BOARD, "--top", "0"), "Invalid value", setup=results()),
    # ------------------------------------------------------------------------------------ general
    Case("command-typo", ("runn",), "No such command"),
    Case("no-command-options", ("--bogus",), "No such option"),
    # ------------------------------------------------------------------- bob run: selection, checks
    Case(
        "run-backbone-glob-matches-nothing",
        ("run", "-b", "timm/resnet99*", "-t", "knn/digits"),
        "Unknown backbone pattern 'timm/resnet99*'. Did you mean: timm/resnet",
    ),
    Case("run-task-glob-matches-nothing", ("run", "-b", TINY, "-t", "knnn/*"), "Did you mean: knn/*"),
    Case(
        "run-task-list-typo", ("run", "-b", TINY, "-t", "knn/digits,knn/digitz"), "Did you mean: knn/digits"
    ),
    Case("run-glob-too-big", ("run", "-b", "timm/*", "-t", "knn/digits"), "more than 50: pass --yes"),
    Case(
        "run-scoped-arg-no-task",
        (*RUN, "-a", "linear-probe:epochs=5"),
        "--task-arg linear-probe:epochs=5 applies to no task of this run: its tasks are of the suite knn",
    ),
    Case("run-scoped-arg-typo-no-task", (*RUN, "-a", "linear-probe:epochz=5"), "applies to no task"),
    Case(
        "run-dataset-missing",
        ("run", "-b", TINY, "-t", "linear-probe/cifar10"),
        "Dataset 'cifar10' is not on disk",
        setup=lambda tmp, mp: mp.setenv("BOB_DATA_ROOT", str(tmp / "data")),
    ),
    Case(
        "run-dataset-root-missing",
        ("run", "-b", TINY, "-t", "knn/cifar10", "-a", "root=nowhere"),
        "nowhere/cifar-10-batches-py does not exist",
    ),
    Case(
        "run-suite-with-no-data",
        ("run", "-b", TINY, "-t", "knn/cifar*"),
        "matches only tasks whose data is not on disk",
        setup=lambda tmp, mp: mp.setenv("BOB_DATA_ROOT", str(tmp / "data")),
    ),
    Case("run-weights-file-missing", (*RUN, "-w", "/no/such.pt"), "no such file"),
    Case("run-pinned-weights-missing", ("run", "-b", f"{TINY}@/no/such.pt", "-t", "knn/digits"), "after '@'"),
    Case("run-pinned-weights-typo", ("run", "-b", f"{TINY}@pretrianed", "-t", "knn/digits"), "after '@'"),
    Case(
        "run-pinned-factory-missing",
        ("run", "-b", "nowhere.py:f@random", "-t", "knn/digits"),
        "does not exist",
    ),
    Case(
        "run-dry-run-dataset-missing",
        ("run", "-b", TINY, "-t", "linear-probe/cifar10", "--dry-run"),
        "is not on disk",
        setup=lambda tmp, mp: mp.setenv("BOB_DATA_ROOT", str(tmp / "data")),
    ),
]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    if case.setup is not None:
        case.setup(in_tmp, monkeypatch)
    before = tree(in_tmp)
    code, text = invoke(list(case.argv), capsys)
    assert code == case.code, f"exit {code}, expected {case.code}:\n{text}"
    flat = " ".join(text.split())
    assert " ".join(case.phrase.split()) in flat, text
    assert "Traceback" not in text
    assert tree(in_tmp) == before, "a refused command wrote something"
    for hint in HINT.findall(text):
        assert_hint_exists(hint, capsys)


def test_corpus_ids_are_unique_and_cover_every_command() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
    commands = {c.argv[0] for c in CASES}
    assert {"run", "ls", "check", "sweep", "leaderboard"} <= commands


def test_the_report_of_a_two_problem_sweep_names_both(in_tmp: Path, monkeypatch, capsys) -> None:
    sweep(grid(backbones="[timm/resnet5O]", tasks="[knn/shapes-mimi]"))(in_tmp, monkeypatch)
    code, text = invoke(["sweep", "s.yaml", "--dry-run"], capsys)
    assert (
        code == 2 and "Unknown backbone 'timm/resnet5O'" in text and "Unknown task 'knn/shapes-mimi'" in text
    )


def test_dry_run_json_of_a_valid_sweep_is_not_refused(in_tmp: Path, monkeypatch, capsys) -> None:
    """The corpus's sweeps are refused for their mistakes, not for being sweeps: the same file without
    them plans (the size limit applies to running, never to --dry-run)."""
    sweep(grid(tasks="[knn/shapes-mini, ncm/shapes-mini]", extra="max_runs: 1\n"))(in_tmp, monkeypatch)
    code, text = invoke(["sweep", "s.yaml", "--dry-run", "--json"], capsys)
    assert code == 0, text
    assert json.loads(text)["runs"] == 2
