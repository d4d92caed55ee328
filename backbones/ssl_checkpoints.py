"""Self-supervised checkpoints exactly as their authors released them, loaded into timm architectures.

Each release lays its keys out its own way: a DDP `module.` prefix, a momentum encoder and predictor
(MoCo v3), a projection MLP where the classifier was, an MAE decoder, the original ConvNeXt names
(VICRegL). A `CheckpointFormat` spells out, as data, which keys are dropped on purpose and how the rest
are renamed to timm's; every other key must match the timm model one to one, and the load is strict.
`--weights PATH` goes through the same remap, so a user's own MoCo/DINO/MAE/VICReg(L) file in the
original layout loads too.

Which features each release gives (the authors' linear-probe recipes):
  - MoCo v3, DINO and MAE ViTs: the class token after the final LayerNorm (timm `global_pool='token'`).
    MAE's fine-tuning recipe averages tokens under a new `fc_norm`, but its linear probe, and BoB's
    MAE wrapper by default, use the class token; the released encoder holds `norm`, not `fc_norm`.
  - MoCo v3 ViT-S has 12 heads (timm's vit_small has 6): the catalog entry sets `num_heads: 12`.
  - MoCo v3 and MAE position embeddings are fixed 2D sin-cos tables; they are stored in the files and
    loaded as ordinary tensors, which gives identical features.
  - VICRegL ConvNeXt: no layer scale, and the final LayerNorm on every position before averaging
    (timm `ls_init_value=None`, `head_norm_first=True`).
  - DINO and VICReg ResNet-50: torchvision's ResNet-50 names, which are timm's. VICReg's own ResNet
    pads by 1 and then convolves with padding 2: the same zero padding of 3 as torchvision's stem.
  - SSCD (copy detection; Pizzi et al., CVPR 2022): a ResNet-50 or ResNeXt-101 32x4d trunk, then
    SSCD's descriptor: GeM pooling (p = 3) of the last map, a linear projection (512-d, 1024-d for
    `sscd_disc_large`) and L2 normalisation. The pooled feature is that descriptor (what BoB's
    retrieval ranked by); `forward_features` gives the trunk's maps. The release files are
    TorchScript archives (BoB loaded them with `torch.jit.load`); bob reads only their tensors
    (`state_dict()`) and loads them strictly into the timm trunk and the descriptor head. Their keys
    follow Classy Vision's ResNeXt (`initial_block`, `blocks.<stage>.block<stage>-<i>` with a
    `convolutional_block` Sequential, a final `bn`, a `downsample`), remapped to timm's ResNet
    names; the torchvision-layout files of the ResNet-50 models (`.torchvision.pt`: torchvision
    names, the projection as `fc`) load through the same format.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models import model_entrypoint
from torch import nn

from bob.backbones.base import BackboneRef
from bob.backbones.checkpoints import is_torchscript, load_state_dict_file, strict_load, torchscript_tensors
from bob.backbones.meta import BackboneMeta, DataConfig
from bob.backbones.timm_backbone import TimmBackbone
from bob.errors import UsageError, WeightsError
from bob.weights import WeightsRequest, WeightsSource, resolve_weights

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Resize(256) + CenterCrop(224) with ImageNet statistics: every release's linear-eval transform.
# Entries set `transform: {interpolation: bicubic}` where the authors' recipe resizes bicubically.
IMAGENET_EVAL = DataConfig(224, IMAGENET_MEAN, IMAGENET_STD, interpolation="bilinear", crop_pct=0.875)


@dataclass(frozen=True)
class CheckpointFormat:
    """One release's key layout and what turns it into the timm model's.

    Order of operations on each key: a key starting with one of `drop` is discarded (heads,
    decoders, momentum copies); otherwise the first matching `strip` prefix is removed and the first
    matching `rename` rule (regex, replacement) is applied. `model_args` are the timm arguments the
    layout implies for every architecture of the format.
    """

    name: str
    description: str
    drop: tuple[str, ...] = ()
    strip: tuple[str, ...] = ()
    rename: tuple[tuple[str, str], ...] = ()
    model_args: Mapping[str, Any] = field(default_factory=dict)


_CONVNEXT_RENAMES = (
    (r"^downsample_layers\.0\.", "stem."),
    (r"^downsample_layers\.([1-3])\.", r"stages.\1.downsample."),
    (r"^stages\.(\d+)\.(\d+)\.dwconv\.", r"stages.\1.blocks.\2.conv_dw."),
    (r"^stages\.(\d+)\.(\d+)\.pwconv([12])\.", r"stages.\1.blocks.\2.mlp.fc\3."),
    (r"^stages\.(\d+)\.(\d+)\.(norm\.|gamma$)", r"stages.\1.blocks.\2.\3"),
    (r"^norm\.", "norm_pre."),  # the LayerNorm applied to every position before averaging
)

# Classy Vision's bottleneck block: convolutional_block = Sequential(conv1x1, bn, relu, conv3x3 (grouped,
# strided), bn, relu, conv1x1), then the block's own `bn` and an optional `downsample` (conv1x1, bn).
_CLASSY_BLOCK = (("convolutional_block.0", "conv1"), ("convolutional_block.1", "bn1"),
                 ("convolutional_block.3", "conv2"), ("convolutional_block.4", "bn2"),
                 ("convolutional_block.6", "conv3"), ("bn", "bn3"), ("downsample.0", "downsample.0"),
                 ("downsample.1", "downsample.1"))  # fmt: skip
# Older Classy Vision versions wrap each attachable block (and the stem) in a `_module`.
_CLASSY_RENAMES = (
    (r"^backbone\.initial_block\.(?:_module\.)?0\.", "backbone.conv1."),
    (r"^backbone\.initial_block\.(?:_module\.)?1\.", "backbone.bn1."),
    *(
        (rf"^backbone\.blocks\.{stage}\.block{stage}-(\d+)\.(?:_module\.)?{re.escape(old)}\.",
         rf"backbone.layer{stage + 1}.\1.{new}.")
        for stage in range(4)
        for old, new in _CLASSY_BLOCK
    ),
    (r"^backbone\.fc\.", "embeddings.1."),  # the torchvision layout: the projection is the ResNet's fc
)  # fmt: skip

FORMATS: dict[str, CheckpointFormat] = {
    f.name: f
    for f in (
        CheckpointFormat(
            "mocov3_vit",
            "MoCo v3 training checkpoint: ['state_dict'] with DDP keys module.base_encoder.*; the "
            "momentum encoder, the predictor and the base encoder's projection MLP (head.*) are dropped",
            drop=("module.momentum_encoder.", "module.predictor.", "module.base_encoder.head."),
            strip=("module.base_encoder.",),
        ),
        CheckpointFormat("dino_vit", "DINO ViT backbone file: timm ViT names, no head"),
        CheckpointFormat(
            "dino_resnet",
            "DINO ResNet-50 backbone file: torchvision ResNet names (a classifier fc.* is dropped)",
            drop=("fc.",),
        ),
        CheckpointFormat(
            "mae_vit",
            "MAE pretrain checkpoint: ['model'] with the encoder under timm ViT names; decoder_* and "
            "mask_token (present in the visualisation checkpoints) are dropped",
            drop=("decoder_", "mask_token"),
        ),
        CheckpointFormat(
            "vicreg_resnet",
            "VICReg ResNet backbone file (torchvision ResNet names, no fc), or the full checkpoint "
            "['model'] with module.backbone.* and a dropped module.projector.*",
            drop=("module.projector.",),
            strip=("module.backbone.",),
        ),
        CheckpointFormat(
            "vicregl_convnext",
            "VICRegL ConvNeXt backbone file (original ConvNeXt names: downsample_layers, stages.i.j, "
            "dwconv, pwconv1/2, final norm), or the full checkpoint ['model'] with module.backbone.* "
            "and dropped projectors and online classifier",
            drop=("module.projector.", "module.maps_projector.", "module.classifier."),
            strip=("module.backbone.",),
            rename=_CONVNEXT_RENAMES,
            model_args={"ls_init_value": None, "head_norm_first": True, "conv_mlp": False},
        ),
        CheckpointFormat(
            "sscd",
            "SSCD release (TorchScript archive or weight file): backbone.* in Classy Vision's ResNeXt "
            "names (or torchvision's, with the projection as backbone.fc.*) and the descriptor "
            "projection embeddings.1.*",
            rename=_CLASSY_RENAMES,
        ),
    )
}
# Formats whose entries carry a descriptor head after the trunk (catalog args, not timm arguments).
DESCRIPTOR_ARGS = {"sscd": ("descriptor_dim", "gem_p")}


def remap_state_dict(
    state: Mapping[str, torch.Tensor], fmt: CheckpointFormat
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The checkpoint under timm's key names, and the original keys dropped on purpose."""
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    dropped: list[str] = []
    for key, value in state.items():
        if key.startswith(fmt.drop):
            dropped.append(key)
            continue
        new = next((key[len(p) :] for p in fmt.strip if key.startswith(p)), key)
        for pattern, repl in fmt.rename:
            new, hits = re.subn(pattern, repl, new)
            if hits:
                break
        if new in out:
            raise WeightsError(
                f"Checkpoint keys '{origin[new]}' and '{key}' both map to '{new}' under the "
                f"{fmt.name} layout; the file mixes two copies of the model."
            )
        out[new], origin[new] = value, key
    return out, dropped


