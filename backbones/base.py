"""The backbone contract every family answers, and the resolved-but-unbuilt `BackboneRef`.

A `Backbone` is an `nn.Module` with:
  - `meta` (who it is), `data_config` (its own eval transform), `feature_info` (channels and
    stride of each feature level);
  - `forward_pooled(x) -> [B, D]`: the global image embedding (GAP for CNNs, the model's own pooling
    — class token or average — for transformers), taken before any classifier;
  - `forward_features(x, levels=None) -> list[[B, C_i, H/s_i, W/s_i]]`: NCHW maps for the requested
    levels (indices into `feature_info`, negatives allowed; None = every level); transformer
    tokens come back reshaped to NCHW with prefix (class/register) tokens dropped;
  - `trainable()`: the module to fine-tune;
  - optionally `native_classifier()`: the checkpoint's own classifier (pooled features → logits)
    and the label space it predicts (e.g. "imagenet-1k"), where the adapter kept it; None otherwise.
Optional, for vision-language checkpoints (zero-shot tasks): `has_text_tower = True` with
`encode_image(x) -> [B, D]` and `encode_text(texts) -> [N, D]`, unnormalised embeddings in one
joint space. Every other backbone keeps the defaults (no text tower; zero-shot skips it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bob.backbones.meta import BackboneMeta, DataConfig, FeatureInfo
from bob.errors import BackboneContractError, UsageError
from bob.weights import ResolvedWeights


class Backbone(nn.Module):
    """Base class of every adapter. Subclasses implement `forward_pooled` and `forward_features`."""

    has_text_tower: bool = False  # True where `encode_image` / `encode_text` share a joint space

    def __init__(self, meta: BackboneMeta, data_config: DataConfig, feature_info: list[FeatureInfo]) -> None:
        super().__init__()
        self.meta = meta
        self.data_config = data_config
        self.feature_info = list(feature_info)

    @property
    def pooled_dim(self) -> int:
        if self.meta.pooled_dim is None:
            raise NotImplementedError(f"{type(self).__name__} does not declare pooled_dim")
        return self.meta.pooled_dim

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor, levels: Sequence[int] | None = None) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pooled(x)

    def trainable(self) -> nn.Module:
        return self

    def native_classifier(self) -> tuple[nn.Module, str] | None:
        """(classifier on `forward_pooled` outputs, its label space), or None when there is none."""
        return self.__dict__.get("_native_classifier")

    def set_native_classifier(self, head: nn.Module, label_space: str) -> None:
        """Keep the checkpoint's classifier outside the module tree, so parameters, state_dict and
        `trainable()` stay exactly the backbone's."""
        self.__dict__["_native_classifier"] = (head.eval(), label_space)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Joint-space image embeddings [B, D] (unnormalised), for backbones with a text tower."""
        raise NotImplementedError(f"{type(self).__name__} has no joint image-text embedding")

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Joint-space text embeddings [N, D] (unnormalised) of `texts`, for backbones with a text tower."""
        raise NotImplementedError(f"{type(self).__name__} has no text tower")

    def resolve_levels(self, levels: Sequence[int] | None) -> list[int]:
        """Normalise level indices (negatives count from the end) and reject out-of-range ones."""
        n = len(self.feature_info)
        if levels is None:
            return list(range(n))
        out = []
        for level in levels:
            idx = level + n if level < 0 else level
            if not 0 <= idx < n:
                raise UsageError(
                    f"{self.meta.name}: feature level {level} out of range; it has {n} levels (0..{n - 1})."
                )
            out.append(idx)
        return out


def check_pooled(name: str, out: Any, batch: int) -> torch.Tensor:
    """Validate a pooled output against the contract; raise a message that names what is wrong."""
    if not isinstance(out, torch.Tensor):
        raise BackboneContractError(
            f"{name}: forward_pooled returned {type(out).__name__}, expected a Tensor [B, D]."
        )
    if out.ndim != 2 or out.shape[0] != batch:
        raise BackboneContractError(
            f"{name}: forward_pooled returned shape {tuple(out.shape)} for a batch of {batch}; expected [B, D] = [{batch}, D]."
        )
    if not torch.isfinite(out).all():
        bad = (~torch.isfinite(out)).sum().item()
        raise BackboneContractError(f"{name}: forward_pooled produced {bad} non-finite values (NaN or inf).")
    return out


def pooled_width(backbone: Backbone, input_size: int) -> int:
    """The pooled embedding width D: the declared `meta.pooled_dim`, else that of one probe call at
    `input_size` in eval mode (user backbones need not declare it). Leaves the train/eval mode as it was."""
    if backbone.meta.pooled_dim:
        return int(backbone.meta.pooled_dim)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        device = next(backbone.parameters()).device
        dim = backbone.forward_pooled(torch.zeros(1, 3, input_size, input_size, device=device)).shape[1]
    backbone.train(was_training)
    return int(dim)


@dataclass
class BackboneRef:
    """A backbone resolved to exact weights and transform, not yet instantiated.

    Resolving is cheap (no model is built), so the runner can look features up in the cache and build
    the model only on a miss.
    """

    name: str
    resolved_name: str
    adapter: str
    weights: ResolvedWeights
    data_config: DataConfig
    args: dict[str, Any] = field(default_factory=dict)
    library_version: str = ""
    builder: Callable[[BackboneRef, int | None], Backbone] | None = field(default=None, repr=False)
    # The curated catalog entry this backbone came from, if any: its facts (family, pretraining
    # method and data, license) replace what adapters read off names.
    catalog: dict[str, Any] | None = None
    # Whether the built backbone will have a text tower, where the adapter knows without building
    # (zero-shot skips a backbone without one before building it); None: build and ask the model.
    text_tower: bool | None = None

    def identity(self) -> dict[str, Any]:
        """What makes this backbone's features what they are (the transform is keyed separately)."""
        ident: dict[str, Any] = {
            "resolved_name": self.resolved_name,
            "adapter": self.adapter,
            "weights": self.weights.fingerprint(),
            "args": self.args,
        }
        if self.weights.kind == "random":  # init schemes change across library versions
            ident["library_version"] = self.library_version
        return ident

    def build(self, input_size: int | None = None) -> Backbone:
        """Instantiate the model; `input_size` matters for models with a fixed input resolution."""
        if self.builder is None:
            raise RuntimeError(f"{self.name}: this reference has no builder")
        backbone = self.builder(self, input_size)
        backbone.meta.name = self.name
        if self.catalog is not None:
            apply_catalog(backbone.meta, self.catalog, random=self.weights.kind == "random")
        return backbone


def apply_catalog(meta: BackboneMeta, entry: dict[str, Any], random: bool) -> None:
    """Overwrite inferred facts with the catalog's; a random init keeps only the architecture facts."""
    meta.family = entry["family"]
    meta.meta_source = "catalog"
    if not random:
        meta.method = entry["method"]
        meta.pretrain_data = entry.get("data")
        meta.license = entry.get("license", meta.license)
