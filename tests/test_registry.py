"""The registry, name indexes and packaging: names resolve without torch, unknown names get suggestions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bob.backbones.catalog import BACKBONES, index_names, load_index
from bob.errors import UnknownNameError
from bob.registry import Registry, match, suggest


def test_registry_register_get_and_collision():
    reg: Registry = Registry("widget")
    reg.register("alpha", "json:dumps", colour="red")
    entry = reg.get("alpha")
    assert entry.meta["colour"] == "red"
    assert entry.load()({"a": 1}) == '{"a": 1}'
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha", "json:loads")


def test_unknown_name_suggests_close_matches():
    reg: Registry = Registry("widget")
    for name in ("linear-probe", "knn", "finetune"):
        reg.register(name, "json:dumps")
    with pytest.raises(UnknownNameError) as info:
        reg.get("linear-prob")
    assert "Did you mean: linear-probe" in str(info.value)


def test_glob_matches_name_part_like_timm():
    names = ["timm/resnet50", "torchvision/resnet50", "timm/vit_small"]
    assert match("resnet*", names) == ["timm/resnet50", "torchvision/resnet50"]
    assert match("timm/*", names) == ["timm/resnet50", "timm/vit_small"]
    assert match("TIMM/VIT*", names) == ["timm/vit_small"]


def test_backbone_namespaces_resolve_from_the_index():
    assert "torchvision/mobilenet_v2" in BACKBONES
    assert "torchvision/mobilenet_v2.IMAGENET1K_V1" in BACKBONES
    assert "timm/resnet50.a1_in1k" in BACKBONES
    assert "timm/vit_small_patch16_224.augreg_in21k_ft_in1k" in BACKBONES
    entry = BACKBONES.get("timm/resnet18.a1_in1k")
    assert entry.meta == {"namespace": "timm", "name": "resnet18.a1_in1k"}
    curated = BACKBONES.get("timm/resnet50.a1_in1k")  # a catalog entry over a namespace name
    assert curated.meta["catalog"]["groups"] == ["bob"]


def test_bare_architecture_name_suggests_namespaced_names():
    with pytest.raises(UnknownNameError) as info:
        BACKBONES.get("resnet50")
    message = str(info.value)
    assert "timm/resnet50" in message and "torchvision/resnet50" in message
    assert "'timm/'" in message  # explains the namespaces


def test_typo_in_backbone_name_suggests():
    with pytest.raises(UnknownNameError) as info:
        BACKBONES.get("torchvision/mobilnet_v2")
    assert "torchvision/mobilenet_v2" in info.value.suggestions


def test_suggest_prefers_same_name_part():
    assert suggest("timm/mobilenet_v2", ["torchvision/mobilenet_v2", "timm/mobilenetv2_100"])[0] in (
        "torchvision/mobilenet_v2",
        "timm/mobilenetv2_100",
    )


def test_static_indexes_match_the_installed_libraries():
    """The shipped indexes must be rebuilt (scripts/build_backbone_index.py) when timm or torchvision change."""
    import timm
    import torchvision
    from torchvision import models as tv_models

    assert load_index("timm")["version"] == timm.__version__
    assert set(load_index("timm")["architectures"]) == set(timm.list_models())
    pretrained = set(timm.list_models(pretrained=True))
    assert pretrained <= set(index_names("timm"))
    assert load_index("torchvision")["version"] == torchvision.__version__
    assert set(load_index("torchvision")["architectures"]) == set(tv_models.list_models(module=tv_models))


def _run_python(code: str, cwd: str = "/") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_listing_never_imports_torch():
    # Sweeps validate every suite's task args before any run: loading each task class stays light too.
    code = (
        "import sys\n"
        "from bob.cli.ls import list_kind\n"
        "from bob.suites import SUITES, task_class\n"
        "for kind in ('backbones', 'tasks', 'datasets'):\n"
        "    list_kind(kind, None, as_json=True, show_all=False)\n"
        "list_kind('backbones', 'timm/vit_*', as_json=True, show_all=False)\n"
        "assert len([task_class(suite) for suite in SUITES.names()]) >= 19\n"
        "heavy = [m for m in ('torch', 'torchvision', 'timm') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_tasks_and_backbones_are_not_top_level_modules():
    """They ship as bob.tasks / bob.backbones; generic top-level names would shadow other packages."""
    proc = _run_python(
        "import importlib.util as u, bob.tasks, bob.backbones\n"
        "print(u.find_spec('tasks'), u.find_spec('backbones'))\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "None None"
