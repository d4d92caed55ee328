"""Stable Diffusion (1.x / 2.x) as a feature extractor, through diffusers.

Two recipes, picked with the backbone arg `recipe`:

`bob` (default; Battle of the Backbones' SD encoder). The image goes through the VAE encoder (posterior
*mode*, × `vae.config.scaling_factor`), then through the UNet's encoder half at timestep 0,
cross-attending to a fixed prompt embedding (arg `prompt`, default "image classification", BoB's
classification prompt; its detector used "object detection"). Feature levels, strides w.r.t. the image
(SD's original LDM block names → diffusers modules):

  | level | LDM                   | diffusers                                        | SD ch | stride |
  |-------|-----------------------|--------------------------------------------------|-------|--------|
  | 0     | VAE encoder level 1   | vae.encoder.down_blocks[1] output (after its     | 256   | 4      |
  |       |                       | downsampler)                                     |       |        |
  | 1     | UNet input_blocks[2]  | unet.down_blocks[0], last resnet/attention output | 320   | 8      |
  |       |                       | (before its downsampler)                         |       |        |
  | 2     | UNet input_blocks[5]  | unet.down_blocks[1], same                        | 640   | 16     |
  | 3     | UNet input_blocks[8]  | unet.down_blocks[2], same                        | 1280  | 32     |
  | 4     | UNet middle_block     | unet.mid_block output                            | 1280  | 64     |

The pooled output is the global average of every level, concatenated (256+320+640+1280+1280 = 3776 for
SD). The UNet decoder (up blocks, output convs) is dropped, as BoB dropped `output_blocks`. BoB's
detector put a norm layer on each level and trained it with the detector; bob returns the raw maps.

`dift` (Tang et al., "Emergent Correspondence from Image Diffusion"). The latent is noised to timestep
`t` (default 261) on SD's training schedule (scaled-linear betas 0.00085→0.012, 1000 steps) and the UNet
runs through its up blocks; levels are the outputs of `up_blocks[0..up_ft_index]` (default index 1:
1280 channels at stride 16), averaged over `ensemble` noise draws (default 8). Prompt default: "" (DIFT's
unconditional prompt). Pooled = global average of the last level. The noise comes from a generator
seeded with `noise_seed` (default: the run seed) and is the same for every image, so an image's
features do not depend on its batch. Deviation: DIFT samples the VAE posterior; bob takes its mode
(the posterior std of SD's VAE is tiny), so both recipes are deterministic given the seed.

Either way the VAE decoder is never kept, and the text encoder runs once per (weights, prompt): its
embedding is stored as the `prompt_embeds` buffer (and memoised in-process), then the encoder is freed.

`protocol=bob` (backbone arg `protocol`, which a task's `protocol=bob` sets through
`bob.backbones.protocols.with_protocol`; `bob` recipe only) is BoB's classification model exactly
(`bob-classification/models/stable_diff.py`, `stable_diffusion_v1`): the pooled feature is a GroupNorm
(the UNet's 32 groups, identity-initialised and trained with the head, as BoB's `unet.norm`) on the UNet mid-block
output, then the global average (1280-d for SD) instead of the 3776-d concatenation; input normalised
with ImageNet mean/std instead of [-1, 1]; and the VAE posterior *sampled* in training mode (fine-tuning)
while evaluation takes its mode. The feature levels stay the five maps above. The arg enters the backbone
identity (run ids, feature-cache keys) only when set, so every earlier key stays what it was.
Parameters counted (catalog `params`): VAE encoder + quant_conv + the UNet modules the recipe runs
(for `bob`: time embedding, conv_in, down blocks and mid block); the text encoder is not counted.

Weights: pretrained = the hub repo's diffusers folders (vae/unet/text_encoder/tokenizer), found through
bob's mirrors, the HF cache, or one download (offline machines fail fast). `--weights random` builds
from configs shipped in `entries/diffusion_configs/<org>--<repo>/{vae,unet,text_encoder}.json` and,
having no tokenizer offline, encodes the prompt as UTF-8 bytes between CLIP's start/end tokens (the
text encoder is random too, so any fixed tokenisation is as good). A checkpoint file is a state dict
of this backbone (`backbone.state_dict()`, prompt embedding included), loaded strictly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

from bob.backbones.base import Backbone, BackboneRef
from bob.backbones.checkpoints import load_state_dict_file, strict_load
from bob.backbones.hf_backbone import non_pretrained_weights, resolve_snapshot, shipped_config_dir
from bob.backbones.meta import BackboneMeta, DataConfig, FeatureInfo
from bob.errors import UsageError
from bob.weights import ResolvedWeights, WeightsRequest

log = logging.getLogger(__name__)

RECIPES = ("bob", "dift")
BACKBONE_PROTOCOLS = ("default", "bob")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_DEFAULTS: dict[str, dict[str, Any]] = {
    "bob": {"prompt": "image classification"},
    "dift": {"prompt": "", "t": 261, "up_ft_index": 1, "ensemble": 8},
}
_SNAPSHOT_FILES: tuple[tuple[str, ...], ...] = (
    ("vae/config.json",),
    ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin"),
    ("unet/config.json",),
    ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin"),
    ("text_encoder/config.json",),
    ("text_encoder/model.safetensors", "text_encoder/pytorch_model.bin"),
    ("tokenizer/vocab.json",),
    ("tokenizer/merges.txt",),
    ("tokenizer/tokenizer_config.json",),
    ("tokenizer/special_tokens_map.json",),
)
# (repo, weights fingerprint, prompt) -> embedding: a rebuild in the same process skips the text encoder.
_PROMPT_CACHE: dict[tuple[str, str, str], torch.Tensor] = {}


def _sd_alphas_cumprod() -> torch.Tensor:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    return sched.alphas_cumprod.clone()


def _feature_info(vae_cfg: Any, unet_cfg: Any, settings: dict[str, Any]) -> list[FeatureInfo]:
    vae_ch, unet_ch = list(vae_cfg.block_out_channels), list(unet_cfg.block_out_channels)
    if len(vae_ch) < 3:
        raise UsageError("the SD feature recipes need a VAE with at least 3 encoder blocks")
    latent = 2 ** (len(vae_ch) - 1)  # every VAE encoder block but the last halves the resolution
    n = len(unet_ch)
    if settings["recipe"] == "bob":
        info = [FeatureInfo(vae_ch[1], 4, "vae_encoder.down_blocks.1")]
        info += [FeatureInfo(unet_ch[i], latent * 2**i, f"unet.down_blocks.{i}") for i in range(n - 1)]
        return [*info, FeatureInfo(unet_ch[-1], latent * 2 ** (n - 1), "unet.mid_block")]
    if not 0 <= settings["up_ft_index"] < n:
        raise UsageError(f"up_ft_index must be in 0..{n - 1}; got {settings['up_ft_index']}")
    up_ch = unet_ch[::-1]
    return [
        FeatureInfo(up_ch[j], latent * 2 ** max(n - 2 - j, 0), f"unet.up_blocks.{j}")
        for j in range(settings["up_ft_index"] + 1)
    ]


def _call(block: nn.Module, h: torch.Tensor, emb: torch.Tensor, ctx: torch.Tensor, **kw: Any) -> Any:
    if getattr(block, "has_cross_attention", False):
        return block(hidden_states=h, temb=emb, encoder_hidden_states=ctx, **kw)
    return block(hidden_states=h, temb=emb, **kw)


class StableDiffusionEncoder(Backbone):
    """VAE encoder + the part of the SD UNet a recipe runs, with a cached prompt embedding."""

    def __init__(
        self,
        vae: nn.Module,
        unet: nn.Module,
        prompt_embeds: torch.Tensor,
        meta: BackboneMeta,
        data_config: DataConfig,
        settings: dict[str, Any],
    ) -> None:
        super().__init__(meta, data_config, _feature_info(vae.config, unet.config, settings))
        self.recipe = settings["recipe"]
        self.bob_protocol = settings.get("protocol") == "bob"
        if self.bob_protocol:  # BoB's head norm on the mid block, trained with the classifier
            # LDM's `normalization(ch)` = GroupNorm32(32, ch): the UNet's own group count (32 in SD)
            channels = int(unet.config.block_out_channels[-1])
            self.pool_norm = nn.GroupNorm(int(unet.config.norm_num_groups), channels)
        self.vae_encoder = vae.encoder  # the decoder and post_quant_conv are left behind with `vae`
        self.quant_conv = vae.quant_conv
        self.scaling_factor = float(vae.config.scaling_factor)
        keep = settings["up_ft_index"] + 1 if self.recipe == "dift" else 0
        unet.up_blocks = nn.ModuleList(list(unet.up_blocks)[:keep])
        unet.conv_norm_out, unet.conv_out = None, None
        self.unet = unet
        self.register_buffer("prompt_embeds", prompt_embeds.detach().clone())
        if self.recipe == "dift":
            self.t, self.ensemble = settings["t"], settings["ensemble"]
            self.noise_seed = settings["noise_seed"]
            self.register_buffer("alphas_cumprod", _sd_alphas_cumprod(), persistent=False)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(VAE level-1 map, scaled latent): the posterior mode, i.e. the mean of its Gaussian; under
        protocol=bob in training mode a sample of the posterior, as BoB fine-tuned."""
        enc = self.vae_encoder
        h, level = enc.conv_in(x), None
        for i, block in enumerate(enc.down_blocks):
            h = block(h)
            if i == 1:
                level = h
        h = enc.conv_out(enc.conv_act(enc.conv_norm_out(enc.mid_block(h))))
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        if self.bob_protocol and self.training:
            return level, DiagonalGaussianDistribution(h).sample() * self.scaling_factor
        return level, h.chunk(2, dim=1)[0] * self.scaling_factor

    def _unet(self, latents: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> list[torch.Tensor]:
        """The UNet's own forward, cut to what the recipe reads (SD 1.x/2.x: no class/extra embeds)."""
        unet = self.unet
        emb = unet.time_embedding(unet.get_time_embed(sample=latents, timestep=t), None)
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        h = unet.conv_in(latents)
        skips, maps = [h], []
        for block in unet.down_blocks:
            h, res = _call(block, h, emb, ctx)
            maps.append(res[-2] if block.downsamplers is not None else res[-1])
            skips.extend(res)
        h = _call(unet.mid_block, h, emb, ctx)
        if self.recipe == "bob":
            return [*maps[:-1], h]
        ups = []
        for block in unet.up_blocks:
            n = len(block.resnets)
            res, skips = tuple(skips[-n:]), skips[:-n]
            size = skips[-1].shape[2:] if skips else None  # exact sizes for inputs not divisible by 64
            h = _call(block, h, emb, ctx, res_hidden_states_tuple=res, upsample_size=size)
            ups.append(h)
        return ups

    def _dift(self, latents: torch.Tensor, ctx: torch.Tensor) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(self.noise_seed)
        noise = torch.randn((self.ensemble, *latents.shape[1:]), generator=gen).to(latents)
        a = self.alphas_cumprod[self.t].to(latents)
        t = torch.tensor(self.t, device=latents.device)
        total: list[torch.Tensor] | None = None
        for e in range(self.ensemble):  # one draw at a time: memory of a single UNet pass
            maps = self._unet(a.sqrt() * latents + (1 - a).sqrt() * noise[e], t, ctx)
            total = maps if total is None else [s + m for s, m in zip(total, maps, strict=True)]
        return [m / self.ensemble for m in total]

    def _all_levels(self, x: torch.Tensor, need_unet: bool = True) -> list[torch.Tensor | None]:
        level, latents = self._encode(x)
        ctx = self.prompt_embeds.expand(x.shape[0], -1, -1).to(latents.dtype)
        if self.recipe == "dift":
            return self._dift(latents, ctx)
        if not need_unet:
            return [level] + [None] * (len(self.feature_info) - 1)
        t = torch.zeros((), dtype=torch.long, device=x.device)
        return [level, *self._unet(latents, t, ctx)]

    def forward_features(self, x: torch.Tensor, levels: Sequence[int] | None = None) -> list[torch.Tensor]:
        indices = self.resolve_levels(levels)
        maps = self._all_levels(x, need_unet=any(i > 0 for i in indices))
        return [maps[i] for i in indices]

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        maps = self._all_levels(x)
        if self.recipe == "dift":
            return maps[-1].mean(dim=(2, 3))
        if self.bob_protocol:  # GroupNorm in float32 (LDM's GroupNorm32), then the global average
            mid = maps[-1]
            return self.pool_norm(mid.float()).to(mid.dtype).mean(dim=(2, 3))
        return torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1)


