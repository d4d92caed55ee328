"""Torch-free descriptions of a backbone: its identity, eval transform and feature levels."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bob.errors import UsageError

FAMILIES = ("cnn", "vit", "hierarchical", "hybrid", "diffusion")
# How images become pixels: "pil" (PIL decode and resize, the reference every cached feature before
# pipelines existed was computed with) or "tensor" (torchvision.io decode, resize on uint8 tensors).
PIPELINES = ("pil", "tensor")
DEFAULT_PIPELINE = "pil"
# Reduced precision of the extraction forward: fp32, or autocast to bfloat16 / float16.
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DataConfig:
    """The checkpoint's own eval transform: resize to input_size / crop_pct, then center-crop input_size.

    `pipeline` says which implementation decodes and resizes (`PIPELINES`). It is part of the
    transform's identity (feature-cache keys, a result's `protocol.transform`) only when it is not the
    default, so every key computed before pipelines existed stays what it was.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    crop_mode: str = "center"  # "center" (resize shorter side) | "squash" (resize both sides)
    pipeline: str = DEFAULT_PIPELINE

    def with_overrides(
        self, image_size: int | None = None, crop_pct: float | None = None, pipeline: str | None = None
    ) -> DataConfig:
        """The same transform at another resolution or crop fraction (tasks on small embedded images),
        or through another pipeline."""
        changes: dict[str, Any] = {}
        if image_size is not None:
            changes["input_size"] = int(image_size)
        if crop_pct is not None:
            changes["crop_pct"] = float(crop_pct)
        if pipeline is not None:
            changes["pipeline"] = pipeline
        return replace(self, **changes)

    @property
    def resize_size(self) -> int:
        """The resize before the crop: timm's `floor(input_size / crop_pct)`."""
        return math.floor(self.input_size / self.crop_pct)

    def geometry(self) -> dict[str, Any]:
        """Everything that fixes the uint8 pixels a backbone sees, i.e. the transform without its
        normalisation: backbones that agree on it can share one decode (the geometry cache)."""
        return {
            "resize": self.resize_size,
            "crop": self.input_size,
            "crop_mode": self.crop_mode,
            "interpolation": self.interpolation,
            "pipeline": self.pipeline,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if self.pipeline == DEFAULT_PIPELINE:
            del d["pipeline"]  # the identity every key had before pipelines existed
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})


@dataclass(frozen=True)
class Extraction:
    """How bob runs a backbone to extract its features: the image pipeline, the precision of the
    forward and the memory format. They are backbone args of the run (`--backbone-arg precision=bf16`,
    or `bob run --precision bf16`), so a run that sets one has an id of its own, and bob takes them out
    before the backbone is built (`split_args`). At their defaults they are absent from every identity:
    runs, results and cached features from before these options existed keep their ids and keys."""

    pipeline: str = DEFAULT_PIPELINE
    precision: str = "fp32"
    channels_last: bool = False

    ARGS = ("pipeline", "precision", "channels_last")

    def __post_init__(self) -> None:
        if self.pipeline not in PIPELINES:
            raise UsageError(f"pipeline must be one of {', '.join(PIPELINES)}, got {self.pipeline!r}.")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        if not isinstance(self.channels_last, bool):
            raise UsageError(f"channels_last must be true or false, got {self.channels_last!r}.")

    @classmethod
    def split_args(cls, args: dict[str, Any] | None) -> tuple[Extraction, dict[str, Any]]:
        """(the extraction settings among a run's backbone args, the args the backbone is built with)."""
        args = dict(args or {})
        mine = {k: args.pop(k) for k in cls.ARGS if k in args}
        return cls(**mine), args

    def identity(self) -> dict[str, Any]:
        """The settings that differ from the defaults, as backbone args (empty at the defaults)."""
        defaults = Extraction()
        return {k: getattr(self, k) for k in self.ARGS if getattr(self, k) != getattr(defaults, k)}


@dataclass(frozen=True)
class FeatureInfo:
    """One feature level: channels, stride relative to the input, and the module it is taken from."""

    channels: int
    stride: int
    module: str = ""


@dataclass
class BackboneMeta:
    """Who a backbone is. Recorded in every result; the leaderboard groups by these fields."""

    name: str  # as requested, e.g. "torchvision/mobilenet_v2"
    resolved_name: str  # with the weights tag made explicit, e.g. "torchvision/mobilenet_v2.IMAGENET1K_V1"
    adapter: str  # "timm" | "torchvision" | …
    family: str  # one of FAMILIES
    method: str  # "supervised" | "ssl:<method>" | "vision-language" | "generative" | "random" | "unknown"
    pretrain_data: str | None = None
    params: int | None = None
    pooled_dim: int | None = None
    license: str | None = None
    architecture: str = ""
    weights: dict[str, Any] = field(default_factory=dict)
    # "catalog" when the fields above come from a curated entry, "inferred" when read off names.
    meta_source: str = "inferred"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
