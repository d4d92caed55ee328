"""open_clip adapter: the image tower of any open_clip model, with its text tower on demand.

Names read `open_clip/<arch>:<pretrained tag>` (`open_clip/ViT-B-16:laion2b_s34b_b88k`,
`open_clip/RN50:openai`); pretrained weights need a tag, `--weights random` does not.

Only the image tower is built, from open_clip's own model config (so no text tower is allocated
and no Hugging Face text config is fetched); pretrained files are found by `bob.weights` from the
tag's hub file / URL and their `visual.*` weights are loaded strictly. The text tower is built
only when `text_encoder()` is called (zero-shot and open-vocabulary tasks).

`forward_pooled` is pre- or post-projection, an explicit backbone arg `pooled=pre|post` (default
`pre`, as BoB and OpenAI's linear probes used for ViTs):
  - ViT: the pooled token after `ln_post` (pre) or that times `proj` (post, the joint embedding);
  - ModifiedResNet (RN50…): the attention pool without (pre) or with (post) its output projection
    `attnpool.c_proj`; post is what OpenAI's `encode_image` and BoB's CLIP-ResNet features return;
  - timm-based towers (ConvNeXt, SigLIP, EVA, MobileCLIP…): the trunk's pre-logits (pre) or the
    tower's output (post); towers without a projection give the same features either way.
`forward_features` is open_clip's `forward_intermediates` for ViTs (one level per block, class
token dropped), the four residual stages (strides 4–32) for ModifiedResNets, and timm's
`forward_intermediates` for timm-based towers.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import _build_vision_tower, resize_pos_embed
from open_clip.modified_resnet import AttentionPool2d, ModifiedResNet
from open_clip.timm_model import TimmModel
from open_clip.transform import PreprocessCfg, merge_preprocess_dict
from open_clip.transformer import VisionTransformer
from torch import nn

from bob.backbones.base import Backbone, BackboneRef
from bob.backbones.checkpoints import is_torchscript, load_state_dict_file, strict_load, torchscript_tensors
from bob.backbones.families import infer_data, infer_family
from bob.backbones.meta import BackboneMeta, DataConfig, FeatureInfo
from bob.errors import UnknownNameError, UsageError, WeightsError
from bob.registry import suggest
from bob.weights import WeightsRequest, WeightsSource, resolve_weights

log = logging.getLogger(__name__)

POOLED = ("pre", "post")
_HF_DEFAULT_FILE = "open_clip_pytorch_model.bin"  # open_clip's default hub file, and its safetensors twin
_HF_SAFE_FILE = "open_clip_model.safetensors"
# Non-tensor entries OpenAI's TorchScript releases keep in their state dict.
_JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _kind(visual: nn.Module) -> str:
    for cls, kind in ((VisionTransformer, "vit"), (ModifiedResNet, "resnet"), (TimmModel, "timm")):
        if isinstance(visual, cls):
            return kind
    raise UsageError(f"open_clip image tower {type(visual).__name__} is not supported by bob's adapter.")


def _attention_pool(pool: AttentionPool2d, x: torch.Tensor, project: bool) -> torch.Tensor:
    """CLIP's QKV attention pool (the mean token attends to all), with or without `c_proj`, at any size.

    At the trained grid and with `project` this is `AttentionPool2d.forward`; on another grid the
    position embedding is resampled (bicubic) instead of failing.
    """
    b, c, h, w = x.shape
    pos = pool.positional_embedding
    side = round((pos.shape[0] - 1) ** 0.5)
    if (h, w) != (side, side):
        grid = F.interpolate(
            pos[1:].reshape(1, side, side, c).permute(0, 3, 1, 2), size=(h, w), mode="bicubic"
        )
        pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(h * w, c)])
    tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
    tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + pos.to(x.dtype)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, t.shape[1], pool.num_heads, c // pool.num_heads).transpose(1, 2)

    q, k, v = pool.q_proj(tokens[:, :1]), pool.k_proj(tokens), pool.v_proj(tokens)
    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(b, c)
    return pool.c_proj(out) if project else out


class TextTower(nn.Module):
    """An open_clip model without its image tower: token ids -> joint-space text embeddings."""

    def __init__(self, model: nn.Module, tokenizer: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        model.visual = nn.Identity()  # the image side lives in the backbone; don't hold it twice
        self.model = model.eval()
        self.tokenizer = tokenizer

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    def forward(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.model.encode_text(tokens, normalize=normalize)

    def encode(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self(self.tokenizer(list(texts)).to(device), normalize=normalize)


class OpenClipBackbone(Backbone):
    """The image tower of an open_clip model behind the bob contract; the text tower on request."""

    has_text_tower = True

    def __init__(
        self,
        visual: nn.Module,
        meta: BackboneMeta,
        data_config: DataConfig,
        pooled: str,
        text_factory: Callable[[], TextTower],
    ) -> None:
        super().__init__(meta, data_config, feature_levels(visual))
        self.visual = visual
        self.kind = _kind(visual)
        self.pooled = pooled
        # Plain dict, not a submodule: the text tower is no part of this module's parameters.
        self._lazy: dict[str, Any] = {"factory": text_factory}

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(x, project=self.pooled == "post")

    def encode_image(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Joint-space image embeddings (post-projection whatever `pooled` is), to match `text_encoder`."""
        out = self._pool(x, project=True)
        return F.normalize(out, dim=-1) if normalize else out

    def _pool(self, x: torch.Tensor, project: bool) -> torch.Tensor:
        v = self.visual
        if self.kind == "vit":
            pooled, _ = v._pool(v.transformer(v._embeds(x)))
            return pooled @ v.proj if project and v.proj is not None else pooled
        if self.kind == "resnet":
            return _attention_pool(v.attnpool, self._stages(x, 3)[-1], project)
        if project:
            return v(x)
        return v.trunk.forward_head(v.trunk.forward_features(x), pre_logits=True)

    def _stages(self, x: torch.Tensor, last: int) -> list[torch.Tensor]:
        """ModifiedResNet stage outputs layer1..layer<last+1> (strides 4, 8, 16, 32)."""
        x = self.visual.stem(x)
        outs = []
        for i in range(last + 1):
            x = getattr(self.visual, f"layer{i + 1}")(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor, levels: Sequence[int] | None = None) -> list[torch.Tensor]:
        indices = self.resolve_levels(levels)
        wanted = sorted(set(indices))
        if self.kind == "resnet":
            stages = self._stages(x, wanted[-1])
            maps = [stages[i] for i in wanted]
        elif self.kind == "vit":
            out = self.visual.forward_intermediates(
                x, indices=wanted, stop_early=True, intermediates_only=True
            )
            maps = out["image_intermediates"]
        else:
            trunk = self.visual.trunk
            if not hasattr(trunk, "forward_intermediates"):
                raise NotImplementedError(
                    f"{self.meta.resolved_name}: its timm trunk has no forward_intermediates, so dense "
                    "features are unavailable; pooled features still work."
                )
            maps = trunk.forward_intermediates(
                x, indices=wanted, output_fmt="NCHW", intermediates_only=True, stop_early=True
            )
        by_level = dict(zip(wanted, maps, strict=True))
        return [by_level[i] for i in indices]

    def trainable(self) -> nn.Module:
        return self.visual

    def text_encoder(self) -> tuple[Callable[..., torch.Tensor], TextTower]:
        """(tokenizer, text tower) of the same checkpoint, built and loaded on the first call only."""
        if "text" not in self._lazy:
            self._lazy["text"] = self._lazy["factory"]()
        tower = self._lazy["text"]
        return tower.tokenizer, tower

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Joint-space text embeddings (unnormalised), on this backbone's device."""
        _, tower = self.text_encoder()
        tower.to(next(self.visual.parameters()).device)
        return tower.encode(texts, normalize=False)


