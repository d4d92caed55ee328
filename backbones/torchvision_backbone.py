"""torchvision adapter: the classification models of `torchvision.models`, with their weights enums.

Names read `torchvision/<arch>[.<WEIGHTS>]`. A bare name means the enum's first member
(`IMAGENET1K_V1`, what `pretrained=True` always meant), not `DEFAULT`, whose meaning changes between
torchvision releases; the resolved name is recorded either way. Files load through the standard
torch hub cache (or bob's weights search path) and are built by torchvision's own builder, so
model-specific load-time settings (e.g. Inception's `transform_input`) are exactly torchvision's.

Pooled features are the input of the final classifier layer (the last `nn.Linear`, replaced by
`Identity`). Feature levels are found by a probe forward pass: for every stride the last module
whose output has that stride is a level, so every CNN answers without a per-model table; ViTs
(tokens) and Swin (NHWC) are reshaped to NCHW.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision import models as tv_models

from bob.backbones.base import Backbone, BackboneRef
from bob.backbones.checkpoints import load_state_dict_file
from bob.backbones.families import infer_data, infer_family, infer_method
from bob.backbones.meta import BackboneMeta, DataConfig
from bob.backbones.probe import capture, find_levels, nchw_level
from bob.errors import BackboneContractError, UsageError
from bob.registry import suggest
from bob.weights import WeightsRequest, WeightsSource, resolve_weights

# Swin's inner convs are NCHW while its stages are NHWC: only stage outputs are levels.
_SWIN_STAGE = re.compile(r"^features\.\d+$|^norm$")


def _swin_level(name: str, out: Any, probe_size: int) -> tuple[int, int] | None:
    if not _SWIN_STAGE.match(name) or not isinstance(out, torch.Tensor) or out.ndim != 4:
        return None
    return nchw_level(name, out.permute(0, 3, 1, 2), probe_size)


def _vit_block(patch: int) -> Callable[[str, Any, int], tuple[int, int] | None]:
    def accept(name: str, out: Any, _probe_size: int) -> tuple[int, int] | None:
        is_block = name.startswith("encoder.layers.") and name.count(".") == 2
        return (
            (patch, int(out.shape[-1]))
            if is_block and isinstance(out, torch.Tensor) and out.ndim == 3
            else None
        )

    return accept


class TorchvisionBackbone(Backbone):
    """A torchvision classifier with its last Linear removed, behind the bob contract."""

    def __init__(
        self, model: nn.Module, meta: BackboneMeta, data_config: DataConfig, probe_size: int
    ) -> None:
        if isinstance(model, tv_models.VisionTransformer):
            self.layout, accept = "tokens", _vit_block(model.patch_size)
        elif isinstance(model, tv_models.SwinTransformer):
            self.layout, accept = "nhwc", _swin_level
        else:
            self.layout, accept = "nchw", nchw_level
        levels = find_levels(model, probe_size, accept, one_per_block=self.layout == "tokens")
        if not levels.info:
            raise BackboneContractError(f"{type(model).__name__}: no feature levels found by the probe pass.")
        super().__init__(meta, data_config, levels.info)
        self.model = model
        self._level_modules = levels.modules

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _to_nchw(self, level: int, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            return out.permute(0, 3, 1, 2).contiguous()
        if self.layout == "tokens":  # [B, 1 + N, D] with a class token first
            stride = self.feature_info[level].stride
            h, w = x.shape[-2] // stride, x.shape[-1] // stride
            return out[:, 1:, :].transpose(1, 2).reshape(out.shape[0], out.shape[2], h, w)
        return out

    def forward_features(self, x: torch.Tensor, levels: Sequence[int] | None = None) -> list[torch.Tensor]:
        indices = self.resolve_levels(levels)
        modules = [self._level_modules[i] for i in indices]
        return capture(self.model, x, modules, lambda j, out: self._to_nchw(indices[j], out, x))

    def trainable(self) -> nn.Module:
        return self.model


def drop_classifier(model: nn.Module) -> nn.Linear | None:
    """Replace the last nn.Linear (the classifier) with Identity, so the model returns pooled features.

    Every torchvision classifier registers its final Linear last (after any auxiliary heads).
    Returns the removed Linear (None for SqueezeNet, whose classifier is a conv).
    """
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None and isinstance(getattr(model, "classifier", None), nn.Sequential):
        # SqueezeNet classifies with a 1x1 conv; its pooled feature is the GAP of the last map.
        model.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        return None
    if last is None:
        raise BackboneContractError(
            f"{type(model).__name__} has no Linear classifier to remove; its pooled features are undefined here."
        )
    parent_name, _, child = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    removed = getattr(parent, child)
    setattr(parent, child, nn.Identity())
    return removed


# ------------------------------------------------------------------------------------------ resolution


def _weights_enum(arch: str, tag: str) -> Any:
    enum = tv_models.get_model_weights(arch)
    members = [m.name for m in enum]
    if not tag:
        return next(iter(enum))
    if tag == "DEFAULT":
        return enum.DEFAULT
    if tag not in members:
        raise UsageError(
            f"torchvision/{arch} has no weights '{tag}'. Available: {', '.join(members)}. "
            f"Did you mean: {', '.join(suggest(tag, members, 3)) or members[0]}?"
        )
    return enum[tag]


def _data_config(weights_enum: Any) -> DataConfig:
    t = weights_enum.transforms()
    return DataConfig(
        input_size=int(t.crop_size[0]),
        mean=tuple(float(v) for v in t.mean),
        std=tuple(float(v) for v in t.std),
        interpolation=str(t.interpolation.value),
        crop_pct=float(t.crop_size[0]) / float(t.resize_size[0]),
        crop_mode="center",
    )


def resolve(
    name: str, weights: WeightsRequest, args: dict[str, Any], seed: int, catalog: dict[str, Any] | None = None
) -> BackboneRef:
    """Resolve `name` (without `torchvision/`) to exact weights and transform; builds nothing."""
    arch, _, tag = name.partition(".")
    if arch not in tv_models.list_models(module=tv_models):
        raise UsageError(f"torchvision {torchvision.__version__} has no classification model '{arch}'.")
    w = _weights_enum(arch, tag)
    resolved_name = f"torchvision/{arch}.{w.name}"
    resolved = resolve_weights(weights, [WeightsSource("url", w.url)], resolved_name, seed)
    return BackboneRef(
        name=f"torchvision/{name}",
        resolved_name=resolved_name,
        adapter="torchvision",
        weights=resolved,
        data_config=_data_config(w),
        args=dict(args),
        library_version=torchvision.__version__,
        builder=build,
        text_tower=False,
    )


@contextlib.contextmanager
def _serve_state_dict(path: Path) -> Iterator[None]:
    """Make torchvision's weights loader read the verified local file instead of its URL."""
    from torchvision.models import _api

    original = _api.load_state_dict_from_url
    _api.load_state_dict_from_url = lambda *_a, **_k: load_state_dict_file(path)
    try:
        yield
    finally:
        _api.load_state_dict_from_url = original


