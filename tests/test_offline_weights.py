"""Pretrained weights that are nowhere: one WeightsError that names the files, every place bob looked
and what to set, whichever adapter asked. Downloads are monkeypatched: no test touches the network."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

import bob.weights as weights_module
from bob.backbones import resolve_backbone
from bob.errors import WeightsError
from bob.weights import WeightsSource, hf_hub_cache_dir, torch_hub_checkpoints_dir


@dataclass
class Machine:
    mirror: Path
    attempts: list[str] = field(default_factory=list)


@pytest.fixture
def empty_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    """Empty caches and an empty mirror; downloads allowed but every one fails as offline ones do."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("BOB_WEIGHTS_PATH", str(mirror))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("BOB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    machine = Machine(mirror)

    def unreachable(source: WeightsSource) -> Path:
        machine.attempts.append(source.location)
        host = weights_module._host(source)
        raise WeightsError(f"{source.location}: cannot reach {host} (Name or service not known)")

    monkeypatch.setattr(weights_module, "download", unreachable)
    return machine


def _expect_clear_message(message: str, mirror: Path, files: list[str], hosts: list[str]) -> None:
    for name in files:
        assert name in message, name
    for host in hosts:
        assert f"{host}:" in message, host  # every failed host is named, not only the first
    assert str(mirror) in message
    assert "BOB_WEIGHTS_PATH" in message and "HF_HUB_OFFLINE" in message and "-w PATH" in message
    assert "Traceback" not in message


def test_timm_names_every_file_every_place_and_every_host(empty_machine: Machine) -> None:
    import timm

    cfg = timm.models.get_pretrained_cfg("resnet18.a1_in1k")
    url_file = cfg.url.rsplit("/", 1)[-1]
    with pytest.raises(WeightsError) as info:
        resolve_backbone("timm/resnet18", weights="pretrained")
    message = str(info.value)
    _expect_clear_message(
        message, empty_machine.mirror, ["model.safetensors", url_file], ["huggingface.co", "github.com"]
    )
    assert str(torch_hub_checkpoints_dir()) in message and str(hf_hub_cache_dir()) in message
    assert len(empty_machine.attempts) == 3  # one try per file, no retries


def test_torchvision_names_its_file_and_the_torch_hub_cache(empty_machine: Machine) -> None:
    with pytest.raises(WeightsError) as info:
        resolve_backbone("torchvision/mobilenet_v2", weights="pretrained")
    message = str(info.value)
    _expect_clear_message(
        message, empty_machine.mirror, ["mobilenet_v2-b0353104.pth"], ["download.pytorch.org"]
    )
    assert str(torch_hub_checkpoints_dir()) in message
    assert "Hugging Face cache" not in message  # only the caches this file could be in


def test_offline_mode_tries_nothing_and_says_so(
    empty_machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        resolve_backbone("timm/resnet18.a1_in1k", weights="pretrained")
    assert empty_machine.attempts == []
    assert "not attempted" in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)


def test_a_file_put_where_the_message_says_is_found(empty_machine: Machine, weights_dir: Path) -> None:
    with pytest.raises(WeightsError) as info:
        resolve_backbone("torchvision/mobilenet_v2", weights="pretrained")
    assert f"<dir>/{'mobilenet_v2-b0353104.pth'}" in str(info.value)
    (empty_machine.mirror / "mobilenet_v2-b0353104.pth").symlink_to(weights_dir / "mobilenet_v2-b0353104.pth")
    ref = resolve_backbone("torchvision/mobilenet_v2", weights="pretrained")
    assert ref.weights.path == str(empty_machine.mirror / "mobilenet_v2-b0353104.pth")


# ------------------------------------------------------------------ bob ls backbones --available


def test_weights_index_matches_what_the_adapters_look_for() -> None:
    """index/weights.json (scripts/build_weights_index.py) against every adapter's `_sources`."""
    import open_clip
    import timm
    from torchvision import models as tv_models

    from bob.backbones import open_clip_backbone, timm_backbone
    from bob.backbones.catalog import load_index
    from bob.listing import weight_files

    def expected(sources: list[WeightsSource]) -> list[tuple[str, str]]:
        return [("hf", s.location) if s.kind == "hf-hub" else ("file", s.filename) for s in sources]

    checked = 0
    for library, sep in (("timm", "."), ("torchvision", "."), ("open_clip", ":")):
        for arch, entry in load_index(library)["architectures"].items():
            for tag in entry["tags"]:
                name = f"{arch}{sep}{tag}"
                if library == "timm":
                    cfg = timm.models.get_pretrained_cfg(name)
                    want = expected(timm_backbone._sources(cfg)) if cfg is not None else []
                elif library == "torchvision":
                    want = [("file", tv_models.get_model_weights(arch)[tag].url.rsplit("/", 1)[-1])]
                else:
                    want = expected(open_clip_backbone._sources(open_clip.get_pretrained_cfg(arch, tag)))
                assert weight_files(f"{library}/{name}") == want, name
                checked += 1
    assert checked == sum(
        len(e["tags"])
        for lib in ("timm", "torchvision", "open_clip")
        for e in load_index(lib)["architectures"].values()
    )


def test_available_lists_what_is_in_the_mirror_and_the_caches(
    tmp_path: Path, weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bob.listing import list_backbones, weight_files

    monkeypatch.setenv("BOB_WEIGHTS_PATH", str(weights_dir))  # MobileNetV2, as scripts/setup.sh sets it
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    names = {row["name"]: row["available"] for row in list_backbones(available=True)}
    assert names == {
        "torchvision/mobilenet_v2": "BOB_WEIGHTS_PATH",
        "torchvision/mobilenet_v2.IMAGENET1K_V1": "BOB_WEIGHTS_PATH",
    }
    # A torchvision file in the torch hub cache and a timm file in the Hugging Face cache, laid out
    # as those libraries lay them out.
    ((_, v3_file),) = weight_files("torchvision/mobilenet_v3_small.IMAGENET1K_V1")
    hub = torch_hub_checkpoints_dir()
    hub.mkdir(parents=True)
    (hub / v3_file).write_bytes(b"")
    kind, repo_file = weight_files("timm/resnet18.a1_in1k")[0]
    repo, _, filename = repo_file.rpartition("/")
    snapshot = hf_hub_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(b"")
    found = {row["name"]: row["available"] for row in list_backbones(available=True)}
    assert found["torchvision/mobilenet_v3_small"] == "torch hub cache"
    assert found["timm/resnet18"] == found["timm/resnet18.a1_in1k"] == "HF cache" and kind == "hf"
    assert "timm/resnet18.a2_in1k" not in found  # another tag: another file
    every = {row["name"]: row["available"] for row in list_backbones("timm/resnet18*")}
    assert every["timm/resnet18.a2_in1k"] == "no"


def test_ls_available_imports_no_torch(weights_dir: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from bob.cli.ls import list_kind\n"
        "list_kind('backbones', None, as_json=True, show_all=False, filters={'available': True})\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"torchvision/mobilenet_v2"' in proc.stdout and '"available": "BOB_WEIGHTS_PATH"' in proc.stdout