def feature_levels(visual: nn.Module) -> list[FeatureInfo]:
    kind = _kind(visual)
    if kind == "vit":
        stride = int(visual.patch_size[0])
        width = int(visual.transformer.width)
        return [
            FeatureInfo(width, stride, f"transformer.resblocks.{i}") for i in range(visual.transformer.layers)
        ]
    if kind == "resnet":
        return [
            FeatureInfo(int(getattr(visual, f"layer{i}")[-1].bn3.num_features), 2 ** (i + 1), f"layer{i}")
            for i in range(1, 5)
        ]
    return [
        FeatureInfo(int(f["num_chs"]), int(f["reduction"]), f"trunk.{f.get('module', '')}")
        for f in visual.trunk.feature_info
    ]


def pooled_dims(visual: nn.Module) -> tuple[int, int]:
    """(pre-projection, post-projection) widths of the pooled output, read off the modules."""
    kind = _kind(visual)
    if kind == "vit":
        return int(visual.proj.shape[0]), int(visual.proj.shape[1])
    if kind == "resnet":
        return int(visual.attnpool.c_proj.in_features), int(visual.attnpool.c_proj.out_features)
    trunk = visual.trunk
    pre = int(getattr(trunk, "head_hidden_size", None) or trunk.num_features)
    head_out = [m.out_features for m in visual.head.modules() if isinstance(m, nn.Linear)]
    post = int(head_out[-1]) if head_out else int(getattr(trunk, "num_classes", 0) or pre)
    return pre, post


