"""Battle of the Backbones' classification recipes, read from `bob_recipes.yaml` beside this module.

`protocol=bob` (tasks/common/args.py) applies them: the suite's recipe (finetune, few-label), then the
per-backbone overrides of BoB's model configs, keyed by the catalog name. Torch-free, like every
suite's Args. The file is data: its schema is checked here, its values are BoB's (each with its
`source` file in hsouri/bob-classification), and a run records what it applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

RECIPES_FILE = "bob_recipes.yaml"
# The suites the file carries recipes for, and the keys a recipe may set.
RECIPE_SUITES = ("finetune", "few-label")
RECIPE_KEYS = {
    "epochs": int,
    "warmup_epochs": int,
    "lr": float,
    "weight_decay": float,
    "layer_decay": float,
    "drop_path": float,
    "auto_augment": str,
    "batch": int,
    "accum": int,
    "gpus": int,
}
# The keys a backbone entry may override per suite, and what it carries for every suite.
BACKBONE_SUITE_KEYS = ("epochs", "lr", "batch", "accum")
BACKBONE_KEYS = {"crop_pct", "source", *RECIPE_SUITES}


@dataclass(frozen=True)
class BobRecipe:
    """BoB's recipe for one suite and backbone: the suite's values with the backbone's overrides on top."""

    suite: str
    backbone: str
    values: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)  # what the backbone entry changed
    crop_pct: float | None = None  # BoB's eval crop for this backbone, where its model config sets one
    sources: tuple[str, ...] = ()

    @property
    def effective_batch(self) -> int:
        """Images per optimizer step in BoB's run: per-GPU batch × accum_iter × GPUs."""
        return self.values["batch"] * self.values["accum"] * self.values["gpus"]

    @property
    def accum_steps(self) -> int:
        """Batches per optimizer step on one device for BoB's effective batch at its per-GPU batch."""
        return self.values["accum"] * self.values["gpus"]

    def describe(self) -> dict[str, Any]:
        """What a result's protocol records about the recipe."""
        return {
            "file": f"tasks/common/{RECIPES_FILE}",
            "suite": self.suite,
            "backbone": self.backbone,
            "values": dict(self.values),
            "backbone_overrides": dict(self.overrides),
            "crop_pct": self.crop_pct,
            "bob_effective_batch": self.effective_batch,
            "sources": list(self.sources),
        }


def _check_values(values: Any, where: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValueError(f"{RECIPES_FILE}: {where} must be a mapping, got {type(values).__name__}")
    keys = allowed if allowed is not None else tuple(RECIPE_KEYS)
    unknown = set(values) - set(keys)
    if unknown:
        raise ValueError(f"{RECIPES_FILE}: {where} has unknown keys {sorted(unknown)}; allowed: {list(keys)}")
    out: dict[str, Any] = {}
    for key, value in values.items():
        kind = RECIPE_KEYS[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{RECIPES_FILE}: {where}.{key} must be {kind.__name__}, got {value!r}")
        if kind in (int, float) and value <= 0 and key != "warmup_epochs":
            raise ValueError(f"{RECIPES_FILE}: {where}.{key} must be positive, got {value!r}")
        out[key] = value
    return out


@cache
def load_recipes() -> dict[str, Any]:
    """The file, parsed and checked: {"suites": {suite: values}, "backbones": {name: entry}}."""
    import yaml

    text = resources.files("bob.tasks.common").joinpath(RECIPES_FILE).read_text()
    data = yaml.safe_load(text) or {}
    if set(data) != {"suites", "backbones"}:
        raise ValueError(f"{RECIPES_FILE}: top-level keys must be suites and backbones, got {sorted(data)}")
    suites: dict[str, dict[str, Any]] = {}
    for suite, values in data["suites"].items():
        if suite not in RECIPE_SUITES:
            raise ValueError(f"{RECIPES_FILE}: unknown suite '{suite}' (known: {', '.join(RECIPE_SUITES)})")
        values = dict(values)
        source = values.pop("source", None)
        checked = _check_values(values, f"suites.{suite}")
        missing = set(RECIPE_KEYS) - set(checked)
        if missing or not source:
            raise ValueError(f"{RECIPES_FILE}: suites.{suite} lacks {sorted(missing) or ['source']}")
        suites[suite] = {"values": checked, "source": source}
    backbones: dict[str, dict[str, Any]] = {}
    for name, entry in (data["backbones"] or {}).items():
        if not isinstance(entry, dict) or set(entry) - BACKBONE_KEYS or "source" not in entry:
            raise ValueError(
                f"{RECIPES_FILE}: backbones.{name} must be a mapping with a source and only "
                f"{sorted(BACKBONE_KEYS)}"
            )
        parsed: dict[str, Any] = {"source": entry["source"], "crop_pct": None}
        if "crop_pct" in entry:
            crop = entry["crop_pct"]
            if not isinstance(crop, float) or not 0 < crop <= 1:
                raise ValueError(f"{RECIPES_FILE}: backbones.{name}.crop_pct must be in (0, 1], got {crop!r}")
            parsed["crop_pct"] = crop
        for suite in RECIPE_SUITES:
            if suite in entry:
                parsed[suite] = _check_values(entry[suite], f"backbones.{name}.{suite}", BACKBONE_SUITE_KEYS)
        backbones[name] = parsed
    return {"suites": suites, "backbones": backbones}


def bob_recipe(suite: str, backbone: str) -> BobRecipe:
    """BoB's recipe for `suite` with the overrides of the catalog backbone `backbone` (none if unlisted)."""
    recipes = load_recipes()
    if suite not in recipes["suites"]:
        raise ValueError(f"{RECIPES_FILE} has no recipe for the suite '{suite}'")
    base = recipes["suites"][suite]
    entry = recipes["backbones"].get(backbone, {})
    overrides = dict(entry.get(suite, {}))
    sources = [base["source"]] + ([entry["source"]] if entry else [])
    return BobRecipe(
        suite=suite,
        backbone=backbone,
        values={**base["values"], **overrides},
        overrides=overrides,
        crop_pct=entry.get("crop_pct"),
        sources=tuple(sources),
    )


def bob_crop_pct(backbone: str) -> float | None:
    """BoB's eval crop for a catalog backbone, where its model config sets one (CLIP ViTs: 0.9)."""
    return load_recipes()["backbones"].get(backbone, {}).get("crop_pct")