# ------------------------------------------------------------------------------------------ resolution


def _settings(args: dict[str, Any], seed: int) -> dict[str, Any]:
    """Validated args with every default made explicit (they are part of the feature-cache key)."""
    recipe = str(args.get("recipe", "bob"))
    if recipe not in RECIPES:
        raise UsageError(f"recipe must be one of {', '.join(RECIPES)}; got '{recipe}'.")
    allowed = {"recipe", *_DEFAULTS[recipe]} | ({"noise_seed"} if recipe == "dift" else {"protocol"})
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise UsageError(
            f"unknown backbone args {unknown} for the '{recipe}' recipe; it takes {sorted(allowed)}."
        )
    out: dict[str, Any] = {"recipe": recipe, "prompt": str(args.get("prompt", _DEFAULTS[recipe]["prompt"]))}
    protocol = str(args.get("protocol", "default"))
    if protocol not in BACKBONE_PROTOCOLS:
        raise UsageError(f"protocol must be one of {', '.join(BACKBONE_PROTOCOLS)}; got '{protocol}'.")
    if protocol != "default":  # left out while default: the identity of every earlier run stays
        out["protocol"] = protocol
    if recipe == "dift":
        for key in ("t", "up_ft_index", "ensemble"):
            out[key] = int(args.get(key, _DEFAULTS["dift"][key]))
        out["noise_seed"] = int(args.get("noise_seed", seed))
        if not 0 <= out["t"] < 1000 or out["ensemble"] < 1 or out["up_ft_index"] < 0:
            raise UsageError("dift needs 0 <= t < 1000, ensemble >= 1 and up_ft_index >= 0.")
    return out


