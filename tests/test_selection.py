"""Selection in `bob run` and `bob.api.run`: globs, comma lists, suite names, `NAME@WEIGHTS`, the
size limit of expanded grids, scoped task args that match no task, and real datasets not on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bob import api
from bob.backbones.catalog import BACKBONES
from bob.errors import UnknownNameError, UsageError
from bob.selection import (
    MAX_RUNS,
    Selection,
    check_grid_size,
    dataset_problem,
    is_pattern,
    require_datasets,
    select,
    split_items,
    split_weights,
)
from bob.spec import make_spec
from bob.suites import task_names
from tests.cli_harness import TINY, invoke

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "my_backbone.py")


@pytest.fixture
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data root: no real dataset is on disk."""
    monkeypatch.setenv("BOB_DATA_ROOT", str(tmp_path / "data"))
    return tmp_path / "data"


def test_comma_lists_split_at_top_level_only() -> None:
    assert split_items(["a,b", " c ,", "composite(x,y),d"]) == ["a", "b", "c", "composite(x,y)", "d"]


def test_factories_paths_and_composites_are_never_globbed() -> None:
    assert is_pattern("timm/resnet*") and is_pattern("knn/*")
    for name in ("nets*.py:build", "./runs/*/net.py", "composite(timm/resnet*)", "my_pkg.nets:build"):
        assert not is_pattern(name), name


def test_weights_suffix(tmp_path: Path) -> None:
    assert split_weights("timm/resnet18@random") == ("timm/resnet18", "random")
    assert split_weights("net.py:build@/ckpt/best.pt") == ("net.py:build", "/ckpt/best.pt")
    assert split_weights("timm/resnet18") == ("timm/resnet18", None)
    assert split_weights("@random") == ("@random", None)
    folder = tmp_path / "runs@2"
    folder.mkdir()
    (folder / "net.py").write_text("def build(): ...\n")
    factory = f"{folder}/net.py:build"
    assert split_weights(factory) == (factory, None)  # an '@' in an existing file's path stays
    assert split_weights(f"{factory}@random") == (factory, "random")


def test_no_registry_name_holds_an_at_sign() -> None:
    assert not [n for n in BACKBONES.names() if "@" in n]


def test_a_backbone_glob_expands_to_the_registry_names_it_matches() -> None:
    selection = select(["torchvision/mobilenet_v3*"], ["knn/digits"])
    expected = BACKBONES.names("torchvision/mobilenet_v3*")
    assert [b for b, _ in selection.backbones] == expected and len(expected) > 1
    assert selection.tasks == ("knn/digits",)
    (note,) = selection.notes()
    assert note.startswith("-b torchvision/mobilenet_v3* → ") and f"({len(expected)} backbones)" in note


def test_a_suite_name_is_every_task_of_the_suite_whose_data_is_on_disk(no_data: Path) -> None:
    every = task_names("knn/*")
    selection = select([TINY], ["knn"], lambda t: dataset_problem(t.split("/")[1], None, False) is None)
    kept = [t for t in every if dataset_problem(t.split("/")[1], None, False) is None]
    assert list(selection.tasks) == kept and "knn/cifar10" not in kept and "knn/digits" in kept
    assert "knn/cifar10" in selection.expansions[0].left_out
    assert "left out, data not on disk: " in selection.notes()[0]
    assert select([TINY], ["knn"]).tasks == tuple(every)  # every task when all data is there


def test_globs_and_comma_lists_of_tasks_keep_order_and_drop_duplicates() -> None:
    selection = select([TINY], ["knn/shapes-mini,linear-probe/shapes-mini", "knn/shapes-m*"])
    assert selection.tasks == ("knn/shapes-mini", "linear-probe/shapes-mini")


def test_exact_names_pass_through_without_expansion() -> None:
    selection = select([TINY, f"{EXAMPLE}:tiny_convnet"], ["knn/digits"])
    assert selection.expansions == () and [b for b, _ in selection.backbones] == [
        TINY,
        f"{EXAMPLE}:tiny_convnet",
    ]


