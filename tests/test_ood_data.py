"""Shift data: seeded corruptions, the real-shift loaders on tiny fake trees, and their error paths."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bob.backbones.meta import DataConfig
from bob.data import load_split
from bob.data.corruptions import CORRUPTIONS, CorruptedSplit, RenderSpec, corrupt_image
from bob.data.real_shifts import VISDA_CLASSES, imagenet_wnids, valid_class_indices
from bob.errors import DatasetNotFoundError, UnknownNameError, UsageError
from bob.tasks.ood.data import get_shift, load_shifted_set

WNIDS = imagenet_wnids()


def _images(folder: Path, n: int, ext: str = ".jpg", size: int = 40) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i}{ext}")


# ------------------------------------------------------------------------------------ corruptions


def test_catalog_lists_the_fifteen_imagenet_c_corruptions():
    from imagecorruptions import get_corruption_names

    assert tuple(get_corruption_names("common")) == CORRUPTIONS


# glass_blur compiles a numba kernel on first use (seconds): slow.
@pytest.mark.parametrize(
    "corruption", [pytest.param(c, marks=pytest.mark.slow) if c == "glass_blur" else c for c in CORRUPTIONS]
)
def test_every_corruption_is_deterministic_and_leaves_global_rng_alone(corruption):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    for severity in range(1, 6):  # every severity runs under the installed numpy (2.x)
        a = np.asarray(corrupt_image(image, corruption, severity, seed=7))
        b = np.asarray(corrupt_image(image, corruption, severity, seed=7))
        assert a.shape == (48, 48, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
    assert np.array_equal(np.random.get_state()[1], before)


def test_corrupted_split_is_seeded_per_image_and_fingerprinted():
    clean = load_split("digits", "test")
    fog3 = CorruptedSplit(clean, "digits-c", "gaussian_noise", 3, RenderSpec(64, 64))
    first = np.asarray(fog3.image(5))
    fog3.image(2)  # order does not matter: each image has its own seed
    assert np.array_equal(np.asarray(fog3.image(5)), first)
    assert first.shape == (64, 64, 3)
    assert not np.array_equal(np.asarray(fog3.image(6)), np.asarray(RenderSpec(64, 64)(clean.image(6))))
    fog5 = CorruptedSplit(clean, "digits-c", "gaussian_noise", 5, RenderSpec(64, 64))
    other_seed = CorruptedSplit(clean, "digits-c", "gaussian_noise", 3, RenderSpec(64, 64), seed=1)
    assert len({fog3.fingerprint, fog5.fingerprint, other_seed.fingerprint}) == 3
    assert np.array_equal(fog3.labels, clean.labels) and fog3.split == "gaussian_noise-3"
    noisier = np.abs(np.asarray(fog5.image(5), float) - np.asarray(RenderSpec(64, 64)(clean.image(5)), float))
    assert (
        noisier.mean()
        > np.abs(first.astype(float) - np.asarray(RenderSpec(64, 64)(clean.image(5)), float)).mean()
    )


def test_corruption_errors():
    clean = load_split("digits", "test")
    with pytest.raises(UnknownNameError) as err:
        CorruptedSplit(clean, "x", "fogg", 1, RenderSpec(64, 64))
    assert "fog" in err.value.suggestions
    with pytest.raises(UsageError, match=r"1\.\.5"):
        CorruptedSplit(clean, "x", "fog", 6, RenderSpec(64, 64))
    with pytest.raises(UsageError, match="at least 32"):
        CorruptedSplit(clean, "x", "fog", 1, RenderSpec(16, 16))


def test_render_spec_resizes_and_centre_crops():
    image = Image.new("RGB", (400, 300))
    assert RenderSpec(256, 224)(image).size == (224, 224)
    assert RenderSpec(64, 64)(Image.new("RGB", (8, 8))).size == (64, 64)
    assert RenderSpec(80, 64, squash=True)(image).size == (64, 64)


@pytest.mark.parametrize(
    "cfg",
    [
        DataConfig(
            input_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0, interpolation="bilinear"
        ),
        DataConfig(
            input_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875, interpolation="bicubic"
        ),
        DataConfig(
            input_size=48,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            crop_pct=0.9,
            interpolation="bicubic",
            crop_mode="squash",
        ),
    ],
)
def test_eval_render_of_a_clean_image_is_what_the_backbone_sees(cfg):
    """Severity aside, a corrupted set's pixels reach the backbone exactly as the clean test image's do."""
    from bob.transforms import eval_transform

    image = load_split("digits", "test").image(3)
    render = RenderSpec.from_data_config(cfg)
    transform = eval_transform(cfg)
    assert min(render(image).size) == math.floor(cfg.input_size / cfg.crop_pct)
    assert torch.equal(transform(render(image)), transform(image))


# --------------------------------------------------------------------------------- embedded shifts


def test_shapes_domains_reads_the_catalog_splits():
    shift = get_shift("shapes-domains")
    assert shift.in_dist == "shapes"
    sketch = load_shifted_set(shift, "shapes-sketch", Path("."))
    assert sketch.fingerprint == load_split("shapes-sketch", "test").fingerprint
    assert load_split("shapes-domains", "train").fingerprint == load_split("shapes", "train").fingerprint
    with pytest.raises(UsageError, match="no set"):
        load_shifted_set(shift, "shapes-plain", Path("."))


# ------------------------------------------------------------------------------ ImageNet variants


def test_imagenet_class_subsets_are_timm_lists():
    from importlib.resources import files

    assert len(WNIDS) == 1000 and list(WNIDS) == sorted(WNIDS)
    for subset, synsets in (
        ("imagenet-a", "imagenet_a_synsets.txt"),
        ("imagenet-r", "imagenet_r_synsets.txt"),
    ):
        idx = valid_class_indices(subset)
        listed = (files("timm.data") / "_info" / synsets).read_text().split()
        assert len(idx) == 200 and [WNIDS[i] for i in idx] == listed


def test_imagenet_a_r_sketch_loaders_map_wnids_to_imagenet_indices(tmp_path):
    a_classes = [WNIDS[i] for i in valid_class_indices("imagenet-a")[:2]]
    for wnid in a_classes:
        _images(tmp_path / "imagenet-a" / wnid, 2)
    r_classes = [WNIDS[i] for i in valid_class_indices("imagenet-r")[:3]]
    for wnid in r_classes:
        _images(tmp_path / "imagenet-r" / wnid, 1)
    _images(tmp_path / "imagenet-sketch" / WNIDS[999], 2, ".JPEG")
    a = load_shifted_set(get_shift("imagenet-a"), "imagenet-a", tmp_path)
    assert a.classes == WNIDS and sorted(set(a.labels)) == sorted(WNIDS.index(w) for w in a_classes)
    r = load_shifted_set(get_shift("imagenet-variants"), "imagenet-r", tmp_path)
    assert len(r) == 3 and np.isin(r.labels, valid_class_indices("imagenet-r")).all()
    sketch = load_shifted_set(get_shift("imagenet-sketch"), "imagenet-sketch", tmp_path)
    assert list(sketch.labels) == [999, 999] and sketch.image(0).mode == "RGB"
    assert get_shift("imagenet-a").sets["imagenet-a"]["valid_classes"] == "imagenet-a"
    assert "valid_classes" not in get_shift("imagenet-sketch").sets["imagenet-sketch"]


def test_imagenet_variant_errors_name_the_layout(tmp_path):
    shift = get_shift("imagenet-a")
    with pytest.raises(DatasetNotFoundError, match=r"imagenet-a.*one folder per WordNet id"):
        load_shifted_set(shift, "imagenet-a", tmp_path)
    _images(tmp_path / "imagenet-a" / WNIDS[0], 1)  # n01440764 (tench) is not an ImageNet-A class
    with pytest.raises(DatasetNotFoundError, match="not among its classes: n01440764"):
        load_shifted_set(shift, "imagenet-a", tmp_path)
    (tmp_path / "imagenet-sketch" / WNIDS[3]).mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="holds no image file"):
        load_shifted_set(get_shift("imagenet-sketch"), "imagenet-sketch", tmp_path)


def test_imagenet_v2_folders_are_class_indices(tmp_path):
    folder = tmp_path / "imagenetv2-matched-frequency-format-val"
    for k in ("10", "2"):
        _images(folder / k, 2, ".jpeg")
    v2 = load_shifted_set(get_shift("imagenet-v2"), "imagenet-v2", tmp_path)
    assert list(v2.labels) == [2, 2, 10, 10] and v2.classes == WNIDS
    _images(folder / "n01440764", 1)
    with pytest.raises(DatasetNotFoundError, match=r"not class indices 0\.\.999: n01440764"):
        load_shifted_set(get_shift("imagenet-v2"), "imagenet-v2", tmp_path)


def test_imagenet_c_pre_rendered_and_rendered_on_the_fly(tmp_path):
    _images(tmp_path / "imagenet-c" / "fog" / "3" / WNIDS[7], 2, ".JPEG")
    shift = get_shift("imagenet-c")
    fog3 = load_shifted_set(shift, "fog-3", tmp_path)
    assert list(fog3.labels) == [7, 7]
    with pytest.raises(DatasetNotFoundError, match=r"imagenet-c.*<corruption>/<severity 1-5>/<WordNet id>"):
        load_shifted_set(shift, "fog-4", tmp_path)
    # On the fly: from ImageNet val (bob's imagenet test split), at 256 → 224 like the released set.
    _images(tmp_path / "imagenet" / "val" / WNIDS[1], 2, ".JPEG", size=300)
    rendered = load_shifted_set(get_shift("imagenet-c-render"), "contrast-2", tmp_path)
    assert rendered.image(0).size == (224, 224) and list(rendered.labels) == [0, 0]
    assert np.array_equal(np.asarray(rendered.image(1)), np.asarray(rendered.image(1)))


# ------------------------------------------------------------------------------------------ VisDA


def _visda(root: Path, part: str, per_class: int, classes=("aeroplane", "truck")) -> None:
    lines = []
    for name in classes:
        _images(root / "visda2017" / part / name, per_class, ".png", size=12)
        lines += [f"{name}/img{i}.png {VISDA_CLASSES.index(name)}" for i in range(per_class)]
    (root / "visda2017" / part / "image_list.txt").write_text("\n".join(lines) + "\n")


def test_visda_synthetic_to_real(tmp_path):
    _visda(tmp_path, "train", 10)
    _visda(tmp_path, "validation", 3)
    train = load_split("visda2017", "train", root=tmp_path)
    test = load_split("visda2017", "test", root=tmp_path)
    assert len(train) == 18 and len(test) == 2 and train.classes == VISDA_CLASSES
    assert sorted(test.labels) == [0, 11], "a stratified 10% of the synthetic images"
    real = load_shifted_set(get_shift("visda2017"), "visda2017-real", tmp_path)
    assert len(real) == 6 and sorted(set(real.labels)) == [0, 11] and real.classes == VISDA_CLASSES


def test_visda_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"visda2017.*image_list.txt"):
        load_split("visda2017", "train", root=tmp_path)
    _visda(tmp_path, "validation", 1)
    listing = tmp_path / "visda2017" / "validation" / "image_list.txt"
    listing.write_text(listing.read_text() + "truck/missing.png 11\n")
    with pytest.raises(DatasetNotFoundError, match=r"1 files listed .* are missing"):
        load_shifted_set(get_shift("visda2017"), "visda2017-real", tmp_path)
    listing.write_text("aeroplane/img0.png 12\n")
    with pytest.raises(DatasetNotFoundError, match="line 1"):
        load_shifted_set(get_shift("visda2017"), "visda2017-real", tmp_path)