def tower_family(visual: nn.Module) -> str:
    kind = _kind(visual)
    if kind == "vit":
        return "vit"
    if kind == "resnet":
        return "cnn"
    has_attention = any("attention" in type(m).__name__.lower() for m in visual.trunk.modules())
    return infer_family(visual.trunk.default_cfg.get("architecture", ""), has_attention)


def build_visual_tower(arch: str, quick_gelu: bool = False, image_size: int | None = None) -> nn.Module:
    """open_clip's image tower for `arch`, randomly initialised, exactly as `create_model` builds it.

    `image_size` changes a ViT's position-embedding grid (other towers take any size as built).
    """
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise UnknownNameError("open_clip architecture", arch, suggest(arch, open_clip.list_models()))
    vision = dict(cfg["vision_cfg"])
    is_vit = "timm_model_name" not in vision and not isinstance(vision.get("layers"), (list, tuple))
    if image_size is not None and is_vit:
        vision["image_size"] = int(image_size)
    if "timm_model_name" in vision:
        vision["timm_model_pretrained"] = False  # never fetch timm's own weights behind bob's back
    return _build_vision_tower(cfg["embed_dim"], vision, quick_gelu=bool(cfg.get("quick_gelu") or quick_gelu))


# ------------------------------------------------------------------------------------------ checkpoints


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A flat state dict from an open_clip file (.safetensors / .bin / .pt) or an OpenAI TorchScript release."""
    if is_torchscript(path):
        # OpenAI's own RN50.pt etc.: a TorchScript archive, which torch.load refuses with weights_only.
        log.info("reading TorchScript archive %s", path)
        state = torchscript_tensors(path)
        for key in _JIT_EXTRA_KEYS:
            state.pop(key, None)
    else:
        state = load_state_dict_file(path)
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_visual(visual: nn.Module, path: Path) -> None:
    """Load the image-tower weights of a full CLIP checkpoint (`visual.*`) or a tower-only one, strictly."""
    state = read_checkpoint(path)
    if not any(k.startswith("visual.") for k in state):
        state = {f"visual.{k}": v for k, v in state.items()}
    resize_pos_embed(state, SimpleNamespace(visual=visual))  # a ViT built for another input size
    tower = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    strict_load(visual, tower, path)


# ------------------------------------------------------------------------------------------ resolution


def _split(name: str) -> tuple[str, str | None]:
    arch, _, tag = name.partition(":")
    return arch, (tag.lower().replace("-", "_") if tag else None)  # open_clip's own tag normalisation


def _check_name(arch: str, tag: str | None, pretrained: bool) -> None:
    if arch not in open_clip.list_models():
        raise UnknownNameError(
            "open_clip architecture",
            arch,
            suggest(arch, open_clip.list_models()),
            "List them with `bob ls backbones 'open_clip/*'`.",
        )
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained and not tags:
        raise WeightsError(
            f"open_clip/{arch} has no pretrained weights in open_clip {open_clip.__version__}; "
            "run it with --weights random, or pass a checkpoint file with --weights PATH."
        )
    known = f"its tags are: {', '.join(tags)}" if tags else "it has no pretrained weights"
    if tag is not None and tag not in tags:
        raise UsageError(
            f"open_clip {open_clip.__version__} has no pretrained tag '{tag}' for {arch}; {known}."
        )
    if pretrained and tag is None:
        raise UsageError(
            f"open_clip/{arch}: pretrained weights need a tag, as open_clip/{arch}:<tag>; {known}."
        )


def _args(args: dict[str, Any]) -> dict[str, Any]:
    unknown = set(args) - {"pooled"}
    if unknown:
        raise UsageError(f"open_clip backbones take only the arg 'pooled' (pre|post); got {sorted(unknown)}.")
    pooled = str(args.get("pooled", "pre"))
    if pooled not in POOLED:
        raise UsageError(
            f"pooled={pooled!r}: choose 'pre' (before the projection) or 'post' (joint embedding)."
        )
    return {"pooled": pooled}


def _sources(pcfg: dict[str, Any]) -> list[WeightsSource]:
    """The tag's files, in open_clip's order: the hub (safetensors first), then the release URL."""
    sources = []
    hub = pcfg.get("hf_hub") or ""
    if hub:
        # "org/repo/" means open_clip's default file; "org/repo/name.ext" names the file.
        repo, filename = posixpath.split(hub)
        filename = filename or _HF_DEFAULT_FILE
        if filename == _HF_DEFAULT_FILE:
            names = [_HF_SAFE_FILE, filename]
        elif filename.endswith((".bin", ".pth")):
            names = [filename[:-4] + ".safetensors", filename]
        else:
            names = [filename]
        sources += [WeightsSource("hf-hub", f"{repo}/{n}") for n in names]
    url = pcfg.get("url") or ""
    if url:
        # OpenAI's release URLs carry the file's full sha256 as their last directory.
        digest = url.split("/")[-2] if "openaipublic" in url else ""
        sources.append(WeightsSource("url", url, digest if len(digest) == 64 else None))
    return sources


def _data_config(arch: str, pcfg: dict[str, Any]) -> DataConfig:
    """open_clip's eval preprocessing for the tag (its defaults without one), without building anything."""
    pre = merge_preprocess_dict(asdict(PreprocessCfg()), pcfg)
    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    modes = {"shortest": "center", "squash": "squash"}
    if pre["resize_mode"] not in modes:
        raise UsageError(f"open_clip/{arch}: resize mode '{pre['resize_mode']}' has no bob transform.")
    return DataConfig(
        input_size=int(size if isinstance(size, int) else size[-1]),
        mean=tuple(float(v) for v in pre["mean"]),
        std=tuple(float(v) for v in pre["std"]),
        interpolation=str(pre["interpolation"]),
        crop_pct=1.0,  # open_clip resizes straight to the input size (then center-crops the long side)
        crop_mode=modes[pre["resize_mode"]],
    )