@pytest.mark.parametrize(
    ("backbones", "tasks", "phrase"),
    [
        (
            ["timm/resnet99*"],
            ["knn/digits"],
            "Unknown backbone pattern 'timm/resnet99*'. Did you mean: timm/resnet",
        ),
        ([TINY], ["knnn/*"], "Unknown task pattern 'knnn/*'. Did you mean: knn/*"),
        ([TINY], ["knn/zz*"], "It matches no task"),
    ],
)
def test_a_pattern_matching_nothing_is_an_unknown_name(backbones, tasks, phrase) -> None:
    with pytest.raises(UnknownNameError, match=phrase.replace("*", r"\*").replace("(", r"\(")):
        select(backbones, tasks)


def test_pinned_weights_form_no_product_and_plain_ones_do() -> None:
    specs = api.run_specs([f"{EXAMPLE}:tiny_convnet@random", TINY], "knn/digits", ["pretrained", "random"])
    assert [(s.backbone, s.weights) for s in specs] == [
        (f"{EXAMPLE}:tiny_convnet", "random"),
        (TINY, "pretrained"),
        (TINY, "random"),
    ]
    assert specs[0].id == make_spec(f"{EXAMPLE}:tiny_convnet", "knn/digits", "random").id


def test_pinned_weights_that_are_no_weights_are_refused() -> None:
    with pytest.raises(UsageError, match=r"-b timm/test_resnet@/no/such.pt: the weights after '@'"):
        select([f"{TINY}@/no/such.pt"], ["knn/digits"])


def test_an_expanded_grid_past_the_limit_needs_yes() -> None:
    big = select(["timm/resnet*"], ["knn/digits"])
    runs = big.runs(["random"], [0])
    assert runs > MAX_RUNS
    with pytest.raises(UsageError, match=rf"expands to {runs:,} runs, more than {MAX_RUNS}: pass --yes"):
        check_grid_size(big, runs, yes=False)
    check_grid_size(big, runs, yes=True)
    check_grid_size(Selection(big.backbones, big.tasks), runs, yes=False)  # typed out by hand: no limit
    with pytest.raises(UsageError, match="pass --yes"):
        api.run("timm/resnet*", "knn/digits", "random", results_dir="unused")


def test_a_scoped_task_arg_that_matches_no_task_is_refused() -> None:
    for arg in ("linear-probe:epochs=5", "linear-probe:epochz=5"):
        with pytest.raises(
            UsageError, match=f"--task-arg {arg} applies to no task of this run: .* suite knn"
        ):
            api.run_specs(TINY, ["knn/digits", "knn/shapes-mini"], "random", task_args=[arg])
    # A scoped arg that only some tasks of the grid take is what scoping is for.
    specs = api.run_specs(
        TINY, "knn/digits,linear-probe/digits", "random", task_args=["linear-probe:epochs=5"]
    )
    assert [s.task_args.get("epochs") for s in specs] == [None, 5]


def test_a_real_dataset_not_on_disk_is_named_with_where_bob_looked(no_data: Path, tmp_path: Path) -> None:
    problem = dataset_problem("cifar10", None, False)
    assert problem is not None and str(no_data / "cifar-10-batches-py") in problem
    assert dataset_problem("cifar10", None, True) is None  # a download was asked for
    assert dataset_problem("digits", None, False) is None  # embedded
    (tmp_path / "mine" / "cifar-10-batches-py").mkdir(parents=True)
    assert dataset_problem("cifar10", tmp_path / "mine", False) is None
    with pytest.raises(UsageError, match="linear-probe/cifar10: Dataset 'cifar10' is not on disk"):
        require_datasets([("linear-probe/cifar10", None, False)])


def test_selection_and_exact_grids_import_no_torch() -> None:
    code = (
        "import sys, bob.api as a; a.run_specs('timm/test_resnet', 'knn/digits', 'random'); "
        "a.run_specs('timm/test_*', 'knn', 'random'); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cli_prints_each_expansion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, no_data
) -> None:
    monkeypatch.chdir(tmp_path)
    code, text = invoke(["run", "-b", TINY, "-w", "random", "-t", "ncm", "--dry-run"], capsys)
    kept = [t for t in task_names("ncm/*") if dataset_problem(t.split("/")[1], None, False) is None]
    assert code == 0, text
    assert f"-t ncm → {', '.join(kept[:6])}, … ({len(kept)} tasks)" in text
