"""transformers adapter: the MiDaS v3.1 DPT-SwinV2 encoders and the SAM ViT image encoder.

Also home of the Hugging Face *snapshot* resolution shared with the diffusion adapter: multi-file
checkpoints (a config plus weights, or diffusers' vae/unet/text_encoder subfolders) are found in the
weights search path (`$BOB_WEIGHTS_PATH/<org>/<repo>/…` or `<org>--<repo>/…`), then in the Hugging Face
cache, then downloaded once after a single TCP connect to the hub, so an offline machine fails in well
under a second with a `WeightsError` naming the repo instead of letting huggingface_hub retry for ~20 s.

What each model exposes:
  - MiDaS DPT-SwinV2 (`model_type: dpt` with a SwinV2 backbone): the four SwinV2 stage outputs that feed
    DPT's reassemble neck (before patch merging; strides 4, 8, 16, 32). The DPT neck and depth head are
    dropped. Pooled = global average of the last stage.
  - SAM (`model_type: sam`): the ViT-B image encoder without its conv neck, as BoB's ViTDet detector
    used it. Levels = the outputs of the global-attention blocks (2, 5, 8, 11 for ViT-B; all stride 16);
    pooled = global average of the last block's token map. Absolute position embeddings are resized
    (bicubic) on the fly, so any input size works; relative position tables are resized by SAM itself.

Random init (`--weights random`) builds the architecture from configs shipped in
`entries/hf_configs/<org>--<repo>/config.json`, so it works offline.

MiDaS under `protocol=bob` (backbone arg `protocol`, set by a task's `protocol=bob` through
`bob.backbones.protocols.with_protocol`): Battle of the Backbones' MiDaS encoder exactly
(bob-classification `models/midas_encoder.py`: `DPTDepthModel(...).pretrained.model`), i.e. the timm
SwinV2 that MiDaS v3.1 was built on (`swinv2_tiny_window16_256`, `swinv2_base_window12to24_192to384`),
loaded from MiDaS' own release checkpoint (`pretrained.model.*`; timm's `checkpoint_filter_fn` maps the
timm 0.6 layout MiDaS saved to today's), behind the timm adapter's contract. Pooled = timm's
pre-logits: the final LayerNorm, then the global average (which the transformers conversion drops).
Input: ImageNet mean/std, bicubic, crop 0.875 at the model's size (timm's defaults, which BoB's
`timm.data.resolve_data_config` gave). `native_classifier()` is the checkpoint's 1000-d head (timm's
ImageNet-1k classifier, never trained by MiDaS; random under `--weights random`): BoB's retrieval
descriptor for MiDaS is `head(pooled)`. Levels are the stage outputs, as in the default protocol.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import socket
import urllib.parse
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
import transformers
from timm.models.swin_transformer_v2 import checkpoint_filter_fn
from torch import nn

from bob.backbones.base import Backbone, BackboneRef
from bob.backbones.checkpoints import load_state_dict_file, strict_load
from bob.backbones.meta import BackboneMeta, DataConfig, FeatureInfo
from bob.backbones.timm_backbone import TimmBackbone
from bob.errors import UsageError, WeightsError
from bob.weights import (
    DOWNLOAD_TIMEOUT_S,
    ResolvedWeights,
    WeightsRequest,
    WeightsSource,
    hf_hub_cache_dir,
    is_offline,
    resolve_weights,
    search_path,
    verify_file,
)

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_MODEL_FILES: tuple[tuple[str, ...], ...] = (("config.json",), ("model.safetensors", "pytorch_model.bin"))
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
PROTOCOLS = ("default", "bob")
MIDAS_RELEASE = "https://github.com/isl-org/MiDaS/releases/download/v3_1"
# DPT-SwinV2 repo -> (the timm architecture MiDaS v3.1 built it on, MiDaS' release checkpoint); MiDaS'
# midas/backbones/swin2.py names the timm models, its v3_1 release the files.
MIDAS_TIMM = {
    "Intel/dpt-swinv2-tiny-256": ("swinv2_tiny_window16_256", f"{MIDAS_RELEASE}/dpt_swin2_tiny_256.pt"),
    "Intel/dpt-swinv2-base-384": (
        "swinv2_base_window12to24_192to384",
        f"{MIDAS_RELEASE}/dpt_swin2_base_384.pt",
    ),
}
MIDAS_PREFIX = "pretrained.model."  # where DPTDepthModel keeps the timm encoder


# ------------------------------------------------------------------------------ hub snapshots (shared)


def shipped_config_dir(kind: str, repo: str) -> Path:
    """`entries/<kind>/<org>--<repo>`: the configs bob ships so random init works offline."""
    root = resources.files("bob.backbones").joinpath("entries", kind, repo.replace("/", "--"))
    return Path(str(root))


def _present(base: Path, files: Sequence[Sequence[str]]) -> list[str] | None:
    """For each group of alternatives the first file present under `base`; None if a group has none."""
    found = []
    for group in files:
        hit = next((name for name in group if (base / name).is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


def _from_mirrors(repo: str, files: Sequence[Sequence[str]]) -> tuple[Path, list[str]] | None:
    for directory in search_path():
        for base in (directory / repo, directory / repo.replace("/", "--")):
            found = _present(base, files)
            if found is not None:
                return base, found
    return None


def _from_cache(repo: str, files: Sequence[Sequence[str]]) -> tuple[Path, list[str]] | None:
    from huggingface_hub import try_to_load_from_cache

    for name in files[0]:
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str):
            base = Path(hit[: -len(name)])  # the snapshot folder of the cached revision
            found = _present(base, files)
            return (base, found) if found is not None else None
    return None


def _probe_hub() -> None:
    """One TCP connect: huggingface_hub alone retries an unreachable host with back-off for ~20 s."""
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    socket.create_connection((endpoint.hostname, port), timeout=DOWNLOAD_TIMEOUT_S).close()


def _download(repo: str, files: Sequence[Sequence[str]]) -> tuple[Path, list[str]]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    _probe_hub()
    base, found = None, []
    for group in files:
        for name in group:
            try:
                path = hf_hub_download(repo, name)
            except RemoteEntryNotFoundError:  # this alternative is not in the repo; try the next
                continue
            base = Path(path[: -len(name)])
            found.append(name)
            break
        else:
            raise WeightsError(f"hf-hub:{repo} has none of {', '.join(group)}")
    return base, found


def _fingerprint(base: Path, found: list[str]) -> tuple[str, str]:
    """One sha256 over the weight files' own sha256s, and how they were verified.

    A file in the Hugging Face cache is a link to a blob named by the hub's LFS sha256, so hashing it
    verifies it against the hub; mirror files are checked against a SHA256SUMS manifest if present.
    """
    lines, hows = [], []
    for name in sorted(n for n in found if n.endswith(_WEIGHT_SUFFIXES)):
        path = base / name
        digest, how = verify_file(path)
        if how == "unverified" and Path(os.path.realpath(path)).name == digest:
            how = "sha256"
        lines.append(f"{name} {digest}")
        hows.append(how)
    combined = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return combined, ("sha256" if hows and all(h == "sha256" for h in hows) else "unverified")


def resolve_snapshot(repo: str, files: Sequence[Sequence[str]], what: str) -> ResolvedWeights:
    """Find (or fetch once) the files of a hub repo; `files` lists groups of alternative names."""
    hit = _from_mirrors(repo, files) or _from_cache(repo, files)
    if hit is None and not is_offline():
        try:
            hit = _download(repo, files)
        except Exception as err:  # socket and hub client errors alike mean "not available"
            raise WeightsError(_missing(repo, files, what, f"Download failed: {err}")) from err
    if hit is None:
        raise WeightsError(
            _missing(
                repo,
                files,
                what,
                "Downloads were not attempted (offline: BOB_OFFLINE or HF_HUB_OFFLINE is set).",
            )
        )
    base, found = hit
    digest, how = _fingerprint(base, found)
    commit = f"@{base.name}" if base.parent.name == "snapshots" else ""
    log.info("%s: using %s (%s)", what, base, how)
    return ResolvedWeights("pretrained", f"hf-hub:{repo}{commit}", str(base), digest, how)


def _missing(repo: str, files: Sequence[Sequence[str]], what: str, tried: str) -> str:
    wanted = ", ".join(group[0] for group in files)
    dirs = ", ".join(str(d) for d in search_path()) or "not set"
    return (
        f"Pretrained weights for {what} are not available. bob looked for the Hugging Face repo '{repo}' "
        f"({wanted}) in BOB_WEIGHTS_PATH ({dirs}; as <dir>/{repo}/ or <dir>/{repo.replace('/', '--')}/) "
        f"and in the Hugging Face cache {hf_hub_cache_dir()}. {tried} To fix: copy the repo's files into "
        "a directory on BOB_WEIGHTS_PATH; on a machine without internet also set HF_HUB_OFFLINE=1 so no "
        "download is tried; or run with --weights random for a random-init baseline."
    )


# ------------------------------------------------------------------------------------------- backbones


def _resize_pos(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[1, H, W, C] absolute position embeddings resampled to another token grid (bicubic)."""
    if tuple(pos.shape[1:3]) == grid:
        return pos
    resized = F.interpolate(pos.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


class SwinV2Encoder(Backbone):
    """MiDaS' SwinV2 encoder: the stage outputs DPT's neck reads, as NCHW maps."""

    def __init__(self, backbone: nn.Module, meta: BackboneMeta, data_config: DataConfig) -> None:
        cfg = backbone.config
        info = [
            FeatureInfo(int(c), cfg.patch_size * 2**i, f"backbone.encoder.layers.{i}")
            for i, c in enumerate(backbone.num_features[1:])
        ]
        super().__init__(meta, data_config, info)
        self.backbone = backbone  # named as in DPTForDepthEstimation, so its state dict loads as is

    def forward_features(self, x: torch.Tensor, levels: Sequence[int] | None = None) -> list[torch.Tensor]:
        maps = self.backbone(pixel_values=x).feature_maps
        return [maps[i] for i in self.resolve_levels(levels)]

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x, [-1])[0].mean(dim=(2, 3))


