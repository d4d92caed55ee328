"""Metadata inferred from timm names: every tag family that names a method, over the offline index."""

from __future__ import annotations

import re

import pytest

from bob.backbones.catalog import catalog_entries, describe, load_index
from bob.backbones.families import infer_data, infer_family, infer_method

ARCHS = load_index("timm")["architectures"]
PAIRS = [(arch, tag) for arch, entry in sorted(ARCHS.items()) for tag in entry["tags"]]


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("timm/vit_giant_patch16_gap_224.in22k_ijepa", "method", "ssl:ijepa"),
        ("timm/vit_giant_patch16_gap_224.in22k_ijepa", "data", "IN-21k"),
        ("timm/vit_small_patch16_224.dino", "method", "ssl:dino"),
        ("timm/vit_small_patch16_224.dino", "data", "IN-1k"),
        ("timm/resmlp_12_224.fb_dino", "family", "vit"),
        ("timm/resmlp_12_224.fb_dino", "method", "ssl:dino"),
        ("timm/resmlp_12_224.fb_dino", "data", "IN-1k"),
    ],
)
def test_the_reported_tags(name, field, value):
    assert describe(name)[field] == value


def _ft(tag: str) -> bool:
    return "_ft" in tag


# (what selects the tag family over `arch.tag`, the method every member must have, its data or None
# when the tag's other words decide it). A method's `+supervised` suffix follows `_ft` in the tag.
FAMILIES = {
    "ijepa": (r"\.(.*_)?ijepa$", "ssl:ijepa", None),
    "dino": (r"\.(.*_)?dino$", "ssl:dino", "IN-1k"),
    "dinov2": (r"dinov2.*\.lvd142m$", "ssl:dinov2", "LVD-142M"),
    "dinov3": (r"dinov3.*\.lvd1689m$", "ssl:dinov3", "LVD-1689M"),
    "mae": (r"\.(.*_)?mae(_|$)", "ssl:mae", None),
    "fcmae": (r"\.fcmae", "ssl:fcmae", None),
    "eva02-mim": (r"^eva02_.*\.mim_", "ssl:mim", None),
    "eva-clip": (r"^eva.*_clip_.*\.", "vision-language", None),
    "clip": (r"_clip_.*\.(openai|laion|datacomp|dfn|metaclip)", "vision-language", None),
    "openai": (r"\.openai", "vision-language", "WIT-400M"),
    "siglip": (r"siglip.*\.(v2_)?webli", "vision-language", "WebLI"),
    "beit": (r"^beit_", "ssl:beit", None),
    "beitv2": (r"^beitv2_", "ssl:beitv2", None),
    "seer": (r"\.seer", "ssl:swav", "Instagram"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_tag_that_names_a_method(family):
    pattern, method, data = FAMILIES[family]
    members = [(a, t) for a, t in PAIRS if re.search(pattern, f"{a}.{t}")]
    assert members, f"the index has no {family} tag"
    for arch, tag in members:
        row = describe(f"timm/{arch}.{tag}")
        expected = f"{method}+supervised" if method.startswith("ssl:") and _ft(tag) else method
        assert row["method"] == expected, f"{arch}.{tag}"
        assert row["data"], f"{arch}.{tag} has no pretraining data"
        if data is not None and not _ft(tag):
            assert row["data"] == data, f"{arch}.{tag}"


def test_no_self_supervised_or_image_text_tag_reads_supervised():
    ssl_words = re.compile(
        r"(^|_)(ijepa|dino|dinov2|dinov3|mae|fcmae|mim|seer|clip|openai|laion\w*|webli)(_|$)"
    )
    wrong = [
        f"{a}.{t}"
        for a, t in PAIRS
        if ssl_words.search(t) and infer_method(t, a) in ("supervised", "unknown", "semi-supervised")
    ]
    assert wrong == []


def test_fine_tuned_data_reads_as_a_chain():
    assert infer_data("fcmae_ft_in22k_in1k") == "IN-21k→IN-1k"
    assert infer_data("in22k_ft_in22k_in1k") == "IN-21k→IN-1k"
    assert infer_data("in12k_ft_in1k") == "IN-12k→IN-1k"
    assert infer_data("in22k_ft_in22k") == "IN-21k"
    assert infer_data("a1_in1k") == "IN-1k"


def test_the_architecture_decides_only_where_the_tag_names_just_data():
    # The tag names a method: it wins over the architecture.
    assert infer_method("openai_ft_in1k", "vit_base_patch16_clip_224") == "vision-language"
    assert infer_method("mim_in22k", "eva02_base_patch14_224") == "ssl:mim"
    # The tag names only data: the architecture says how it was pretrained.
    assert infer_method("in22k_ft_in22k_in1k", "beit_base_patch16_224") == "ssl:beit+supervised"
    assert infer_method("merged2b", "eva02_base_patch16_clip_224") == "vision-language"
    # Without an architecture the tag alone decides, as before.
    assert infer_method("in22k_ft_in22k_in1k") == "supervised"
    assert infer_method("a1_in1k", "resnet50") == "supervised"


def test_token_mixing_mlps_are_vit_shaped_and_convmixer_is_a_cnn():
    mlps = [a for a in ARCHS if a.startswith(("mixer_", "gmixer_", "resmlp_", "gmlp_"))]
    assert len(mlps) >= 10
    for arch in mlps:
        assert infer_family(arch, has_attention=False) == "vit"
        assert ARCHS[arch]["family"] == "vit", arch  # the shipped index agrees with the rules
    assert infer_family("convmixer_768_32", has_attention=False) == "cnn"
    assert ARCHS["convmixer_768_32"]["family"] == "cnn"
    assert infer_family("resnet50") == "cnn"


def test_inference_agrees_with_the_curated_timm_entries():
    """The catalog states its facts; on its timm entries the rules read the same method and data
    (except the distillation the tags do not spell out)."""
    checked = 0
    for entry in catalog_entries():
        if entry["adapter"] != "timm" or "distillation" in entry["method"]:
            continue
        arch, _, tag = entry["target"].partition(".")
        assert infer_method(tag, arch) == entry["method"], entry["name"]
        assert infer_data(tag) == entry["data"], entry["name"]
        checked += 1
    assert checked >= 10
