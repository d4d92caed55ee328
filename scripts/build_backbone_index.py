"""Regenerate the static name indexes that let `bob ls backbones` answer without importing torch.

    python scripts/build_backbone_index.py [timm] [torchvision] [open_clip]   # writes backbones/index/<lib>.json

For timm, every architecture is instantiated on the `meta` device (no memory, no weights) to count
its parameters without the classifier and to read its family. Run it after upgrading timm or
torchvision; tests/test_registry.py fails when the index and the installed libraries disagree.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import timm
import torch
import torchvision
from torchvision import models as tv_models

from bob.backbones.families import infer_family
from bob.backbones.torchvision_backbone import drop_classifier

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "backbones" / "index"


def _has_attention(model: torch.nn.Module) -> bool:
    return any(
        "attention" in type(m).__name__.lower() or type(m).__name__ == "Attention" for m in model.modules()
    )


def timm_index() -> dict:
    archs = {}
    names = timm.list_models()
    for i, arch in enumerate(names):
        entry: dict = {"tags": [], "default_tag": None, "params": None, "family": infer_family(arch)}
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = timm.create_model(arch, pretrained=False, num_classes=0)
            entry["params"] = sum(p.numel() for p in model.parameters())
            entry["family"] = infer_family(arch, _has_attention(model))
        except Exception as err:  # a few archs need extra args; they still resolve at run time
            print(f"  {arch}: params unavailable ({type(err).__name__})", file=sys.stderr)
        archs[arch] = entry
        if i % 100 == 0:
            print(f"timm {i}/{len(names)}", file=sys.stderr)
    for name in timm.list_models(pretrained=True):
        arch, _, tag = name.partition(".")
        if arch in archs and tag:
            archs[arch]["tags"].append(tag)
    for arch, entry in archs.items():
        cfg = timm.models.get_pretrained_cfg(arch)
        entry["default_tag"] = cfg.tag if cfg is not None and entry["tags"] else None
    return {"library": "timm", "version": timm.__version__, "architectures": archs}


def torchvision_index() -> dict:
    archs = {}
    for arch in tv_models.list_models(module=tv_models):
        members = list(tv_models.get_model_weights(arch))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with torch.device("meta"):
                    model = tv_models.get_model(arch, weights=None)
            except NotImplementedError:  # RegNet computes its widths with tensor ops
                model = tv_models.get_model(arch, weights=None)
        drop_classifier(model)
        archs[arch] = {
            "tags": [m.name for m in members],
            "default_tag": members[0].name,
            "params": sum(p.numel() for p in model.parameters()),  # without the classifier, like timm's
            "family": infer_family(arch),
        }
    return {"library": "torchvision", "version": torchvision.__version__, "architectures": archs}


def open_clip_index() -> dict:
    """Every open_clip architecture with its tags, and its image tower's parameter count and family.

    Only the image tower is built (on the `meta` device), as the open_clip adapter builds it: the
    text tower is no part of a backbone's parameters.
    """
    import open_clip

    from bob.backbones.open_clip_backbone import build_visual_tower, tower_family

    archs: dict = {}
    for arch in open_clip.list_models():
        entry: dict = {"tags": [], "default_tag": None, "params": None, "family": infer_family(arch)}
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                visual = build_visual_tower(arch)
            entry["params"] = sum(p.numel() for p in visual.parameters())
            entry["family"] = tower_family(visual)
        except Exception as err:  # an image tower this timm cannot build; it fails at run time too
            print(f"  {arch}: params unavailable ({type(err).__name__}: {err})", file=sys.stderr)
        archs[arch] = entry
    for arch, tag in open_clip.list_pretrained():
        if arch in archs:
            archs[arch]["tags"].append(tag)
    return {"library": "open_clip", "version": open_clip.__version__, "architectures": archs}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    builders = {"torchvision": torchvision_index, "timm": timm_index, "open_clip": open_clip_index}
    which = sys.argv[1:] or list(builders)
    for name in which:
        builder = builders[name]
        index = builder()
        (OUT / f"{name}.json").write_text(json.dumps(index, indent=0, sort_keys=True) + "\n")
        print(f"wrote {OUT / f'{name}.json'}: {len(index['architectures'])} architectures")


if __name__ == "__main__":
    main()
