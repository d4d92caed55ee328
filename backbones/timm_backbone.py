"""timm adapter: any `timm.list_models()` name, including `arch.tag`.

`forward_features` sits on timm's `forward_intermediates` (NCHW, prefix tokens dropped), and
`forward_pooled` is the pre-logits output of the model built with `num_classes=0` — the same
`forward_head(pre_logits=True)` that `forward_intermediates(..., intermediates_only=False)` feeds.
The eval transform is timm's resolved pretrained config. Pretrained files are resolved by
`bob.weights` (mirrors, caches, one download attempt) and then loaded strictly by timm itself, with
the classifier dropped afterwards so no key goes unchecked.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_data_config

from bob.backbones.base import Backbone, BackboneRef
from bob.backbones.checkpoints import load_state_dict_file, strict_load
from bob.backbones.families import infer_data, infer_family, infer_method
from bob.backbones.meta import BackboneMeta, DataConfig, FeatureInfo
from bob.errors import UsageError, WeightsError
from bob.weights import WeightsRequest, WeightsSource, resolve_weights

log = logging.getLogger(__name__)

_HF_DEFAULT_FILES = ("model.safetensors", "pytorch_model.bin")


class TimmBackbone(Backbone):
    """A timm model (classifier removed) behind the bob contract."""

    def __init__(self, model: torch.nn.Module, meta: BackboneMeta, data_config: DataConfig) -> None:
        info = [
            FeatureInfo(int(f["num_chs"]), int(f["reduction"]), str(f.get("module", "")))
            for f in model.feature_info
        ]
        super().__init__(meta, data_config, info)
        self.model = model

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_features(self, x: torch.Tensor, levels: Sequence[int] | None = None) -> list[torch.Tensor]:
        if not hasattr(self.model, "forward_intermediates"):
            raise NotImplementedError(
                f"{self.meta.resolved_name}: timm {timm.__version__} has no forward_intermediates for this "
                "architecture, so dense (multi-scale) features are unavailable; pooled features still work."
            )
        indices = self.resolve_levels(levels)
        return list(
            self.model.forward_intermediates(x, indices=indices, output_fmt="NCHW", intermediates_only=True)
        )

    def forward_pooled_and_features(
        self, x: torch.Tensor, levels: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Both outputs from one pass through `forward_intermediates`."""
        indices = self.resolve_levels(levels)
        final, maps = self.model.forward_intermediates(x, indices=indices, output_fmt="NCHW")
        return self.model.forward_head(final, pre_logits=True), list(maps)

    def trainable(self) -> torch.nn.Module:
        return self.model


# ------------------------------------------------------------------------------------------ resolution


def _pretrained_cfg(name: str) -> Any:
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None and "." not in name:
        return None
    if cfg is None:
        raise UsageError(f"timm {timm.__version__} has no pretrained config named '{name}'.")
    return cfg


def _data_config(cfg: Any) -> DataConfig:
    resolved = resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else {})
    return DataConfig(
        input_size=int(resolved["input_size"][-1]),
        mean=tuple(float(v) for v in resolved["mean"]),
        std=tuple(float(v) for v in resolved["std"]),
        interpolation=str(resolved["interpolation"]),
        crop_pct=float(resolved["crop_pct"]),
        crop_mode=str(resolved.get("crop_mode", "center")),
    )


def _sources(cfg: Any) -> list[WeightsSource]:
    sources = []
    if cfg.hf_hub_id:
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_DEFAULT_FILES
        sources += [WeightsSource("hf-hub", f"{cfg.hf_hub_id}/{f}") for f in files]
    if cfg.url:
        sources.append(WeightsSource("url", cfg.url))
    return sources