def resolve(
    name: str, weights: WeightsRequest, args: dict[str, Any], seed: int, catalog: dict[str, Any] | None = None
) -> BackboneRef:
    """Resolve `arch[:tag]` (without the `open_clip/` prefix) to exact weights and transform; builds nothing."""
    arch, tag = _split(name)
    _check_name(arch, tag, weights.kind == "pretrained")
    args = _args({**((catalog or {}).get("args") or {}), **args})  # the user's args win over the entry's
    pcfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    resolved_name = f"open_clip/{arch}:{tag}" if tag else f"open_clip/{arch}"
    sources = _sources(pcfg) if weights.kind == "pretrained" else []
    if weights.kind == "pretrained" and not sources:
        raise WeightsError(f"{resolved_name}: open_clip lists no file for this tag.")
    resolved = resolve_weights(weights, sources, resolved_name, seed)  # checks OpenAI's URL digests
    return BackboneRef(
        name=f"open_clip/{name}",
        resolved_name=resolved_name,
        adapter="open_clip",
        weights=resolved,
        data_config=_data_config(arch, pcfg),
        args=args,
        library_version=open_clip.__version__,
        builder=build,
        text_tower=True,
    )


def is_model(name: str) -> bool:
    """Live check for names missing from bob's static open_clip index (a newer open_clip, a tag typo).

    A known architecture is enough: `resolve` then answers an unknown tag with the valid ones.
    """
    return _split(name)[0] in open_clip.list_models()


