"""Regenerate the index of pretrained weight files that lets `bob ls backbones --available` say which
backbones' weights are on this machine without importing torch.

    python scripts/build_weights_index.py      # writes backbones/index/weights.json

For every `arch<sep>tag` of the name indexes (timm, torchvision, open_clip) it records the files the
adapter would look for, in the adapter's own order and as the adapter derives them (`_sources`):
Hugging Face hub files as `hf-hub:<repo>/<file>` (`hf-default:<repo>` for the adapter's default
files; a bare `hf-default:` is timm's own repo of the tag, `timm/<arch>.<tag>`), release URLs as `file:<name>`, the name the file has in the torch hub cache and a mirror. Run it after
rebuilding the name indexes; tests/test_offline_weights.py fails when it and the adapters disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import timm
from torchvision import models as tv_models

from bob.backbones import open_clip_backbone, timm_backbone
from bob.backbones.catalog import load_index

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "backbones" / "index" / "weights.json"


# The hub files each adapter tries when a tag names only its repo: recorded once, as `hf-default:<repo>`.
DEFAULT_FILES = {
    "timm": list(timm_backbone._HF_DEFAULT_FILES),
    "open_clip": [open_clip_backbone._HF_SAFE_FILE, open_clip_backbone._HF_DEFAULT_FILE],
}


def _described(sources: list, library: str, name: str) -> list[str]:
    """`hf-default:<repo>` for a repo's default files, else `hf-hub:<repo>/<file>`; `file:<name>` for a URL."""
    out: list[str] = []
    defaults = DEFAULT_FILES[library]
    repos = [s.location.rsplit("/", 1)[0] for s in sources if s.kind == "hf-hub"]
    for repo in dict.fromkeys(repos):
        files = [s.filename for s in sources if s.kind == "hf-hub" and s.location.rsplit("/", 1)[0] == repo]
        short = "hf-default:" if repo == f"timm/{name}" else f"hf-default:{repo}"  # timm's own repo: implied
        out += [short] if files == defaults else [f"hf-hub:{repo}/{f}" for f in files]
    return out + [f"file:{s.filename}" for s in sources if s.kind != "hf-hub"]


def timm_files() -> dict[str, list[str]]:
    files = {}
    for arch, entry in load_index("timm")["architectures"].items():
        for tag in entry["tags"]:
            cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}")
            if cfg is not None:
                files[f"{arch}.{tag}"] = _described(timm_backbone._sources(cfg), "timm", f"{arch}.{tag}")
    return files


def torchvision_files() -> dict[str, list[str]]:
    files = {}
    for arch, entry in load_index("torchvision")["architectures"].items():
        enum = tv_models.get_model_weights(arch)
        for tag in entry["tags"]:
            files[f"{arch}.{tag}"] = [f"file:{enum[tag].url.rsplit('/', 1)[-1]}"]
    return files


def open_clip_files() -> dict[str, list[str]]:
    files = {}
    for arch, entry in load_index("open_clip")["architectures"].items():
        for tag in entry["tags"]:
            pcfg = open_clip.get_pretrained_cfg(arch, tag)
            files[f"{arch}:{tag}"] = _described(
                open_clip_backbone._sources(pcfg), "open_clip", f"{arch}:{tag}"
            )
    return files


def build() -> dict:
    return {
        "default_files": DEFAULT_FILES,
        "timm": {"version": timm.__version__, "files": timm_files()},
        "torchvision": {"version": load_index("torchvision")["version"], "files": torchvision_files()},
        "open_clip": {"version": open_clip.__version__, "files": open_clip_files()},
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), separators=(",", ":"), sort_keys=True) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} KB)")