def _create(ref: BackboneRef, input_size: int | None) -> nn.Module:
    arch, _, tag = ref.resolved_name.removeprefix("torchvision/").partition(".")
    kwargs = dict(ref.args)
    if arch.startswith("vit_") and input_size and input_size != ref.data_config.input_size:
        kwargs.setdefault("image_size", input_size)
    if ref.weights.kind == "random":
        torch.manual_seed(ref.weights.seed or 0)
        return tv_models.get_model(arch, weights=None, **kwargs)
    if "image_size" in kwargs:
        raise UsageError(
            f"{ref.resolved_name}: torchvision ViTs cannot load pretrained weights at another input size; "
            "use the timm equivalent, which resamples position embeddings."
        )
    w = tv_models.get_model_weights(arch)[tag]
    with _serve_state_dict(Path(ref.weights.path)):
        return tv_models.get_model(arch, weights=w, **kwargs)  # torchvision loads strictly


def build(ref: BackboneRef, input_size: int | None = None) -> TorchvisionBackbone:
    model = _create(ref, input_size)
    head = drop_classifier(model)
    model.eval()
    arch, _, tag = ref.resolved_name.removeprefix("torchvision/").partition(".")
    random = ref.weights.kind == "random"
    data_config = (
        ref.data_config if input_size is None else ref.data_config.with_overrides(image_size=input_size)
    )
    probe = max(data_config.input_size, 64)
    with torch.no_grad():
        pooled_dim = int(model(torch.zeros(1, 3, probe, probe)).shape[-1])
    meta = BackboneMeta(
        name=ref.name,
        resolved_name=ref.resolved_name,
        adapter="torchvision",
        family=infer_family(arch),
        method="random" if random else infer_method(tag),
        pretrain_data=None if random else infer_data(tag),
        params=sum(p.numel() for p in model.parameters()),
        pooled_dim=pooled_dim,
        license="BSD-3-Clause (code); weights carry their training data's terms",
        architecture=arch,
        weights=ref.weights.to_dict(),
    )
    backbone = TorchvisionBackbone(model, meta, data_config, probe)
    if head is not None and ref.weights.kind == "pretrained" and tag.startswith("IMAGENET1K"):
        backbone.set_native_classifier(head, "imagenet-1k")
    return backbone


def is_model(name: str) -> bool:
    return name.partition(".")[0] in tv_models.list_models(module=tv_models)