# -------------------------------------------------------------------------------------------- building


def _text_factory(ref: BackboneRef, arch: str, quick_gelu: bool) -> Callable[[], TextTower]:
    def make() -> TextTower:
        log.info("%s: building the text tower", ref.resolved_name)
        kwargs = {"force_quick_gelu": quick_gelu, "pretrained_text": False, "pretrained_image": False}
        if ref.weights.kind == "random":
            torch.manual_seed(ref.weights.seed or 0)  # the same draw as the image tower, then the text's
        model = open_clip.create_model(arch, pretrained=None, **kwargs)
        if ref.weights.kind != "random":
            _load_full(model, Path(ref.weights.path))
        try:
            tokenizer = open_clip.get_tokenizer(arch)
        except OSError as err:  # a Hugging Face tokenizer that is neither cached nor downloadable
            raise WeightsError(
                f"{ref.resolved_name}: the text tower's tokenizer is not available ({type(err).__name__}: "
                f"{str(err)[:300]}). Run once online to fill the Hugging Face cache (then set "
                "HF_HUB_OFFLINE=1 on machines without internet)."
            ) from err
        return TextTower(model, tokenizer)

    return make


def _load_full(model: nn.Module, path: Path) -> None:
    """Both towers from a full checkpoint, strictly, through open_clip's own loader where it can read it."""
    if is_torchscript(path):
        strict_load(model, read_checkpoint(path), path)
        return
    try:
        open_clip.load_checkpoint(model, str(path), strict=True)
    except RuntimeError as err:  # load_state_dict's strict-mode report
        raise WeightsError(
            f"{path} does not hold a full open_clip checkpoint for this model (an image tower only?), "
            f"so the text tower cannot be loaded: {str(err)[:500]}"
        ) from err


def build(ref: BackboneRef, input_size: int | None = None) -> OpenClipBackbone:
    arch, tag = _split(ref.resolved_name.removeprefix("open_clip/"))
    quick_gelu = bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu")) if tag else False
    native = ref.data_config.input_size
    size = input_size if input_size is not None and input_size != native else None
    if ref.weights.kind == "random":
        torch.manual_seed(ref.weights.seed or 0)
    visual = build_visual_tower(arch, quick_gelu=quick_gelu, image_size=size)
    if ref.weights.kind != "random":
        load_visual(visual, Path(ref.weights.path))
    if size is not None and isinstance(visual, TimmModel) and hasattr(visual.trunk, "set_input_size"):
        visual.set_input_size(size)  # timm resamples its position embeddings
    visual.eval()
    pooled = ref.args.get("pooled", "pre")
    kind = ref.weights.kind
    meta = BackboneMeta(
        name=ref.name,
        resolved_name=ref.resolved_name,
        adapter="open_clip",
        family=tower_family(visual),
        method={"random": "random", "pretrained": "vision-language"}.get(
            kind, "unknown"
        ),  # a user file: unknown
        pretrain_data=infer_data(tag) if kind == "pretrained" and tag else None,
        params=sum(p.numel() for p in visual.parameters()),
        pooled_dim=pooled_dims(visual)[0 if pooled == "pre" else 1],
        architecture=f"{arch} (image tower, pooled={pooled})",
        weights=ref.weights.to_dict(),
    )
    data_config = (
        ref.data_config if input_size is None else ref.data_config.with_overrides(image_size=input_size)
    )
    return OpenClipBackbone(visual, meta, data_config, pooled, _text_factory(ref, arch, quick_gelu))