class SamViTEncoder(Backbone):
    """SAM's ViT image encoder without the neck; levels are the global-attention block outputs."""

    def __init__(self, encoder: nn.Module, meta: BackboneMeta, data_config: DataConfig) -> None:
        cfg = encoder.config
        blocks = sorted({*cfg.global_attn_indexes, cfg.num_hidden_layers - 1})
        info = [FeatureInfo(cfg.hidden_size, cfg.patch_size, f"layers.{i}") for i in blocks]
        super().__init__(meta, data_config, info)
        # Names as in SamVisionEncoder, so `vision_encoder.*` checkpoints load after a prefix strip.
        self.patch_embed = encoder.patch_embed
        self.pos_embed = encoder.pos_embed
        self.layers = encoder.layers
        self._blocks = blocks

    def forward_features(self, x: torch.Tensor, levels: Sequence[int] | None = None) -> list[torch.Tensor]:
        indices = self.resolve_levels(levels)
        wanted = {self._blocks[i]: i for i in indices}
        h = self.patch_embed.projection(x).permute(0, 2, 3, 1)  # NHWC; SAM's wrapper insists on 1024 px
        if self.pos_embed is not None:
            h = h + _resize_pos(self.pos_embed, (h.shape[1], h.shape[2]))
        out: dict[int, torch.Tensor] = {}
        for b, layer in enumerate(self.layers[: max(wanted) + 1]):
            h = layer(h)
            if b in wanted:
                out[wanted[b]] = h.permute(0, 3, 1, 2)
        return [out[i] for i in indices]

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x, [-1])[0].mean(dim=(2, 3))


