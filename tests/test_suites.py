"""The suite registry (bob/suites.py): suites are the folders of bob.tasks, read from their Task class."""

from __future__ import annotations

import types

import pytest

from bob import suites
from bob.errors import UnknownNameError
from bob.suites import SUITES, SuiteDefinitionError, parse_task_name, task_names
from bob.task import Task, TaskArgs

BOB_SUITES = {
    "linear-probe", "knn", "retrieval", "finetune", "few-label", "ood", "detection", "multilabel",
    "open-vocab", "efficiency", "iqa", "segmentation", "zero-shot", "video-cls", "reid", "dg",
    "tradeoff", "rvos", "vis",
}  # fmt: skip


def test_every_suite_folder_is_a_registered_suite():
    assert set(SUITES.names()) >= BOB_SUITES
    assert suites.suite_folders() == sorted(n.replace("-", "_") for n in SUITES.names())
    assert "common" not in suites.suite_folders()


def test_unknown_suites_and_tasks_suggest_close_names():
    with pytest.raises(
        UnknownNameError, match=r"Unknown task suite 'linear-prob'\. Did you mean: linear-probe"
    ):
        SUITES.get("linear-prob")
    with pytest.raises(UnknownNameError, match="Did you mean: linear-probe/digits"):
        parse_task_name("linear-prob/digits")
    with pytest.raises(UnknownNameError, match="Unknown task 'knn/scenes'"):
        parse_task_name("knn/scenes")  # a detection set is no classification task
    assert parse_task_name("knn/digits").suite == "knn"
    assert "knn/digits" in task_names("knn/*") and not task_names("nothing/*")


def _module(name: str, **classes: type) -> types.ModuleType:
    module = types.ModuleType(name)
    for cls in classes.values():
        cls.__module__ = name
    vars(module).update(classes)
    return module


def _task(suite: str, name: str) -> type[Task]:
    return type(name, (Task,), {"suite": suite, "version": "1", "main_metric": "top1", "Args": TaskArgs})


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ({}, "must define exactly one Task subclass in its __init__.py, found none"),
        ({"A": _task("demo", "Demo"), "B": _task("demo", "Other")}, "exactly one Task subclass"),
        ({"A": _task("demo", "DemoTask")}, "its class be named Demo"),
        ({"A": _task("other", "Other")}, "suite 'other' must live in tasks/other/"),
    ],
)
def test_a_suite_folder_that_breaks_the_anatomy_is_reported(monkeypatch, classes, message):
    module = _module("bob.tasks.demo", **classes)
    monkeypatch.setattr(suites.importlib, "import_module", lambda name: module)
    with pytest.raises(SuiteDefinitionError, match=message):
        suites._suite_class("demo")


def test_a_suite_defined_in_code_registers_and_unregisters():
    cls = _task("notebook-demo", "NotebookDemo")
    SUITES.register(cls)
    try:
        assert SUITES.get("notebook-demo") is cls and "notebook-demo/digits" in task_names()
        with pytest.raises(ValueError, match="already registered"):
            SUITES.register(cls)
    finally:
        SUITES.unregister("notebook-demo")
    assert "notebook-demo" not in SUITES


def test_the_feature_cache_rule_reads_the_task_args():
    assert SUITES.get("knn").uses_feature_cache({})
    assert not SUITES.get("finetune").uses_feature_cache({})
    ood = SUITES.get("ood")
    assert ood.uses_feature_cache({"mode": "linear"}) and not ood.uses_feature_cache({"mode": "finetune"})


def test_an_arg_added_later_keeps_old_ids_until_it_is_set():
    """`omit_default`: the identity leaves the arg out at its default, so results made before the arg
    existed stay done; a run that sets it is a different run."""
    from dataclasses import dataclass

    from bob.task import run_arg

    @dataclass
    class Before(TaskArgs):
        k: int = run_arg(20, "neighbours")

    @dataclass
    class After(Before):
        limit: int | None = run_arg(None, "images per split", omit_default=True)

    assert After().identity() == Before().identity() == {"image_size": None, "k": 20}
    assert After(limit=100).identity() == {"image_size": None, "k": 20, "limit": 100}