def _configs(repo: str, weights: ResolvedWeights) -> dict[str, dict[str, Any]]:
    """The vae/unet/text_encoder configs: the snapshot's own, or the ones bob ships."""
    if weights.kind == "pretrained":
        root = Path(weights.path)
        paths = {k: root / k / "config.json" for k in ("vae", "unet", "text_encoder")}
    else:
        root = shipped_config_dir("diffusion_configs", repo)
        paths = {k: root / f"{k}.json" for k in ("vae", "unet", "text_encoder")}
    if not all(p.is_file() for p in paths.values()):
        raise UsageError(
            f"diffusers/{repo}: bob ships no configs for this repo, so it cannot be built with --weights "
            "random or a checkpoint file; use --weights pretrained."
        )
    return {k: json.loads(p.read_text()) for k, p in paths.items()}


def _data_config(settings: dict[str, Any], configs: dict[str, dict[str, Any]] | None) -> DataConfig:
    half = (0.5, 0.5, 0.5)  # the VAE reads images in [-1, 1]
    if settings.get("protocol") == "bob":  # BoB: timm's default transform, ImageNet statistics, 256 px
        return DataConfig(256, _IMAGENET_MEAN, _IMAGENET_STD, "bicubic", 0.875, "center")
    if settings["recipe"] == "bob":  # BoB fine-tuned and evaluated its SD encoder at 256 px
        return DataConfig(256, half, half, "bicubic", 0.875, "center")
    if configs is None:
        raise ValueError("the dift transform needs the VAE and UNet configs")
    latent = 2 ** (len(configs["vae"]["block_out_channels"]) - 1)
    native = int(configs["unet"].get("sample_size", 64)) * latent  # DIFT resizes to the native size
    return DataConfig(native, half, half, "bilinear", 1.0, "squash")


