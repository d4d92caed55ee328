"""Torch-free descriptions of a backbone: its identity, eval transform and feature levels."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

FAMILIES = ("cnn", "vit", "hierarchical", "hybrid", "diffusion")


@dataclass(frozen=True)
class DataConfig:
    """The checkpoint's own eval transform: resize to input_size / crop_pct, then center-crop input_size."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    crop_mode: str = "center"  # "center" (resize shorter side) | "squash" (resize both sides)

    def with_overrides(self, image_size: int | None = None, crop_pct: float | None = None) -> DataConfig:
        """The same transform at another resolution or crop fraction (tasks on small embedded images)."""
        changes: dict[str, Any] = {}
        if image_size is not None:
            changes["input_size"] = int(image_size)
        if crop_pct is not None:
            changes["crop_pct"] = float(crop_pct)
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})


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
