"""A sweep's extractions grouped by eval geometry: how many decodes the geometry cache saves and how
many bytes it will hold (`bob sweep FILE --dry-run --geometry`).

Every unique extraction of a plan (backbone × weights × backbone args × init seed × resolution ×
dataset) decodes each image of its dataset's splits. Extractions that agree on the dataset and on
the geometry of their eval transform (resize, crop, crop mode, interpolation, pipeline;
`DataConfig.geometry()`) need the same uint8 pixels, so with a geometry cache (`--geometry-cache`)
the sweep decodes each (dataset, geometry) once and every other extraction reads it.

A geometry is read off the backbone's resolved transform, exactly as a run builds it
(`RunContext.data_config`: the backbone's own config at the task's or dataset's resolution and crop,
through the run's pipeline). Resolving imports the backbone's library (timm, torch), which is why the
plain dry run does not do it. The transform is resolved with random weights: it is the architecture's
eval config, the same the pretrained checkpoint declares, and needs no weight file.

Bytes are `images × 3 × crop²` per stored split; a dataset whose entry does not state its split
sizes (`split_sizes`) and whose splits are not generated or embedded is listed as unsized, never
guessed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bob.backbones import resolve_backbone
from bob.backbones.meta import Extraction
from bob.data import DATASETS, dataset_info, load_split
from bob.errors import BobError
from bob.sweep.plan import extraction_keys, reads_feature_cache

if TYPE_CHECKING:
    from bob.sweep.plan import Plan

SHIFTED_SUFFIX = " (shifted sets)"


@dataclass
class GeometryReport:
    """What sharing decoded pixels changes for one plan."""

    extractions: int = 0  # unique feature extractions, each decodes its dataset once without sharing
    geometries: int = 0  # unique (dataset, geometry): the decodes with the geometry cache
    cache_bytes: int = 0  # what the geometry cache holds for the sized datasets
    unsized: list[str] = field(default_factory=list)  # datasets whose image counts are unknown
    unresolved: dict[str, str] = field(default_factory=dict)  # backbone -> why its transform is unknown
    by_geometry: dict[str, int] = field(default_factory=dict)  # "dataset · geometry" -> extractions

    @property
    def decodes_saved(self) -> int:
        return self.extractions - self.geometries

    def to_dict(self) -> dict[str, Any]:
        return {
            "extractions": self.extractions,
            "geometries": self.geometries,
            "decodes_without_sharing": self.extractions,
            "decodes_with_sharing": self.geometries,
            "geometry_cache_bytes": self.cache_bytes,
            "unsized_datasets": self.unsized,
            "unresolved_backbones": self.unresolved,
        }


def plan_extractions(plan: Plan) -> Iterator[tuple[str, str, dict[str, Any], int | None, Any, str]]:
    """Each unique extraction as (backbone, weights, backbone args, init seed, image_size, dataset)."""
    if plan.stats is not None:
        for backbone, weights, bargs, seed, size, dataset in sorted(plan.stats.extraction_keys, key=repr):
            yield backbone, weights, json.loads(bargs), seed, size, dataset
        return
    seen: set[str] = set()
    for spec in plan.specs():
        if not reads_feature_cache(spec):
            continue
        for key in extraction_keys(spec):
            if key not in seen:
                seen.add(key)
                d = json.loads(key)
                yield (
                    d["backbone"],
                    d["weights"],
                    d["backbone_args"],
                    d["init_seed"],
                    d["image_size"],
                    d["dataset"],
                )


class _Transforms:
    """Each backbone's eval config, resolved once per (name, weights kind, backbone args)."""

    def __init__(self) -> None:
        self.configs: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def get(self, backbone: str, weights: str, args: dict[str, Any]) -> Any:
        extraction, build_args = Extraction.split_args(args)
        # A checkpoint path may carry its own config; the named weights share the architecture's.
        label = weights if weights not in ("pretrained", "random") else "random"
        key = json.dumps([backbone, label, build_args], sort_keys=True, default=str)
        if key not in self.configs and backbone not in self.errors:
            try:
                cfg = resolve_backbone(backbone, label, build_args, 0).data_config
                self.configs[key] = cfg.with_overrides(pipeline=extraction.pipeline)
            except (BobError, ImportError, ValueError, RuntimeError) as err:
                self.errors[backbone] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
        return self.configs.get(key)


def _split_sizes(dataset: str) -> dict[str, int] | None:
    """Images per split: the entry's `split_sizes`, else counted for generated and embedded data."""
    info = dataset_info(dataset)
    if info.split_sizes:
        return {s: int(info.split_sizes[s]) for s in info.splits if s in info.split_sizes}
    if info.kind not in ("generated", "embedded"):
        return None
    try:
        return {s: len(load_split(dataset, s)) for s in info.splits}
    except BobError:  # a split that needs more than the entry (a shift's set on a missing root)
        return None


def geometry_report(plan: Plan) -> GeometryReport:
    """Group the plan's extractions by (dataset, geometry); count decodes and geometry-cache bytes."""
    report = GeometryReport()
    transforms = _Transforms()
    groups: dict[tuple[str, str], int] = {}
    crops: dict[tuple[str, str], int] = {}
    for backbone, weights, args, _seed, size, label in plan_extractions(plan):
        report.extractions += 1
        dataset = label.removesuffix(SHIFTED_SUFFIX)
        cfg = transforms.get(backbone, weights, args)
        if cfg is None or dataset not in DATASETS:
            geometry = f"unknown ({backbone})"
            crop = None
        else:
            info = dataset_info(dataset)
            cfg = cfg.with_overrides(image_size=size or info.image_size, crop_pct=info.crop_pct)
            geometry = json.dumps(cfg.geometry(), sort_keys=True)
            crop = cfg.input_size
        group = (label, geometry)
        groups[group] = groups.get(group, 0) + 1
        crops[group] = crop
    report.geometries = len(groups)
    report.unresolved = dict(transforms.errors)
    sizes: dict[str, dict[str, int] | None] = {}
    for (label, geometry), n in groups.items():
        dataset = label.removesuffix(SHIFTED_SUFFIX)
        report.by_geometry[f"{label} · {geometry}"] = n
        if dataset not in sizes:
            sizes[dataset] = _split_sizes(dataset) if dataset in DATASETS else None
        crop = crops[(label, geometry)]
        if sizes[dataset] is None or crop is None:
            if dataset not in report.unsized and sizes[dataset] is None:
                report.unsized.append(dataset)
            continue
        report.cache_bytes += sum(sizes[dataset].values()) * 3 * crop * crop
    return report