def resolve(
    name: str, weights: WeightsRequest, args: dict[str, Any], seed: int, catalog: dict[str, Any] | None = None
) -> BackboneRef:
    """Resolve a diffusers repo (`CompVis/stable-diffusion-v1-4`) and recipe; builds nothing."""
    settings = _settings(args, seed)
    if weights.kind == "pretrained":
        resolved = resolve_snapshot(name, _SNAPSHOT_FILES, f"diffusers/{name}")
    else:
        resolved = non_pretrained_weights(weights, seed)
    configs = _configs(name, resolved)
    n_up = len(configs["unet"]["block_out_channels"])
    if settings["recipe"] == "dift" and settings["up_ft_index"] >= n_up:
        raise UsageError(f"up_ft_index must be in 0..{n_up - 1} for {name}; got {settings['up_ft_index']}.")
    return BackboneRef(
        name=f"diffusers/{name}",
        resolved_name=f"diffusers/{name}",
        adapter="diffusion",
        weights=resolved,
        data_config=_data_config(settings, configs),
        args=settings,
        library_version=diffusers.__version__,
        builder=build,
        text_tower=False,
    )


def protocol_ref(ref: BackboneRef, protocol: str) -> BackboneRef:
    """`ref` under a task's protocol: `bob` is BoB's SD classifier recipe (see the module docstring)."""
    if protocol == "default" or ref.args.get("protocol") == protocol:
        return ref
    if ref.args.get("recipe") != "bob":
        raise UsageError(
            f"{ref.name}: protocol={protocol} reproduces BoB's SD encoder, which is the 'bob' recipe; "
            f"this backbone uses recipe={ref.args.get('recipe')}."
        )
    settings = _settings({**ref.args, "protocol": protocol}, 0)
    return dataclasses.replace(ref, args=settings, data_config=_data_config(settings, None))


