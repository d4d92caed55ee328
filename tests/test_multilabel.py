"""The multilabel suite: metrics against scikit-learn, torchmetrics and timm; data layouts; runs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from bob.data import dataset_info, load_split
from bob.errors import DatasetNotFoundError, UsageError
from bob.runner import execute
from bob.spec import make_spec
from bob.tasks.multilabel import MultilabelArgs
from bob.tasks.multilabel.data import MultiLabelSplit, read_real_json
from bob.tasks.multilabel.metrics import (
    average_precision_per_class,
    f1_scores,
    mean_average_precision,
    multilabel_metrics,
    real_accuracy,
)

TINY = "timm/resnet18"
FAST_ARGS = {"image_size": "64", "epochs": "2", "min_steps": "20"}


def _random_case(seed: int, n: int = 60, c: int = 7, ties: bool = False):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.3).astype(np.uint8)
    targets[0] = 1  # every class has a positive
    scores = rng.normal(size=(n, c)) + 1.5 * targets
    if ties:
        scores = np.round(scores, 0)
    return scores, targets


# ------------------------------------------------------------------------------------------ mAP


def test_average_precision_hand_built_case():
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    targets = np.array([[1], [0], [1], [0]])
    # Positives at ranks 1 and 3: precision 1/1 and 2/3.
    assert average_precision_per_class(scores, targets)[0] == pytest.approx((1 + 2 / 3) / 2)


@pytest.mark.parametrize(("seed", "ties"), [(0, False), (1, False), (2, True), (3, True)])
def test_map_equals_sklearn_macro_and_torchmetrics(seed, ties):
    from torchmetrics.classification import MultilabelAveragePrecision

    scores, targets = _random_case(seed, ties=ties)
    ours = mean_average_precision(scores, targets)
    assert ours == pytest.approx(average_precision_score(targets, scores, average="macro"), abs=1e-12)
    tm = MultilabelAveragePrecision(num_labels=targets.shape[1], average="macro", thresholds=None)
    theirs = tm(torch.as_tensor(scores), torch.as_tensor(targets, dtype=torch.long)).item()
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_class_without_positives_is_skipped():
    """sklearn warns and scores such a class 0 (wrongly pulling the mean down); it is left out here,
    as VOC/COCO evaluation code leave it out."""
    scores, targets = _random_case(4)
    targets[:, 2] = 0
    ap = average_precision_per_class(scores, targets)
    assert np.isnan(ap[2]) and np.isfinite(np.delete(ap, 2)).all()
    kept = [c for c in range(targets.shape[1]) if c != 2]
    expected = average_precision_score(targets[:, kept], scores[:, kept], average="macro")
    assert mean_average_precision(scores, targets) == pytest.approx(expected, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sklearn_all = average_precision_score(targets, scores, average="macro")
    assert sklearn_all < mean_average_precision(scores, targets)
    with pytest.raises(UsageError, match="no class has a positive"):
        mean_average_precision(scores, np.zeros_like(targets))


def test_ignored_pairs_are_left_out_of_ap():
    scores, targets = _random_case(5)
    ignore = np.zeros(targets.shape, bool)
    ignore[[3, 9, 17], 1] = True
    rows = ~ignore[:, 1]
    expected = average_precision_score(targets[rows, 1], scores[rows, 1])
    assert average_precision_per_class(scores, targets, ignore)[1] == pytest.approx(expected)
    assert average_precision_per_class(scores, targets, ignore)[0] == pytest.approx(
        average_precision_score(targets[:, 0], scores[:, 0])
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_matches_sklearn_macro_and_micro(seed):
    scores, targets = _random_case(seed, n=80)
    probs = 1 / (1 + np.exp(-scores))
    pred = (probs >= 0.5).astype(int)
    out = f1_scores(probs, targets, 0.5)
    assert out["op"] == pytest.approx(precision_score(targets, pred, average="micro"))
    assert out["or"] == pytest.approx(recall_score(targets, pred, average="micro"))
    assert out["of1"] == pytest.approx(f1_score(targets, pred, average="micro"))
    assert out["cp"] == pytest.approx(precision_score(targets, pred, average="macro", zero_division=0))
    assert out["cr"] == pytest.approx(recall_score(targets, pred, average="macro"))
    assert out["cf1"] == pytest.approx(2 * out["cp"] * out["cr"] / (out["cp"] + out["cr"]))


def test_bad_metric_input_is_refused():
    with pytest.raises(UsageError, match=r"\[N, C\]"):
        mean_average_precision(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(UsageError, match="empty"):
        real_accuracy(np.zeros((0, 2)), np.zeros((0, 2)))
    with pytest.raises(UsageError, match="ignore mask"):
        mean_average_precision(np.zeros((3, 2)), np.ones((3, 2)), np.zeros((2, 2), bool))


# ----------------------------------------------------------------------------------------- ReaL


def _real_sets(n: int, c: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    sets = []
    for i in range(n):
        size = 0 if i % 5 == 0 else int(rng.integers(1, 4))  # every fifth image: an empty set
        sets.append(sorted(int(v) for v in rng.choice(c, size, replace=False)))
    return sets


@pytest.mark.parametrize("seed", [0, 1])
def test_real_accuracy_equals_timm_real_labels(tmp_path, seed):
    from timm.data import RealLabelsImagenet

    n, c = 40, 12
    sets = _real_sets(n, c, seed)
    (tmp_path / "real.json").write_text(json.dumps(sets))
    logits = np.random.default_rng(seed + 10).normal(size=(n, c))
    targets = np.zeros((n, c), np.uint8)
    for i, s in enumerate(sets):
        targets[i, s] = 1
    filenames = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(n)]
    timm_real = RealLabelsImagenet(filenames, real_json=str(tmp_path / "real.json"), topk=(1, 5))
    for start in range(0, n, 16):  # batched, as timm's validate.py feeds it
        timm_real.add_result(torch.as_tensor(logits[start : start + 16]))
    top1, scored, excluded = real_accuracy(logits, targets, 1)
    assert top1 * 100 == pytest.approx(timm_real.get_accuracy(1))
    assert real_accuracy(logits, targets, 5)[0] * 100 == pytest.approx(timm_real.get_accuracy(5))
    assert (scored, excluded) == (n - n // 5, n // 5)
    metrics, counts = multilabel_metrics(logits, None, targets, logits.argmax(1))
    assert metrics["real_top1"] == top1 and metrics["top1"] == 1.0 and "cf1" not in metrics
    assert counts["num_real_excluded"] == n // 5


def test_timm_bundled_real_json_is_the_published_file():
    sets, notes = read_real_json(None)
    assert len(sets) == 50_000 and notes["real_json"].startswith("timm")
    assert sum(1 for s in sets if not s) == 3_163, "the published file leaves 3,163 images without a label"


# ------------------------------------------------------------------------------------ heads, args


def test_sigmoid_head_is_one_vs_rest_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    from bob.tasks.common.linear_head import HeadConfig, fit_heads

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 3)) + rng.normal(size=(200, 3)) > 0).astype(np.float32)
    lam = 0.05
    cfg = HeadConfig(epochs=300, min_steps=0, lr=0.05, batch_size=200)
    w, b = fit_heads(torch.as_tensor(x), torch.as_tensor(y), 3, [lam], cfg, seed=0, loss="sigmoid")
    for c in range(3):
        ref = LogisticRegression(C=1 / (lam * len(x)), tol=1e-10, max_iter=10_000).fit(x, y[:, c])
        np.testing.assert_allclose(w[0, :, c].numpy(), ref.coef_[0], atol=2e-3)
        assert b[0, c].item() == pytest.approx(ref.intercept_[0], abs=2e-3)


def test_sigmoid_gradient_matches_autograd_for_every_candidate():
    from bob.tasks.common.linear_head import _sigmoid_regression_grad

    torch.manual_seed(0)
    k, c, d, b = 3, 4, 5, 6
    x, y = torch.randn(b, d), (torch.rand(b, c) < 0.4).float()
    weight, bias = torch.randn(d, k * c), torch.randn(k * c)
    lam = torch.tensor([0.0, 0.1, 1.0]).repeat_interleave(c)
    weight.grad, bias.grad = torch.zeros_like(weight), torch.zeros_like(bias)
    _sigmoid_regression_grad(x, y, weight, bias, lam, k, c)
    w, bb = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    logits = x @ w + bb
    loss = sum(
        torch.nn.functional.binary_cross_entropy_with_logits(
            logits[:, j * c : (j + 1) * c], y, reduction="sum"
        )
        / b
        + 0.5 * lam[j * c] * w[:, j * c : (j + 1) * c].square().sum()
        for j in range(k)
    )
    loss.backward()
    assert torch.allclose(weight.grad, w.grad, atol=1e-6) and torch.allclose(bias.grad, bb.grad, atol=1e-6)


def test_timm_pretrained_checkpoint_keeps_its_imagenet_head(tmp_path, monkeypatch):
    """A timm checkpoint staged in the weights search path: the adapter drops the head from the
    backbone but keeps it as the native classifier, and pooled → head equals timm's full forward."""
    import timm
    from safetensors.torch import save_file

    from bob.backbones import resolve_backbone

    torch.manual_seed(0)
    full = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=1000).eval()
    staged = tmp_path / "timm" / "mobilenetv3_small_050.lamb_in1k"
    staged.mkdir(parents=True)
    save_file(full.state_dict(), staged / "model.safetensors")
    monkeypatch.setenv("BOB_WEIGHTS_PATH", str(tmp_path))
    backbone = resolve_backbone("timm/mobilenetv3_small_050.lamb_in1k", "pretrained").build(64)
    head, space = backbone.native_classifier()
    assert space == "imagenet-1k" and not any(p is head.weight for p in backbone.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(head(backbone.forward_pooled(x)).numpy(), full(x).numpy(), atol=1e-4)
    assert resolve_backbone("timm/mobilenetv3_small_050", "random").build(64).native_classifier() is None


def test_task_args_are_validated():
    with pytest.raises(UsageError, match="classifier"):
        MultilabelArgs(classifier="oracle").validate()
    with pytest.raises(UsageError, match="threshold"):
        MultilabelArgs(threshold=1.5).validate()
    with pytest.raises(UsageError, match="val_fraction"):
        MultilabelArgs(val_fraction=0.0).validate()


def test_listing_multilabel_tasks_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from bob.suites import task_names\n"
        "names = task_names('multilabel/*')\n"
        "assert {'multilabel/scenes-multilabel', 'multilabel/voc2007-cls', 'multilabel/coco-multilabel',"
        " 'multilabel/imagenet-real'} <= set(names), names\n"
        "import bob.tasks.multilabel, bob.tasks.multilabel.data\n"
        "heavy = [m for m in ('torch', 'torchvision', 'timm', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------ data


def test_scenes_label_sets_come_from_the_scene_annotations():
    split = load_split("scenes-multilabel-mini", "test")
    assert isinstance(split, MultiLabelSplit) and split.targets.shape == (48, 5)
    det = split.source
    for i in range(len(split)):
        present = {int(a["category_id"]) - 1 for a in det.annotations(i)}
        assert set(np.flatnonzero(split.targets[i])) == present
        assert split.labels[i] in present
    assert split.targets.sum(1).max() >= 2, "scenes hold several objects"
    again = load_split("scenes-multilabel-mini", "test")
    assert again.fingerprint == split.fingerprint
    assert load_split("scenes-multilabel-mini", "train").fingerprint != split.fingerprint


def _voc_tree(root: Path, objects: dict[str, list[tuple[str, int]]], splits: dict[str, list[str]]) -> Path:
    from PIL import Image

    base = root / "VOCdevkit" / "VOC2007"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    for image_id, objs in objects.items():
        body = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
            f"<xmax>{5 + 3 * k}</xmax><ymax>{5 + 3 * k}</ymax></bndbox></object>"
            for k, (n, d) in enumerate(objs)
        )
        (base / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{body}</annotation>")
        Image.new("RGB", (16, 16), (len(objs) * 40, 0, 0)).save(base / "JPEGImages" / f"{image_id}.jpg")
    for name, ids in splits.items():
        (base / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return base


def test_voc_labels_and_difficult_convention(tmp_path):
    objects = {
        "000001": [("cat", 0), ("dog", 1)],  # dog only difficult: positive, ignored when scored
        "000002": [("dog", 1), ("dog", 0), ("person", 0)],  # dog has a clear instance: scored
        "000003": [("car", 0)],
    }
    _voc_tree(
        tmp_path, objects, {"train": ["000001"], "val": ["000002"], "test": ["000001", "000002", "000003"]}
    )
    split = load_split("voc2007-cls", "test", root=tmp_path)
    cls = {name: k for k, name in enumerate(split.classes)}
    assert split.targets.shape == (3, 20)
    assert split.targets[0, cls["dog"]] == 1 and split.ignore[0, cls["dog"]]
    assert split.targets[1, cls["dog"]] == 1 and not split.ignore[1, cls["dog"]]
    assert split.ignore.sum() == 1 and split.notes["difficult_only_pairs"] == 1
    # Primary: the largest non-difficult object.
    assert [split.classes[v] for v in split.labels] == ["cat", "person", "car"]
    assert len(load_split("voc2007-cls", "val", root=tmp_path)) == 1


def test_voc_bad_layouts_fail_with_the_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"ImageSets.Main.test\.txt"):
        load_split("voc2007-cls", "test", root=tmp_path)
    base = _voc_tree(tmp_path, {"000001": [("cat", 0)]}, {"test": ["000001", "000007"]})
    with pytest.raises(DatasetNotFoundError, match=r"Annotations.000007\.xml"):
        load_split("voc2007-cls", "test", root=tmp_path)
    (base / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    (base / "Annotations" / "000001.xml").write_text(
        "<annotation><object><name>unicorn</name></object></annotation>"
    )
    with pytest.raises(UsageError, match="unicorn"):
        load_split("voc2007-cls", "test", root=tmp_path)
    (base / "ImageSets" / "Main" / "test.txt").write_text("\n")
    with pytest.raises(UsageError, match="empty"):
        load_split("voc2007-cls", "test", root=tmp_path)


def test_coco_label_sets_drop_images_without_annotations(tmp_path):
    from bob.data.scenes import write_coco

    for split, folder in (("train", "train2014"), ("test", "val2014")):
        scenes = load_split("scenes-mini", split)
        ann = write_coco(scenes, tmp_path / "tmp" / folder)
        coco = json.loads(ann.read_text())
        coco["images"].append({"id": 99_999, "file_name": "000000.png", "width": 128, "height": 128})
        (tmp_path / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
        (tmp_path / "coco" / "annotations" / f"instances_{folder}.json").write_text(json.dumps(coco))
        (tmp_path / "tmp" / folder / "images").rename(tmp_path / "coco" / folder)
    split = load_split("coco-multilabel", "test", root=tmp_path)
    scenes = load_split("scenes-mini", "test")
    assert len(split) == len(scenes) and split.notes["images_without_labels"] == 1
    assert split.targets.sum() == len({(a["image_id"], a["category_id"]) for a in scenes.coco["annotations"]})
    with pytest.raises(DatasetNotFoundError, match=r"instances_val2014\.json"):
        load_split("coco-multilabel", "test", root=tmp_path / "nothing")


def _imagenet_tree(root: Path, per_class: dict[str, int], real: list[list[int]] | None) -> Path:
    from PIL import Image

    number = 0
    for wnid, count in per_class.items():
        for split in ("train", "val"):
            (root / "imagenet" / split / wnid).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            number += 1
            colour = (number * 30 % 256, k * 60 % 256, 90)
            Image.new("RGB", (12, 12), colour).save(
                root / "imagenet" / "val" / wnid / f"ILSVRC2012_val_{number:08d}.JPEG"
            )
            Image.new("RGB", (12, 12), colour).save(root / "imagenet" / "train" / wnid / f"{wnid}_{k}.JPEG")
    if real is not None:
        (root / "imagenet" / "real.json").write_text(json.dumps(real))
    return root


def test_imagenet_real_layout_and_label_sets(tmp_path):
    from bob.data.real_shifts import imagenet_wnids

    wnids = imagenet_wnids()
    real = [[0, 5], [], [7], [1]]
    _imagenet_tree(tmp_path, {wnids[7]: 2, wnids[0]: 2}, real)
    split = load_split("imagenet-real", "test", root=tmp_path)
    # Sorted by val number: 1, 2 live in wnids[7]'s folder, 3, 4 in wnids[0]'s.
    assert [p.name[-13:-5] for p in split.source.paths] == ["00000001", "00000002", "00000003", "00000004"]
    assert split.labels.tolist() == [7, 7, 0, 0]
    assert [np.flatnonzero(t).tolist() for t in split.targets] == real
    assert split.notes["real_empty_sets"] == 1 and split.notes["real_json"].endswith("real.json")
    train = load_split("imagenet-real", "train", root=tmp_path)
    assert len(train) == 4 and sorted(set(train.labels.tolist())) == [0, 7]


def test_imagenet_real_bad_inputs(tmp_path):
    from bob.data.real_shifts import imagenet_wnids

    wnid = imagenet_wnids()[3]
    with pytest.raises(DatasetNotFoundError, match=r"imagenet.val"):
        load_split("imagenet-real", "test", root=tmp_path)
    _imagenet_tree(tmp_path, {wnid: 3}, [[3], [3]])
    with pytest.raises(UsageError, match=r"has 2 entries but .* holds 3 validation images"):
        load_split("imagenet-real", "test", root=tmp_path)
    (tmp_path / "imagenet" / "real.json").write_text(json.dumps([[3], [3], [1000]]))
    with pytest.raises(UsageError, match=r"0\.\.999"):
        load_split("imagenet-real", "test", root=tmp_path)
    (tmp_path / "imagenet" / "real.json").write_text(json.dumps([[3], [3], [3]]))
    (tmp_path / "imagenet" / "val" / wnid / "extra.JPEG").write_bytes(b"")
    with pytest.raises(UsageError, match="not an ILSVRC2012_val"):
        load_split("imagenet-real", "test", root=tmp_path)


def test_registered_datasets_are_multilabel():
    for name in (
        "scenes-multilabel",
        "scenes-multilabel-mini",
        "voc2007-cls",
        "coco-multilabel",
        "imagenet-real",
    ):
        assert dataset_info(name).task_type == "multilabel"


# ------------------------------------------------------------------------------------------ runs


def test_native_classifier_is_refused_before_any_extraction(options):
    out = execute(
        make_spec(TINY, "multilabel/scenes-multilabel-mini", "random", task_args={"classifier": "native"}),
        options,
    )
    assert not out.result.ok and "classifier=probe" in out.result.error["message"]
    assert out.stats["extractions"] == 0


def test_a_test_set_without_any_scored_label_is_refused_before_extraction(options, tmp_path):
    _voc_tree(
        tmp_path, {"000001": [("cat", 0)], "000002": [("dog", 1)]}, {"train": ["000001"], "test": ["000002"]}
    )
    out = execute(
        make_spec(TINY, "multilabel/voc2007-cls", "random", task_args={"root": str(tmp_path)}), options
    )
    assert not out.result.ok and "no image with a (non-ignored) label" in out.result.error["message"]
    assert out.stats["extractions"] == 0


@pytest.mark.slow
def test_scenes_run_end_to_end_and_loads_in_the_leaderboard(options):
    from bob.leaderboard.load import load_results

    out = execute(
        make_spec(TINY, "multilabel/scenes-multilabel-mini", "random", task_args=FAST_ARGS), options
    )
    assert out.result.ok, out.result.error
    m, p = out.result.metrics, out.result.protocol
    assert out.result.main_metric[0] == "map"
    assert set(m) >= {"map", "real_top1", "top1", "top1_real_images", "cf1", "of1", "cp", "or"}
    assert all(0.0 <= v <= 1.0 for v in m.values())
    assert p["num_train"] + p["num_val"] == 96 and p["num_images"] == 48 and p["selected_weight_decay"] > 0
    assert p["val_source"].startswith("random 20%") and len(p["sweep"]) >= 7
    head = torch.load(out.result.artifacts["head"], weights_only=True)
    assert head["weight"].shape[1] == 5
    loaded = load_results(options.results_dir)
    assert len(loaded.runs) == 1 and not loaded.skipped
    assert loaded.runs.iloc[0]["main_metric"] == "map"


@pytest.mark.slow
def test_imagenet_real_native_head_on_photos_equals_timm(options, tmp_path, weights_dir):
    """The real ImageNet MobileNetV2 head on three CC0 photos laid out as ImageNet val. The cat is
    filed as 'tabby' (281) with the ReaL set {tabby, tiger cat, Egyptian cat}; the network says
    Egyptian cat (285, p≈0.7): wrong for plain top-1, right for ReaL — the point of ReaL."""
    import skimage.data
    from PIL import Image
    from timm.data import RealLabelsImagenet

    from bob.backbones import resolve_backbone
    from bob.data.real_shifts import imagenet_wnids
    from bob.features import extract_pooled, split_batches

    wnids = imagenet_wnids()
    photos = [("chelsea", 281), ("coffee", 967), ("astronaut", 0)]
    for number, (name, label) in enumerate(photos, 1):
        folder = tmp_path / "imagenet" / "val" / wnids[label]
        folder.mkdir(parents=True)
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"ILSVRC2012_val_{number:08d}.JPEG")
    real_json = tmp_path / "imagenet" / "real.json"
    real_json.write_text(json.dumps([[281, 282, 285], [967, 968], []]))
    args = {"root": str(tmp_path), "classifier": "native"}
    out = execute(
        make_spec("torchvision/mobilenet_v2", "multilabel/imagenet-real", "pretrained", task_args=args),
        options,
    )
    assert out.result.ok, out.result.error
    m, p = out.result.metrics, out.result.protocol
    assert out.result.main_metric[0] == "real_top1" and p["num_real_excluded"] == 1
    assert m["real_top1"] == 1.0 and m["top1_real_images"] == 0.5 and m["top1"] == pytest.approx(1 / 3)
    # Recompute the logits independently and score them with timm's evaluator.
    ref = resolve_backbone("torchvision/mobilenet_v2", "pretrained")
    model = ref.build()
    head, space = model.native_classifier()
    assert space == "imagenet-1k"
    split = load_split("imagenet-real", "test", root=tmp_path)
    batches = split_batches(split, ref.data_config, 8, 0, torch.device("cpu"))
    with torch.no_grad():
        logits = head(torch.as_tensor(extract_pooled(model, batches, len(split), "cpu")))
    assert logits.argmax(1).tolist()[:2] == [285, 967]
    timm_real = RealLabelsImagenet([p.name for p in split.source.paths], str(real_json))
    timm_real.add_result(logits)
    assert m["real_top1"] * 100 == pytest.approx(timm_real.get_accuracy(1))
    assert m["real_top5"] * 100 == pytest.approx(timm_real.get_accuracy(5))
    # A random init has no ImageNet head: a clear error, not a random classifier.
    rnd = execute(
        make_spec("torchvision/mobilenet_v2", "multilabel/imagenet-real", "random", task_args=args), options
    )
    assert not rnd.result.ok and "exposes no imagenet-1k classifier" in rnd.result.error["message"]


@pytest.mark.slow
def test_voc_run_uses_the_official_val_split_and_ignores_difficult_pairs(options, tmp_path):
    objects = {
        f"{i:06d}": [(("cat", "dog", "car")[i % 3], 0), ("person", int(i % 4 == 0))] for i in range(10)
    }
    ids = sorted(objects)
    _voc_tree(tmp_path, objects, {"train": ids[:4], "val": ids[4:6], "test": ids[6:]})
    args = {**FAST_ARGS, "image_size": "32", "root": str(tmp_path), "weight_decay": "0.01"}
    out = execute(make_spec(TINY, "multilabel/voc2007-cls", "random", task_args=args), options)
    assert out.result.ok, out.result.error
    p = out.result.protocol
    assert p["val_source"] == "official val split" and (p["num_train"], p["num_val"]) == (4, 2)
    assert p["difficult_only_pairs"] == 1 and p["num_images"] == 4
    # Test ids 6..9: cat, dog, car and person everywhere, which is difficult-only in 000008.
    assert p["num_classes_scored"] == 4


@pytest.mark.slow
def test_imagenet_real_probe_trains_a_softmax_head_on_imagenet_train(options, tmp_path):
    from bob.data.real_shifts import imagenet_wnids

    wnids = imagenet_wnids()
    _imagenet_tree(tmp_path, {wnids[2]: 3, wnids[9]: 3}, [[2]] * 3 + [[9, 2]] * 3)
    args = {**FAST_ARGS, "image_size": "32", "root": str(tmp_path), "val_fraction": "0.34"}
    out = execute(make_spec(TINY, "multilabel/imagenet-real", "random", task_args=args), options)
    assert out.result.ok, out.result.error
    p = out.result.protocol
    assert p["head"].startswith("linear softmax") and p["val_source"].startswith("stratified")
    assert p["num_train"] == 4 and p["num_val"] == 2 and "cf1" not in out.result.metrics


@pytest.mark.slow
@pytest.mark.long
def test_imagenet_mobilenet_beats_random_init_on_scenes(options, weights_dir):
    """ImageNet MobileNetV2 vs the same architecture at random init on the embedded default (minutes)."""
    runs = {}
    for weights in ("pretrained", "random"):
        out = execute(make_spec("torchvision/mobilenet_v2", "multilabel/scenes-multilabel", weights), options)
        assert out.result.ok, out.result.error
        runs[weights] = out.result.metrics
    pre, rnd = runs["pretrained"], runs["random"]
    assert pre["map"] - rnd["map"] >= 0.1, (pre, rnd)
    assert pre["real_top1"] > rnd["real_top1"] and pre["of1"] > rnd["of1"], (pre, rnd)
