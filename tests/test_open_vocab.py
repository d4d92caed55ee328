"""`open-vocab/<dataset>`: text encoders, the base/novel protocol, the cosine classifier, metrics, a run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bob.data.coco import DetectionSplit
from bob.data.scenes import SCENE_CLASSES, generate_scenes
from bob.errors import UsageError
from bob.task import parse_task_args
from bob.tasks.common.text import bow_embeddings, text_embeddings
from bob.tasks.open_vocab import OpenVocabArgs
from bob.tasks.open_vocab.metrics import subset_metrics
from bob.tasks.open_vocab.model import text_predictor
from bob.tasks.open_vocab.vocab import novel_ids, without_categories

PALETTE = ("red", "yellow", "green", "blue")
NOVEL = ("green circle", "red star")


def _ov_split(n: int = 6) -> DetectionSplit:
    images, coco = generate_scenes(n, size=64, seed=3, palette=PALETTE, novel=NOVEL)
    return DetectionSplit("scenes-ov", "test", coco, arrays=images)


def test_bow_encoder_is_fixed_normalised_and_compositional():
    emb = bow_embeddings(["red star", "red circle", "blue circle", "Red  STAR!"])
    assert emb.shape == (4, 512)
    assert torch.allclose(emb.norm(dim=1), torch.ones(4))
    assert torch.equal(emb, bow_embeddings(["red star", "red circle", "blue circle", "Red  STAR!"]))
    assert torch.allclose(emb[0], emb[3])  # case and punctuation do not matter
    sim = emb @ emb.T
    assert sim[0, 1] > 0.3 > abs(sim[0, 2])  # a shared word makes names close; none, near-orthogonal
    with pytest.raises(UsageError, match="no word"):
        bow_embeddings(["--"])


def test_colour_scenes_mark_novel_pairs_and_leave_plain_scenes_alone():
    split = _ov_split()
    cats = split.coco["categories"]
    assert len(cats) == 20 and cats[0]["name"] == "red circle"
    assert {c["name"] for c in cats if c["split"] == "novel"} == set(NOVEL)
    _, plain = generate_scenes(2, size=64, seed=3)
    assert [c["name"] for c in plain["categories"]] == list(SCENE_CLASSES)
    assert all("split" not in c for c in plain["categories"])
    with pytest.raises(UsageError, match="colours"):
        generate_scenes(1, size=64, palette=("mauve",))
    with pytest.raises(UsageError, match="Novel categories"):
        generate_scenes(1, size=64, palette=PALETTE, novel=("purple star",))


def test_novel_set_from_marks_or_names_and_base_training_data():
    split = _ov_split()
    marked = novel_ids(split, (), "t")
    by_name = {c["name"]: c["id"] for c in split.coco["categories"]}
    assert marked == {by_name[n] for n in NOVEL}
    assert novel_ids(split, ("blue ring",), "t") == {by_name["blue ring"]}
    with pytest.raises(UsageError, match="not among"):
        novel_ids(split, ("blue rhombus",), "t")
    _, plain = generate_scenes(2, size=64, seed=3)
    plain_split = DetectionSplit("scenes", "test", plain, arrays=np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(UsageError, match="novel=<name>"):
        novel_ids(plain_split, (), "t")
    with pytest.raises(UsageError, match="every category"):
        novel_ids(plain_split, SCENE_CLASSES, "t")
    base = without_categories(split, marked, "train")
    assert len(base) == len(split)
    assert all(a["category_id"] not in marked for a in base.coco["annotations"])
    dropped = [a for a in split.coco["annotations"] if a["category_id"] in marked]
    assert len(base.coco["annotations"]) == len(split.coco["annotations"]) - len(dropped)


def test_cosine_classifier_hides_novel_classes_only_in_training():
    text = bow_embeddings(["red circle", "blue circle", "red star"])
    base = torch.tensor([True, True, False])
    head = text_predictor(16, text, base, 0.01)
    x = torch.randn(5, 16)
    head.train()
    logits, deltas = head(x)
    assert logits.shape == (5, 4) and deltas.shape == (5, 16)
    assert torch.equal(deltas[:, :4], deltas[:, 12:])  # class-agnostic regression
    assert (logits.softmax(1)[:, 3] < 1e-6).all()  # the novel class gets no probability in training
    head.eval()
    logits = head(x)[0]
    assert logits.abs().max() <= 1 / 0.01 + 1e-3  # cosines over the temperature
    region = torch.nn.functional.normalize(head.project(x), dim=1)
    assert torch.allclose(logits[:, 3], region @ text[2] / 0.01, atol=1e-4)


def test_novel_and_base_ap_are_cocoeval_on_their_categories():
    split = _ov_split(8)
    novel = novel_ids(split, (), "t")
    # perfect detections of novel objects only
    records = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in split.coco["annotations"]
        if a["category_id"] in novel
    ]
    assert records, "the seed should place some novel objects"
    got = subset_metrics(split.coco, records, novel, ("bbox",), "novel")
    assert got["box_ap_novel"] == pytest.approx(1.0)
    base = set(split.category_ids) - novel
    assert subset_metrics(split.coco, records, base, ("bbox",), "base")["box_ap_base"] == 0.0


def test_text_encoders_and_args():
    args = parse_task_args(OpenVocabArgs, {}, "open-vocab/scenes-ov")
    args.validate()

    class NoTower:
        class meta:
            name = "plain"

    emb, name = text_embeddings(args.text_encoder, args.prompt, NoTower(), ["red star", "blue ring"])
    assert "bag-of-words" in name and emb.shape == (2, 512)

    class Tower:
        has_text_tower = True

        def encode_text(self, prompts):
            assert prompts == ["a photo of a red star.", "a photo of a blue ring."]
            return torch.tensor([[3.0, 4.0], [0.0, 2.0]])

        class meta:
            name = "toy"

    emb, name = text_embeddings(args.text_encoder, args.prompt, Tower(), ["red star", "blue ring"])
    assert name == "toy text tower" and torch.allclose(emb, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    forced = parse_task_args(OpenVocabArgs, {"text_encoder": "backbone"}, "open-vocab/scenes-ov")
    with pytest.raises(UsageError, match="no text tower"):
        text_embeddings(forced.text_encoder, forced.prompt, NoTower(), ["red star"])
    for bad, match in (
        ({"head": "query"}, "R-CNN head"),
        ({"text_encoder": "word2vec"}, "text_encoder"),
        ({"prompt": "a photo"}, "contain"),
        ({"temperature": "0"}, "temperature"),
    ):
        with pytest.raises(UsageError, match=match):
            parse_task_args(OpenVocabArgs, bad, "open-vocab/scenes-ov").validate()


@pytest.mark.slow
def test_open_clip_text_tower_encodes_prompts():
    class NoTower:
        pass

    clip = parse_task_args(OpenVocabArgs, {"text_encoder": "open_clip:RN50"}, "open-vocab/scenes-ov")
    emb, name = text_embeddings(clip.text_encoder, clip.prompt, NoTower(), ["red star", "blue ring"])
    assert emb.shape == (2, 1024) and "random init" in name
    assert torch.allclose(emb.norm(dim=1), torch.ones(2))


@pytest.mark.slow
def test_bob_run_open_vocab(tmp_path):
    from tests.test_cli import bob

    proc = bob(
        "run", "-b", "timm/resnet18", "-w", "random", "-t", "open-vocab/scenes-ov-mini",
        "-a", "iters=3", "-a", "batch_size=2", "-a", "fpn_channels=32", "-a", "augment=flip",
        "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "r").rglob("*.json")
    result = json.loads(path.read_text())
    assert result["status"] == "ok"
    for key in ("box_ap_novel", "box_ap_base", "box_ap", "mask_ap_novel"):
        assert key in result["metrics"]
    protocol = result["protocol"]
    assert protocol["novel_categories"] == [
        "green circle",
        "blue triangle",
        "red star",
        "yellow cross",
        "blue ring",
    ]
    assert "bag-of-words" in protocol["text_encoder"] and protocol["train_annotations_dropped"] > 0


@pytest.mark.slow
@pytest.mark.long
def test_pretrained_mobilenet_finds_novel_categories(tmp_path, weights_dir):
    """ImageNet features reach novel colour × shape pairs through the bag-of-words text embeddings."""
    from bob.runner import RunOptions, execute
    from bob.spec import make_spec

    args = {
        "iters": "60",
        "batch_size": "4",
        "augment": "flip",
        "fpn_channels": "64",
        "rois_per_image": "128",
    }
    args["lr"] = "3e-4"
    options = RunOptions(tmp_path / "r", tmp_path / "c", device="cpu", num_workers=0)
    ap = {}
    for weights in ("pretrained", "random"):
        spec = make_spec("torchvision/mobilenet_v2", "open-vocab/scenes-ov-mini", weights, 0, {}, args)
        result = execute(spec, options).result
        assert result.ok, result.error
        ap[weights] = result.metrics["box_ap_novel"]
    assert ap["pretrained"] > ap["random"] + 0.03, ap


def _lvis_tree(root):
    """Two 64 px images in COCO's folders and an LVIS v1-style JSON naming them by coco_url."""
    from PIL import Image

    (root / "coco" / "val2017").mkdir(parents=True)
    (root / "lvis").mkdir()
    images = []
    for i in (1, 2):
        Image.new("RGB", (64, 64), (i * 50, 0, 0)).save(root / "coco" / "val2017" / f"{i:012d}.jpg")
        images.append(
            {"id": i, "width": 64, "height": 64, "coco_url": f"http://images.cocodataset.org/val2017/{i:012d}.jpg",
             "neg_category_ids": [3] if i == 1 else [], "not_exhaustive_category_ids": []}
        )  # fmt: skip
    cats = [{"id": 1, "name": "ant", "frequency": "r"}, {"id": 2, "name": "bee", "frequency": "c"},
            {"id": 3, "name": "cat", "frequency": "f"}]  # fmt: skip
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [30, 30, 20, 20], "area": 400},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [2, 2, 10, 10], "area": 100},
    ]
    for a in anns:
        x, y, w, h = a["bbox"]
        a["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    (root / "lvis" / "lvis_v1_val.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    return anns


def test_lvis_layout_and_federated_ap(tmp_path):
    from bob.data import dataset_info
    from bob.data.lvis import is_lvis, load_lvis
    from bob.errors import DatasetNotFoundError
    from bob.tasks.open_vocab.metrics import lvis_metrics

    anns = _lvis_tree(tmp_path)
    split = load_lvis(dataset_info("lvis-v1"), "test", root=tmp_path)
    assert split.image_info(0)["file_name"] == "val2017/000000000001.jpg" and is_lvis(split.coco)
    assert novel_ids(split, (), "t") == {1}  # LVIS's rare categories are the novel set
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in anns
    ]
    got = lvis_metrics(split.coco, perfect, ("bbox",))
    assert got["lvis_box_AP"] == pytest.approx(1.0)
    assert got["lvis_box_APr"] == got["lvis_box_APc"] == got["lvis_box_APf"] == pytest.approx(1.0)
    # federated: a 'cat' box on image 2 is a false positive there (cat is annotated), but an 'ant'
    # box on image 2 is ignored (ant is neither present nor verified absent in image 2)
    unverified = [*perfect, {"image_id": 2, "category_id": 1, "bbox": [40, 0, 10, 10], "score": 0.99}]
    assert lvis_metrics(split.coco, unverified, ("bbox",))["lvis_box_APr"] == pytest.approx(1.0)
    wrong = [*perfect, {"image_id": 1, "category_id": 3, "bbox": [40, 0, 10, 10], "score": 0.99}]
    assert lvis_metrics(split.coco, wrong, ("bbox",))["lvis_box_APf"] < 1.0  # cat verified absent in image 1
    missed = [r for r in perfect if r["category_id"] != 1]
    assert lvis_metrics(split.coco, missed, ("bbox",))["lvis_box_APr"] == 0.0
    (tmp_path / "coco" / "val2017" / "000000000002.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"000000000002\.jpg"):
        load_lvis(dataset_info("lvis-v1"), "test", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"lvis_v1_train\.json"):
        load_lvis(dataset_info("lvis-v1"), "train", root=tmp_path)