def _fit_pos_embed(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Resample a ViT's absolute position embedding when the model is built for another input size."""
    pos, own = state.get("pos_embed"), getattr(model, "pos_embed", None)
    if (
        pos is None
        or own is None
        or pos.shape == own.shape
        or pos.ndim != 3
        or pos.shape[-1] != own.shape[-1]
    ):
        return state  # same size, or a different architecture: strict_load names the mismatch
    from timm.layers import resample_abs_pos_embed

    grid = list(model.patch_embed.grid_size)
    log.info("resampling pos_embed %s -> grid %s", tuple(pos.shape), grid)
    resampled = resample_abs_pos_embed(pos, new_size=grid, num_prefix_tokens=model.num_prefix_tokens)
    return {**state, "pos_embed": resampled}


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A flat state dict from a weight file, or the tensors of a TorchScript archive (SSCD's
    releases), which `torch.load(weights_only=True)` refuses; the archive's code is never called."""
    path = Path(path)
    return torchscript_tensors(path) if is_torchscript(path) else load_state_dict_file(path)


def load_checkpoint(model: torch.nn.Module, path: Path, fmt: CheckpointFormat) -> list[str]:
    """Remap a checkpoint in `fmt`'s original layout and load it strictly; returns the dropped keys."""
    state, dropped = remap_state_dict(read_tensors(path), fmt)
    try:
        strict_load(model, _fit_pos_embed(model, state), path)
    except WeightsError as err:
        raise WeightsError(f"{err} (read as the '{fmt.name}' layout: {fmt.description}.)") from err
    log.info("loaded %s: %d tensors, %d dropped on purpose", path, len(state), len(dropped))
    return dropped


# ------------------------------------------------------------------------------------------ resolution


def _data_config(transform: Mapping[str, Any] | None) -> DataConfig:
    """The catalog's `transform` (DataConfig fields) over the standard ImageNet eval transform."""
    if not transform:
        return IMAGENET_EVAL
    known = {f.name for f in fields(DataConfig)}
    unknown = sorted(set(transform) - known)
    if unknown:
        raise ValueError(f"catalog transform has unknown fields {unknown}; known: {sorted(known)}")
    values = dict(transform)
    for key in ("mean", "std"):
        if key in values:
            values[key] = tuple(float(v) for v in values[key])
    return replace(IMAGENET_EVAL, **values)


def _format(entry_args: Mapping[str, Any], name: str) -> CheckpointFormat:
    fmt = entry_args.get("format")
    if fmt not in FORMATS:
        raise UsageError(f"{name}: catalog args.format is {fmt!r}; the ssl adapter reads {sorted(FORMATS)}.")
    return FORMATS[fmt]


def resolve(
    name: str, weights: WeightsRequest, args: dict[str, Any], seed: int, catalog: dict[str, Any] | None = None
) -> BackboneRef:
    """Resolve a catalog entry (`name` is its timm architecture) to exact weights; builds nothing."""
    if catalog is None:
        raise UsageError(
            f"the ssl adapter serves curated catalog entries only (e.g. dino/vit_small_patch16), not '{name}'."
        )
    if not timm.is_model(name):
        raise UsageError(f"{catalog['name']}: timm {timm.__version__} has no architecture '{name}'.")
    entry_args = dict(catalog.get("args") or {})
    fmt = _format(entry_args, catalog["name"])
    if "format" in args:
        raise UsageError(f"{catalog['name']}: the checkpoint format is fixed by the catalog entry.")
    model_args = {**fmt.model_args, **{k: v for k, v in entry_args.items() if k != "format"}, **args}
    descriptor = {k: model_args.pop(k) for k in DESCRIPTOR_ARGS.get(fmt.name, ()) if k in model_args}
    if fmt.name in DESCRIPTOR_ARGS and set(descriptor) != set(DESCRIPTOR_ARGS[fmt.name]):
        raise UsageError(
            f"{catalog['name']}: the {fmt.name} format needs catalog args {DESCRIPTOR_ARGS[fmt.name]}."
        )
    source = WeightsSource("url", catalog["source"], catalog.get("sha256"))
    sources = [source] if weights.kind == "pretrained" else []
    resolved = resolve_weights(weights, sources, catalog["name"], seed)
    return BackboneRef(
        name=catalog["name"],
        resolved_name=catalog["name"],
        adapter="ssl",
        weights=resolved,
        data_config=_data_config(catalog.get("transform")),
        args={
            "architecture": name,
            "format": fmt.name,
            "model_args": model_args,
            **({"descriptor": descriptor} if descriptor else {}),
        },
        library_version=timm.__version__,
        builder=build,
        text_tower=False,
        catalog=catalog,
    )


# -------------------------------------------------------------------------------------------- building


def _fixed_input_size(arch: str) -> bool:
    cfg = timm.models.get_pretrained_cfg(arch)
    return bool(cfg is not None and cfg.fixed_input_size)


def create_model(arch: str, model_args: Mapping[str, Any], input_size: int | None = None) -> torch.nn.Module:
    """The timm architecture without classifier, randomly initialised.

    Built through the registered entrypoint rather than `timm.create_model`, which discards
    arguments set to None: `ls_init_value=None` is how timm turns layer scale off.
    """
    kwargs = dict(model_args)
    if input_size is not None and _fixed_input_size(arch) and "img_size" not in kwargs:
        kwargs["img_size"] = input_size  # position embeddings are resampled on load
    return model_entrypoint(arch)(pretrained=False, num_classes=0, **kwargs)


def _uninitialised_model(arch: str, model_args: Mapping[str, Any], input_size: int | None) -> torch.nn.Module:
    """The architecture with allocated but uninitialised tensors, for a strict load to fill.

    Skips the random init, which costs seconds for ViT-L or ConvNeXt-XL on a CPU. A model with
    non-persistent buffers (which no checkpoint fills) is built normally instead.
    """
    with torch.device("meta"):
        model = create_model(arch, model_args, input_size)
    persistent = set(model.state_dict())
    if any(name not in persistent for name, _ in model.named_buffers()):
        return create_model(arch, model_args, input_size)
    return model.to_empty(device="cpu")


class GeMPool(nn.Module):
    """Generalised-mean pooling of a [B, C, H, W] map to [B, C]: (mean over positions of x^p)^(1/p),
    on activations clamped to at least `eps` (SSCD's GlobalGeMPool2d: p = 3, eps = 1e-6)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p, self.eps = float(p), float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class L2Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


class DescriptorModel(nn.Module):
    """A trunk (`backbone`, the timm model without classifier) and a copy-detection descriptor head
    (`embeddings`: GeM pooling, linear projection, L2 normalisation), named as SSCD names them."""

    def __init__(self, trunk: nn.Module, dim: int, gem_p: float) -> None:
        super().__init__()
        self.backbone = trunk
        self.embeddings = nn.Sequential(GeMPool(gem_p), nn.Linear(trunk.num_features, dim), L2Normalize())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embeddings(self.backbone.forward_features(x))


class DescriptorBackbone(TimmBackbone):
    """The trunk's maps as features, the descriptor as the pooled feature (both from one pass)."""

    def __init__(self, model: DescriptorModel, meta: BackboneMeta, data_config: DataConfig) -> None:
        super().__init__(model.backbone, meta, data_config)
        self.head = model.embeddings

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.forward_features(x))

    def forward_pooled_and_features(
        self, x: torch.Tensor, levels: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        final, maps = self.model.forward_intermediates(
            x, indices=self.resolve_levels(levels), output_fmt="NCHW"
        )
        return self.head(final), list(maps)

    def trainable(self) -> torch.nn.Module:
        return self


def _with_descriptor(trunk: nn.Module, ref: BackboneRef) -> nn.Module:
    spec = ref.args.get("descriptor")
    if not spec:
        return trunk
    return DescriptorModel(trunk, int(spec["descriptor_dim"]), float(spec["gem_p"]))


def build(ref: BackboneRef, input_size: int | None = None) -> TimmBackbone:
    arch, fmt = ref.args["architecture"], FORMATS[ref.args["format"]]
    random = ref.weights.kind == "random"
    if random:
        torch.manual_seed(ref.weights.seed or 0)
        model = _with_descriptor(create_model(arch, ref.args["model_args"], input_size), ref)
    else:
        model = _with_descriptor(_uninitialised_model(arch, ref.args["model_args"], input_size), ref)
        load_checkpoint(model, Path(ref.weights.path), fmt)
    model.eval()
    catalog = ref.catalog or {}
    meta = BackboneMeta(
        name=ref.name,
        resolved_name=ref.resolved_name,
        adapter="ssl",
        family=catalog.get("family", "vit" if hasattr(model, "pos_embed") else "cnn"),
        method="random" if random else catalog.get("method", "unknown"),
        pretrain_data=None if random else catalog.get("data"),
        params=sum(p.numel() for p in model.parameters()),
        pooled_dim=_pooled_dim(model),
        license=None if random else catalog.get("license"),
        architecture=arch,
        weights=ref.weights.to_dict(),
    )
    data_config = (
        ref.data_config if input_size is None else ref.data_config.with_overrides(image_size=input_size)
    )
    if isinstance(model, DescriptorModel):
        return DescriptorBackbone(model, meta, data_config)
    return TimmBackbone(model, meta, data_config)


def _pooled_dim(model: nn.Module) -> int:
    if isinstance(model, DescriptorModel):
        return int(model.embeddings[1].out_features)
    return int(getattr(model, "head_hidden_size", None) or model.num_features)