# ------------------------------------------------------------------------------------------ resolution


def _kind(config: dict[str, Any], repo: str) -> str:
    kind = config.get("model_type")
    if kind == "dpt" and (config.get("backbone_config") or {}).get("model_type") == "swinv2":
        return "dpt-swinv2"
    if kind == "sam":
        return "sam"
    raise UsageError(
        f"hf/{repo}: model_type '{kind}' is not supported by bob's transformers adapter "
        "(it serves DPT with a SwinV2 backbone, and SAM)."
    )


def _data_config(kind: str, config: dict[str, Any]) -> DataConfig:
    if kind == "dpt-swinv2":  # MiDaS v3.1 swin2 models: squash to net size, normalise to [-1, 1]
        size = int(config["backbone_config"].get("image_size", 256))
        return DataConfig(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 1.0, "squash")
    size = int(config.get("vision_config", {}).get("image_size", 1024))
    return DataConfig(size, _IMAGENET_MEAN, _IMAGENET_STD, "bilinear", 1.0, "center")


def _read_config(directory: Path, repo: str) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise UsageError(
            f"hf/{repo}: bob ships no architecture config for this repo, so it cannot be built with "
            "--weights random or a checkpoint file; use --weights pretrained."
        )
    return json.loads(path.read_text())


def non_pretrained_weights(weights: WeightsRequest, seed: int) -> ResolvedWeights:
    """A seeded random init, or the user's checkpoint file (verified and hashed)."""
    if weights.kind == "random":
        return ResolvedWeights("random", seed=seed)
    sha, how = verify_file(weights.path)
    return ResolvedWeights("file", "file", str(weights.path), sha, how)


