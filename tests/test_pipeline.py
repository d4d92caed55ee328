"""The image pipeline: the `pil` path reproduces the reference transform bit for bit, the `tensor`
path stays within the stated tolerance of it, and the pipeline / precision / channels_last options
reach the run's identity and the feature-cache key only when they are not at their defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from task_runs import TINY

from bob import api
from bob.backbones.meta import DataConfig, Extraction
from bob.data.base import ArraySplit, FileSplit
from bob.data.jpeg_folder import ensure_tree, render
from bob.errors import UsageError
from bob.features import PixelDataset, decode_batch, pixel_batches
from bob.transforms import Normalizer, eval_transform, pixels_from_pil

# The `tensor` pipeline against `pil` on real JPEGs (measured on the generated jpeg-folder at 224 px,
# docs/throughput.md): both decode with libjpeg-turbo; torchvision's antialiased uint8 resize rounds
# a few pixels one or two grey levels apart from PIL's (mean |Δ| 0.002-0.003 levels); resnet18's pooled
# features move by 0.02% of their norm at most.
PIXEL_MEAN_TOL = 0.05  # mean |Δ| in grey levels (0..255)
PIXEL_MAX_TOL = 2  # largest |Δ| of any pixel
FEATURE_REL_TOL = 0.005  # max over images of ||f_tensor - f_pil|| / ||f_pil||

CONFIGS = [
    DataConfig(64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", 0.875),
    DataConfig(48, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.95),
    DataConfig(56, (0.5, 0.4, 0.3), (0.2, 0.3, 0.25), "bilinear", 1.0, crop_mode="squash"),
]


@pytest.fixture(scope="module")
def jpeg_split(tmp_path_factory: pytest.TempPathFactory) -> FileSplit:
    from bob.data.embedded import ANIMAL_MNIST_CLASSES

    folder = ensure_tree(tmp_path_factory.mktemp("jpegs"), {"test": 2})
    paths = sorted((folder / "test").glob("*/*.jpg"))
    labels = [ANIMAL_MNIST_CLASSES.index(p.parent.name) for p in paths]
    return FileSplit("jpeg-folder", "test", ANIMAL_MNIST_CLASSES, folder / "test", paths, np.asarray(labels))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_pil_pipeline_equals_the_reference_transform_exactly(cfg: DataConfig) -> None:
    rng = np.random.default_rng(0)
    reference = eval_transform(cfg)
    for size in ((500, 375), (97, 131), (64, 64)):
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        ours = Normalizer(cfg)(pixels_from_pil(image, cfg)[None])[0]
        assert torch.equal(ours, reference(image))


def test_generated_jpegs_are_real_jpegs_at_imagenet_sizes(jpeg_split: FileSplit) -> None:
    assert len(jpeg_split) == 20
    for i in range(len(jpeg_split)):
        with Image.open(jpeg_split.paths[i]) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert max(img.size) == 500 and 333 <= min(img.size) <= 400
    a = render(np.random.default_rng(1), np.full((28, 28), 255, np.uint8), np.zeros((600, 800, 3), np.uint8))
    b = render(np.random.default_rng(1), np.full((28, 28), 255, np.uint8), np.zeros((600, 800, 3), np.uint8))
    assert np.array_equal(np.asarray(a), np.asarray(b))  # deterministic for a seed


def test_tensor_pipeline_stays_within_tolerance_of_pil(jpeg_split: FileSplit) -> None:
    from bob.backbones import resolve_backbone
    from bob.features import extract_pooled

    torch.manual_seed(0)
    backbone = resolve_backbone(TINY, "random").build().eval()
    cpu = torch.device("cpu")
    out = {}
    for pipeline in ("pil", "tensor"):
        cfg = backbone.data_config.with_overrides(pipeline=pipeline)
        pixels = torch.cat(list(pixel_batches(jpeg_split, cfg, 8, 0, cpu)))
        feats = extract_pooled(
            backbone, pixel_batches(jpeg_split, cfg, 8, 0, cpu), len(jpeg_split), cpu, prepare=Normalizer(cfg)
        )
        out[pipeline] = (pixels, feats)
    (p_pil, f_pil), (p_tensor, f_tensor) = out["pil"], out["tensor"]
    assert p_pil.shape == p_tensor.shape and p_pil.dtype == p_tensor.dtype == torch.uint8
    assert not torch.equal(p_pil, p_tensor)  # two implementations, not one path under two names
    diff = (p_pil.float() - p_tensor.float()).abs()
    assert diff.mean() <= PIXEL_MEAN_TOL and diff.max() <= PIXEL_MAX_TOL
    rel = np.linalg.norm(f_pil - f_tensor, axis=1) / np.linalg.norm(f_pil, axis=1)
    assert rel.max() <= FEATURE_REL_TOL


def test_tensor_pipeline_decodes_what_decode_jpeg_cannot_read_with_pil(
    tmp_path, jpeg_split: FileSplit
) -> None:
    cfg = CONFIGS[0].with_overrides(pipeline="tensor")
    png = tmp_path / "a.png"
    with Image.open(jpeg_split.paths[0]) as img:
        img.save(png)
    split = FileSplit("x", "test", ("a",), tmp_path, [png, jpeg_split.paths[0]], np.zeros(2, np.int64))
    dataset = PixelDataset(split, cfg)
    # The PNG (PIL's decode) holds the pixels libjpeg-turbo decoded, as decode_jpeg does for the JPEG.
    assert (dataset[0].float() - dataset[1].float()).abs().max() <= PIXEL_MAX_TOL


def test_deferred_batch_decode_equals_the_per_image_decode(jpeg_split: FileSplit) -> None:
    """The GPU path's batch decode (`decode_batch`), run on the CPU: same pixels as the workers'."""
    cfg = CONFIGS[1].with_overrides(pipeline="tensor")
    deferred = PixelDataset(jpeg_split, cfg, defer_jpeg=True)
    items = [deferred[i] for i in range(4)]
    assert all(item.ndim == 1 for item in items)  # still encoded
    batch = decode_batch(items, deferred, range(4), torch.device("cpu"))
    assert torch.equal(batch, torch.stack([PixelDataset(jpeg_split, cfg)[i] for i in range(4)]))


def test_in_memory_gray_images_match_pil_conversion() -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 30), dtype=np.uint8)
    split = ArraySplit("x", "test", ("a",), images, np.zeros(3, np.int64))
    assert np.array_equal(split.array(1), np.asarray(split.image(1)))


def test_a_tensor_pipeline_with_an_interpolation_torch_lacks_is_a_usage_error() -> None:
    cfg = CONFIGS[0].with_overrides(pipeline="tensor")
    with pytest.raises(UsageError, match="pipeline=pil"):
        PixelDataset(
            ArraySplit("x", "t", ("a",), np.zeros((1, 8, 8), np.uint8), np.zeros(1)),
            DataConfig(**{**cfg.__dict__, "interpolation": "lanczos"}),
        )


def test_extraction_options_enter_the_identity_only_off_their_defaults() -> None:
    base = api.run_specs(TINY, "knn/shapes-mini", "random")[0]
    assert Extraction().identity() == {} and "pipeline" not in CONFIGS[0].to_dict()
    args = api._with_extraction(None, "pil", "fp32", False)
    assert args == {}
    explicit = api._with_extraction(["precision=fp32", "pipeline=pil"], "pil", "fp32", False)
    assert explicit == {}  # spelled-out defaults are the default run
    bf16 = api.run_specs(
        TINY, "knn/shapes-mini", "random", backbone_args=api._with_extraction(None, "pil", "bf16", True)
    )[0]
    assert bf16.backbone_args == {"precision": "bf16", "channels_last": True}
    assert bf16.id != base.id
    assert api._with_extraction(None, "tensor", "fp32", False) == {"pipeline": "tensor"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "fp8"}, "precision must be one of"),
        ({"pipeline": "opencv"}, "pipeline must be one of"),
        ({"precision": "fp16"}, "needs a GPU"),
        ({"precision": "bf16", "backbone_args": ["precision=fp16"]}, "both as an option"),
        ({"backbone_args": ["channels_last=maybe"]}, "channels_last must be true or false"),
    ],
)
def test_bad_extraction_options_are_usage_errors(options, kwargs, match) -> None:
    with pytest.raises(UsageError, match=match):
        api.run(TINY, "knn/shapes-mini", "random", device="cpu", results_dir=options.results_dir, **kwargs)


def test_runs_record_their_extraction_and_key_their_features_apart(options) -> None:
    common = {
        "device": "cpu",
        "num_workers": 0,
        "results_dir": options.results_dir,
        "cache_dir": options.cache_dir,
    }
    fp32 = api.run(TINY, "knn/shapes-mini", "random", **common)[0].result
    bf16 = api.run(TINY, "knn/shapes-mini", "random", precision="bf16", channels_last=True, **common)[
        0
    ].result
    tensor = api.run(TINY, "knn/shapes-mini", "random", pipeline="tensor", **common)[0].result
    assert fp32.ok and bf16.ok and tensor.ok
    assert "extraction" not in fp32.protocol and "pipeline" not in fp32.protocol["transform"]
    assert bf16.protocol["extraction"] == {"precision": "bf16", "channels_last": True}
    assert bf16.spec["backbone_args"] == {"precision": "bf16", "channels_last": True}
    assert tensor.protocol["transform"]["pipeline"] == "tensor"
    keys = [set(r.cache["keys"].values()) for r in (fp32, bf16, tensor)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2])
    assert bf16.cache["extractions"] == tensor.cache["extractions"] == 2  # nothing read from fp32's entries


def test_the_command_line_sets_the_options_and_the_dry_run_counts_geometries(tmp_path, capsys) -> None:
    import json

    from tests.cli_harness import invoke

    common = ["--device", "cpu", "--num-workers", "0", "--results-dir", str(tmp_path / "r"), "-q"]
    argv = [
        "run",
        "-b",
        TINY,
        "-w",
        "random",
        "-t",
        "knn/shapes-mini",
        "--precision",
        "bf16",
        "--channels-last",
    ]
    code, _ = invoke([*argv, "--cache-dir", str(tmp_path / "c"), *common], capsys)
    assert code == 0
    (path,) = (tmp_path / "r").rglob("*.json")
    assert json.loads(path.read_text())["spec"]["backbone_args"] == {
        "precision": "bf16",
        "channels_last": True,
    }
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\ngrids:\n  - backbones: [{TINY}]\n    weights: [random]\n    seeds: [0, 1]\n"
                     "    tasks: [knn/shapes-mini]\n")  # fmt: skip
    code, out = invoke(["sweep", str(sweep), "--dry-run", "--geometry"], capsys)
    assert code == 0
    assert "2 unique extractions · 1 unique geometries" in out.replace("\n", " ")
    code, out = invoke(["sweep", str(sweep), "--geometry"], capsys)
    assert code == 2 and "--geometry goes with --dry-run" in out