def resolve(
    name: str, weights: WeightsRequest, args: dict[str, Any], seed: int, catalog: dict[str, Any] | None = None
) -> BackboneRef:
    """Resolve `name` (without the `timm/` prefix) to exact weights and transform; builds nothing."""
    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        raise UsageError(f"timm {timm.__version__} has no architecture '{arch}'.")
    cfg = _pretrained_cfg(name)
    resolved_name = f"timm/{arch}.{cfg.tag}" if cfg is not None and cfg.tag else f"timm/{name}"
    if weights.kind == "pretrained":
        if cfg is None or not _sources(cfg):
            raise WeightsError(
                f"timm/{name} has no pretrained weights in timm {timm.__version__}; "
                "run it with --weights random, or pass a checkpoint file with --weights PATH."
            )
        if "." not in name:
            log.info(
                "timm/%s resolved to %s (timm's default tag); pin the tag to be exact", name, resolved_name
            )
    sources = _sources(cfg) if weights.kind == "pretrained" else []
    resolved = resolve_weights(weights, sources, resolved_name, seed)
    return BackboneRef(
        name=f"timm/{name}",
        resolved_name=resolved_name,
        adapter="timm",
        weights=resolved,
        data_config=_data_config(cfg),
        args=dict(args),
        library_version=timm.__version__,
        builder=build,
        text_tower=False,
    )


# -------------------------------------------------------------------------------------------- building


def _create(ref: BackboneRef, input_size: int | None) -> torch.nn.Module:
    model_name = ref.resolved_name.removeprefix("timm/")
    kwargs = dict(ref.args)
    cfg = timm.models.get_pretrained_cfg(model_name)
    fixed = bool(cfg is not None and cfg.fixed_input_size)
    if (
        input_size is not None
        and fixed
        and input_size != ref.data_config.input_size
        and "img_size" not in kwargs
    ):
        kwargs["img_size"] = input_size  # timm resamples position embeddings of pretrained weights
    if ref.weights.kind == "pretrained":
        path = Path(ref.weights.path)
        overlay = {"file": str(path), "custom_load": path.suffix == ".npz"}
        # Build with the original classifier so timm loads strictly, then drop it.
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        head = model.get_classifier()
        if isinstance(head, torch.nn.Linear) and head.out_features == 1000:  # kept for classifier=native
            model.__dict__["bob_native_head"] = copy.deepcopy(head)  # outside the module tree
        model.reset_classifier(0)
        return model
    torch.manual_seed(ref.weights.seed or 0)
    model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
    if ref.weights.kind == "file":
        state = load_state_dict_file(Path(ref.weights.path))
        classifier = cfg.classifier if cfg is not None and cfg.classifier else "head"
        heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        state = {k: v for k, v in state.items() if not any(k.startswith(h + ".") for h in heads)}
        strict_load(model, state, ref.weights.path)
    return model


def _has_attention(model: torch.nn.Module) -> bool:
    return any(
        "attention" in type(m).__name__.lower() or type(m).__name__ == "Attention" for m in model.modules()
    )


def build(ref: BackboneRef, input_size: int | None = None) -> TimmBackbone:
    model = _create(ref, input_size).eval()
    arch = ref.resolved_name.removeprefix("timm/").split(".", 1)[0]
    tag = ref.resolved_name.partition(".")[2]
    pooled_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    random = ref.weights.kind == "random"
    meta = BackboneMeta(
        name=ref.name,
        resolved_name=ref.resolved_name,
        adapter="timm",
        family=infer_family(arch, _has_attention(model)),
        method="random" if random else infer_method(tag, arch),
        pretrain_data=None if random else infer_data(tag),
        params=sum(p.numel() for p in model.parameters()),
        pooled_dim=pooled_dim,
        license=(model.pretrained_cfg or {}).get("license"),
        architecture=arch,
        weights=ref.weights.to_dict(),
    )
    data_config = (
        ref.data_config if input_size is None else ref.data_config.with_overrides(image_size=input_size)
    )
    backbone = TimmBackbone(model, meta, data_config)
    head = model.__dict__.pop("bob_native_head", None)
    if head is not None:
        backbone.set_native_classifier(head, "imagenet-1k")
    return backbone


def is_model(name: str) -> bool:
    """Live check used when a name is missing from bob's static timm index (a newer timm)."""
    return bool(timm.is_model(name.split(".", 1)[0]))