# -------------------------------------------------------------------------------------------- building


def encode_prompt(text_encoder: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The cross-attention context SD pipelines use: the text encoder's last hidden state."""
    with torch.no_grad():
        return text_encoder(input_ids=input_ids).last_hidden_state


def _byte_ids(prompt: str, config: Any) -> torch.Tensor:
    """Offline tokenisation for random init: CLIP's start/end tokens around the prompt's UTF-8 bytes."""
    length, vocab = int(config.max_position_embeddings), int(config.vocab_size)
    bos, eos = (49406, 49407) if vocab > 49407 else (vocab - 2, vocab - 1)
    body = [b % vocab for b in prompt.encode("utf-8")][: length - 2]
    ids = [bos, *body, eos]
    return torch.tensor([ids + [eos] * (length - len(ids))])


def _prompt_embeds(ref: BackboneRef, configs: dict[str, dict[str, Any]]) -> torch.Tensor:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    key = (ref.resolved_name, ref.weights.fingerprint(), ref.args["prompt"])
    if key in _PROMPT_CACHE:
        return _PROMPT_CACHE[key]
    if ref.weights.kind == "pretrained":
        root = Path(ref.weights.path)
        tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", local_files_only=True)
        ids = tokenizer(
            ref.args["prompt"],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
    else:
        torch.manual_seed((ref.weights.seed or 0) + 2)
        text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(configs["text_encoder"]))
        ids = _byte_ids(ref.args["prompt"], text_encoder.config)
    embeds = encode_prompt(text_encoder.eval(), ids)
    del text_encoder  # released: only the embedding is kept
    if embeds.device.type != "meta":  # a meta-device build (parameter counting) has no real embedding
        _PROMPT_CACHE[key] = embeds
    return embeds


def _components(ref: BackboneRef, configs: dict[str, dict[str, Any]]) -> tuple[nn.Module, nn.Module]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if ref.weights.kind == "pretrained":
        root = Path(ref.weights.path)
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", local_files_only=True)
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", local_files_only=True)
        return vae, unet
    seed = ref.weights.seed or 0
    torch.manual_seed(seed)  # each component seeded on its own: a cached prompt must not shift the rest
    vae = AutoencoderKL.from_config(configs["vae"])
    torch.manual_seed(seed + 1)
    return vae, UNet2DConditionModel.from_config(configs["unet"])


def _check_unet(repo: str, unet: nn.Module) -> None:
    cfg = unet.config
    extras = ("class_embed_type", "addition_embed_type", "encoder_hid_dim", "num_class_embeds")
    if any(getattr(cfg, key, None) for key in extras):
        raise UsageError(f"diffusers/{repo}: not an SD 1.x/2.x UNet (it has {', '.join(extras)} set).")


def build(ref: BackboneRef, input_size: int | None = None) -> StableDiffusionEncoder:
    repo = ref.resolved_name.removeprefix("diffusers/")
    configs = _configs(repo, ref.weights)
    embeds = _prompt_embeds(ref, configs)
    vae, unet = _components(ref, configs)
    _check_unet(repo, unet)
    meta = BackboneMeta(
        name=ref.name,
        resolved_name=ref.resolved_name,
        adapter="diffusion",
        family="diffusion",
        method="random" if ref.weights.kind == "random" else "generative",
        architecture=f"stable-diffusion-encoder:{ref.args['recipe']}",
        weights=ref.weights.to_dict(),
    )
    data_config = (
        ref.data_config if input_size is None else ref.data_config.with_overrides(image_size=input_size)
    )
    backbone = StableDiffusionEncoder(vae, unet, embeds, meta, data_config, ref.args)
    del vae  # drops the decoder
    if ref.weights.kind == "file":
        strict_load(backbone, load_state_dict_file(Path(ref.weights.path)), ref.weights.path)
    backbone.eval()
    meta.params = sum(p.numel() for p in backbone.parameters())
    info = backbone.feature_info
    one_level = backbone.recipe == "dift" or backbone.bob_protocol
    meta.pooled_dim = info[-1].channels if one_level else sum(i.channels for i in info)
    return backbone