def _config_for(repo: str, weights: ResolvedWeights) -> dict[str, Any]:
    directory = Path(weights.path) if weights.kind == "pretrained" else shipped_config_dir("hf_configs", repo)
    return _read_config(directory, repo)


def resolve(
    name: str, weights: WeightsRequest, args: dict[str, Any], seed: int, catalog: dict[str, Any] | None = None
) -> BackboneRef:
    """Resolve a hub repo (`Intel/dpt-swinv2-tiny-256`, `facebook/sam-vit-base`); builds nothing."""
    protocol = str(args.get("protocol", "default"))
    unknown = sorted(set(args) - ({"protocol"} if name in MIDAS_TIMM else set()))
    if unknown:
        takes = "only protocol (default | bob)" if name in MIDAS_TIMM else "no backbone arguments"
        raise UsageError(f"hf/{name} takes {takes}; got {', '.join(unknown)}.")
    if protocol not in PROTOCOLS:
        raise UsageError(f"protocol must be one of {', '.join(PROTOCOLS)}; got '{protocol}'.")
    if protocol == "bob":
        return _resolve_midas_timm(name, weights, seed)
    if weights.kind == "pretrained":
        resolved = resolve_snapshot(name, _MODEL_FILES, f"hf/{name}")
    else:
        resolved = non_pretrained_weights(weights, seed)
    config = _config_for(name, resolved)
    return BackboneRef(
        name=f"hf/{name}",
        resolved_name=f"hf/{name}",
        adapter="hf",
        weights=resolved,
        data_config=_data_config(_kind(config, name), config),
        args={},
        library_version=transformers.__version__,
        builder=build,
        text_tower=False,
    )


def _resolve_midas_timm(name: str, weights: WeightsRequest, seed: int) -> BackboneRef:
    """MiDaS as BoB ran it: timm SwinV2 from MiDaS' release checkpoint (see the module docstring)."""
    arch, url = MIDAS_TIMM[name]
    resolved = resolve_weights(weights, [WeightsSource("url", url)], f"MiDaS {url.rsplit('/', 1)[-1]}", seed)
    size = int(timm.models.get_pretrained_cfg(arch).input_size[-1])  # 256 / 384, the MiDaS net size
    return BackboneRef(
        name=f"hf/{name}",
        resolved_name=f"hf/{name}",
        adapter="hf",
        weights=resolved,
        data_config=DataConfig(size, _IMAGENET_MEAN, _IMAGENET_STD, "bicubic", 0.875, "center"),
        args={"protocol": "bob"},
        library_version=timm.__version__,
        builder=build,
        text_tower=False,
    )


def protocol_ref(ref: BackboneRef, protocol: str) -> BackboneRef:
    """`ref` under a task's protocol: `bob` is BoB's MiDaS encoder (module docstring); SAM (detection
    only in BoB, through the same image encoder) is unchanged."""
    repo = ref.resolved_name.removeprefix("hf/")
    if protocol == "default" or ref.args.get("protocol") == protocol or repo not in MIDAS_TIMM:
        return ref
    kind = ref.weights.kind
    request = WeightsRequest(kind, Path(ref.weights.path) if kind == "file" else None)
    out = _resolve_midas_timm(repo, request, ref.weights.seed or 0)
    out.name, out.catalog = ref.name, ref.catalog
    return out


# -------------------------------------------------------------------------------------------- building


def midas_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The timm encoder's weights from a MiDaS DPT checkpoint (`pretrained.model.*`, in the timm 0.6
    layout MiDaS saved) or from a plain timm SwinV2 state dict, in today's timm layout."""
    if any(k.startswith(MIDAS_PREFIX) for k in state):
        state = {k.removeprefix(MIDAS_PREFIX): v for k, v in state.items() if k.startswith(MIDAS_PREFIX)}
    return checkpoint_filter_fn(state, model)


