"""Read a backbone's family, pretraining method and data off its architecture name and weights tag.

Used for open namespaces (any timm or torchvision name); curated catalog entries state these facts
instead, and results say which (`meta_source`). The rules are data: ordered (pattern, value) pairs,
first match wins.
"""

from __future__ import annotations

import re

# Architecture name -> family. Hybrids first: some ViT names carry a ResNet stem.
_FAMILY_RULES: tuple[tuple[str, str], ...] = (
    (r"^vit_.*_r\d+_|^vit_.*resnet|^vit_.*_r26_", "hybrid"),
    (
        r"^(coat|maxvit|maxxvit|levit|mobilevit|efficientformer|fastvit|convit|edgenext|efficientvit|nextvit|"
        r"tiny_vit|vitamin|mobilenetv4_hybrid|test_coatnet|test_maxvit|cait|xcit|volo|sequencer)",
        "hybrid",
    ),
    (
        r"^(swin|pvt|twins|mvit|hiera|nest_|davit|focalnet|poolformer|pit_|crossvit|test_mambaout|mambaout)",
        "hierarchical",
    ),
    (r"^(vit|deit|beit|eva|flexivit|samvit|test_vit|naflexvit|aimv2|vision_transformer)", "vit"),
    # Isotropic patch-token MLPs (MLP-Mixer, ResMLP, gMLP): ViT-shaped, one token grid at one stride,
    # no convolution and no attention (`convmixer` is a CNN and does not match).
    (r"^(mixer_|gmixer_|resmlp_|gmlp_)", "vit"),
)

# Weights tag -> pretraining method. Order matters: "mae" before generic tags, "dinov2" data before "dino".
_METHOD_RULES: tuple[tuple[str, str], ...] = (
    (r"fcmae", "ssl:fcmae"),
    (r"(^|_)mae($|_)", "ssl:mae"),
    (r"(^|_)(mim|m30m)($|_)", "ssl:mim"),
    (r"(^|_)ijepa($|_)", "ssl:ijepa"),
    (r"(^|_)seer($|_)", "ssl:swav"),
    (r"mocov3", "ssl:mocov3"),
    (r"lvd1689m|dinov3", "ssl:dinov3"),
    (r"lvd142m|dinov2", "ssl:dinov2"),
    (r"(^|_)dino($|_)", "ssl:dino"),
    (r"clip|openai|laion|siglip|webli|metaclip|dfn|datacomp|(^|_)cc12m|merged2b|yfcc15m", "vision-language"),
    (r"(^|_)sa1b($|_)", "supervised"),
    (r"swsl|ssl_|(^|_)ssl($|_)", "semi-supervised"),
    (r"ig1b|ig3b|wsl|SWAG", "weakly-supervised"),
    (
        r"in1k|in21k|in22k|in12k|imagenet|tv_|tv2_|gluon|a1h?_|a2_|a3_|ra\d?_|ah_|bt_|sw_|fb_|ms_|d_in1k|IMAGENET1K",
        "supervised",
    ),
)

_DATA_RULES: tuple[tuple[str, str], ...] = (
    (r"in21k_ft_in1k|in22k_ft_in1k|in21k_ft_in22k_in1k|in22k_ft_in22k_in1k|in2[12]k_in1k", "IN-21k→IN-1k"),
    (r"in12k_ft_in1k|in12k_in1k", "IN-12k→IN-1k"),
    (r"in21k|in22k", "IN-21k"),
    (r"in12k", "IN-12k"),
    (r"m38m", "Merged-38M"),
    (r"m30m", "Merged-30M"),
    (r"merged2b", "Merged-2B"),
    (r"laiona", "LAION-Aesthetics"),
    (r"laion2b", "LAION-2B"),
    (r"laion400m", "LAION-400M"),
    (r"openai", "WIT-400M"),
    (r"datacompxl", "DataComp-XL"),
    (r"datacomp1b", "DataComp-1B"),
    (r"(^|_)dfn2b", "DFN-2B"),
    (r"(^|_)dfn5b", "DFN-5B"),
    (r"metaclip_400m", "MetaCLIP-400M"),
    (r"metaclip_2pt5b", "MetaCLIP-2.5B"),
    (r"metaclip2_worldwide", "MetaCLIP-2-worldwide"),
    (r"metaclip_altogether", "MetaCLIP-Altogether"),
    (r"(^|_)cc12m", "CC12M"),
    (r"yfcc15m", "YFCC-15M"),
    (r"lvd142m", "LVD-142M"),
    (r"lvd1689m", "LVD-1689M"),
    (r"webli", "WebLI"),
    (r"(^|_)sa1b($|_)", "SA-1B"),
    (r"ig1b|ig3b|(^|_)seer($|_)", "Instagram"),
    (r"SWAG", "IG-3.6B→IN-1k"),
    (r"in1k|imagenet|IMAGENET1K|tv_|tv2_|gluon", "IN-1k"),
    # timm's self-supervised releases that name no data were pretrained on ImageNet-1k (unlabelled).
    (r"(^|_)(dino|mae|fcmae)($|_)", "IN-1k"),
)

# Architecture name -> pretraining method, for checkpoints whose tag names only the data
# (`beit_base_patch16_224.in22k_ft_in22k_in1k`, `eva02_base_patch16_clip_224.merged2b`). It overrides
# a tag that reads `supervised` or nothing; a tag naming a self-supervised or image-text method wins.
_ARCH_METHOD_RULES: tuple[tuple[str, str], ...] = (
    (r"^beitv2_", "ssl:beitv2"),
    (r"^beit3_", "ssl:beit3"),
    (r"^beit_", "ssl:beit"),
    (r"_dinov2", "ssl:dinov2"),
    (r"_dinov3", "ssl:dinov3"),
    (r"_clip(_|$)|siglip|tipsv2", "vision-language"),
)


def _first(rules: tuple[tuple[str, str], ...], text: str) -> str | None:
    for pattern, value in rules:
        if re.search(pattern, text):
            return value
    return None


def infer_family(architecture: str, has_attention: bool | None = None) -> str:
    """Family from the architecture name; attention-free unknowns are CNNs, the rest hybrids."""
    family = _first(_FAMILY_RULES, architecture.lower())
    if family:
        return family
    if has_attention:
        return "hybrid"
    return "cnn"


def infer_method(tag: str, architecture: str = "") -> str:
    """Pretraining method from a weights tag, and from the architecture name where the tag names only
    the data (`beit_*`, `*_clip_*`); a self-supervised model fine-tuned with labels (`fcmae_ft_in1k`)
    is `ssl:<m>+supervised`."""
    method = _first(_METHOD_RULES, tag) or "unknown"
    if method in ("supervised", "unknown") and architecture:
        method = _first(_ARCH_METHOD_RULES, architecture.lower()) or method
    if method.startswith("ssl:") and "_ft" in tag:
        return f"{method}+supervised"
    return method


def infer_data(tag: str) -> str | None:
    return _first(_DATA_RULES, tag)