def _build_midas_timm(ref: BackboneRef, input_size: int | None) -> TimmBackbone:
    repo = ref.resolved_name.removeprefix("hf/")
    arch, _ = MIDAS_TIMM[repo]
    kwargs = {"img_size": input_size} if input_size is not None else {}
    torch.manual_seed(ref.weights.seed or 0)
    model = timm.create_model(arch, pretrained=False, **kwargs)  # with its 1000-class head, as MiDaS
    if ref.weights.kind != "random":
        path = Path(ref.weights.path)
        strict_load(model, midas_state(load_state_dict_file(path), model), path)
    head = copy.deepcopy(model.get_classifier())
    model.reset_classifier(0)
    model.eval()
    meta = BackboneMeta(
        name=ref.name,
        resolved_name=ref.resolved_name,
        adapter="hf",
        family="hierarchical",
        method="random" if ref.weights.kind == "random" else "depth",
        params=sum(p.numel() for p in model.parameters()),
        pooled_dim=int(model.num_features),
        architecture=f"midas-timm:{arch}",
        weights=ref.weights.to_dict(),
    )
    data_config = (
        ref.data_config if input_size is None else ref.data_config.with_overrides(image_size=input_size)
    )
    backbone = TimmBackbone(model, meta, data_config)
    backbone.set_native_classifier(head, "imagenet-1k")
    return backbone


def _random_module(kind: str, config: dict[str, Any]) -> nn.Module:
    if kind == "dpt-swinv2":
        from transformers import Swinv2Backbone, Swinv2Config

        return Swinv2Backbone(Swinv2Config.from_dict(config["backbone_config"]))
    from transformers import SamVisionConfig
    from transformers.models.sam.modeling_sam import SamVisionEncoder

    vision = SamVisionConfig.from_dict(config["vision_config"])
    # SAM's released config sets initializer_range=1e-10 (weights are always loaded over it); a
    # random-init baseline needs the usual ViT scale instead of near-zero weights.
    vision.initializer_range = 0.02
    return SamVisionEncoder(vision)


def _pretrained_module(kind: str, root: Path) -> nn.Module:
    if kind == "dpt-swinv2":
        from transformers import DPTForDepthEstimation

        return DPTForDepthEstimation.from_pretrained(root, local_files_only=True).backbone
    from transformers import SamModel

    return SamModel.from_pretrained(root, local_files_only=True).vision_encoder


def _backbone_state(kind: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's part of a full DPT / SAM state dict (or of this backbone's own)."""
    if kind == "dpt-swinv2":
        return {k: v for k, v in state.items() if k.startswith("backbone.")}
    out = {}
    for key, value in state.items():
        key = key.removeprefix("vision_encoder.")
        if key.startswith(("patch_embed.", "pos_embed", "layers.")):
            out[key] = value
    return out


def build(ref: BackboneRef, input_size: int | None = None) -> Backbone:
    if ref.args.get("protocol") == "bob":
        return _build_midas_timm(ref, input_size)
    repo = ref.resolved_name.removeprefix("hf/")
    config = _config_for(repo, ref.weights)
    kind = _kind(config, repo)
    if ref.weights.kind == "pretrained":
        module = _pretrained_module(kind, Path(ref.weights.path))
    else:
        torch.manual_seed(ref.weights.seed or 0)
        module = _random_module(kind, config)
    random = ref.weights.kind == "random"
    meta = BackboneMeta(
        name=ref.name,
        resolved_name=ref.resolved_name,
        adapter="hf",
        family="hierarchical" if kind == "dpt-swinv2" else "vit",
        method="random" if random else ("depth" if kind == "dpt-swinv2" else "segmentation"),
        license=None,
        architecture=kind,
        weights=ref.weights.to_dict(),
    )
    data_config = (
        ref.data_config if input_size is None else ref.data_config.with_overrides(image_size=input_size)
    )
    cls = SwinV2Encoder if kind == "dpt-swinv2" else SamViTEncoder
    backbone = cls(module, meta, data_config)
    if ref.weights.kind == "file":
        state = _backbone_state(kind, load_state_dict_file(Path(ref.weights.path)))
        strict_load(backbone, state, ref.weights.path)
    backbone.eval()
    meta.params = sum(p.numel() for p in backbone.parameters())
    meta.pooled_dim = backbone.feature_info[-1].channels
    return backbone
