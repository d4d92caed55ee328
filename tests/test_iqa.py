"""The IQA suite: label-file layouts and their errors, split rules, nr and fr runs, result loading."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from task_runs import TINY, run_task

from bob.data import load_split
from bob.errors import DatasetNotFoundError, UnknownNameError, UsageError
from bob.spec import make_spec
from bob.tasks.iqa.real import LabelFileError


def _png(path: Path, seed: int, size=(32, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def make_kadid(root: Path, refs: int = 5, types: int = 2, levels: int = 3) -> list[list]:
    """A KADID-10k layout whose distorted images are the reference plus noise growing with the level."""
    images = root / "kadid10k" / "images"
    rows = []
    for r in range(1, refs + 1):
        ref = f"I{r:02d}.png"
        _png(images / ref, r)
        base = np.asarray(Image.open(images / ref), dtype=np.float64)
        for t in range(1, types + 1):
            for lv in range(1, levels + 1):
                name = f"I{r:02d}_{t:02d}_{lv:02d}.png"
                noise = np.random.default_rng(100 * r + 10 * t + lv).normal(scale=25 * lv, size=base.shape)
                Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(images / name)
                rows.append([name, ref, 5.0 - lv + 0.1 * t, 0.1])
    _write_csv(root / "kadid10k" / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    return rows


def test_listing_finds_the_suite_without_importing_torch():
    code = (
        "import sys\n"
        "from bob.suites import task_names\n"
        "import bob.tasks.iqa, bob.tasks.iqa.real, bob.tasks.iqa.skimage_set\n"
        "names = task_names('iqa/*')\n"
        "assert {'iqa/skimage-distortions', 'iqa/koniq10k', 'iqa/kadid10k', 'iqa/live', 'iqa/tid2013'} <= set(names)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- layouts and bad inputs -----------------------------------------------------------------------


def test_kadid_split_is_content_disjoint_and_keeps_the_score_direction(tmp_path):
    rows = make_kadid(tmp_path)
    train = load_split("kadid10k", "train", root=tmp_path)
    test = load_split("kadid10k", "test", root=tmp_path)
    assert len(train) + len(test) == len(rows) and len(test) == 6  # 1 of 5 references held out
    train_refs = {train.references.paths[i] for i in train.ref_index}
    test_refs = {test.references.paths[i] for i in test.ref_index}
    assert not train_refs & test_refs
    assert train.classes == ("type01", "type02")
    assert set(train.scores) <= {float(r[2]) for r in rows}  # KADID's dmos is higher = better: kept
    assert "80%/20%" in train.split_note and train.has_references


def test_missing_label_file_names_the_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"kadid10k/dmos\.csv.*Expected layout"):
        load_split("kadid10k", "train", root=tmp_path)


def test_missing_column_is_named(tmp_path):
    _write_csv(tmp_path / "kadid10k" / "dmos.csv", ["dist_img", "reference", "dmos"], [["a.png", "b.png", 1]])
    with pytest.raises(LabelFileError, match=r"missing column.*ref_img"):
        load_split("kadid10k", "train", root=tmp_path)


def test_empty_label_file(tmp_path):
    _write_csv(tmp_path / "kadid10k" / "dmos.csv", ["dist_img", "ref_img", "dmos"], [])
    with pytest.raises(LabelFileError, match="no data rows"):
        load_split("kadid10k", "train", root=tmp_path)


def test_missing_image_is_named(tmp_path):
    make_kadid(tmp_path)
    (tmp_path / "kadid10k" / "images" / "I03_02_01.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"1 image\(s\).*I03_02_01\.png"):
        load_split("kadid10k", "test", root=tmp_path)


def test_non_numeric_score(tmp_path):
    rows = make_kadid(tmp_path)
    rows[3][2] = "n/a"
    _write_csv(tmp_path / "kadid10k" / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    with pytest.raises(LabelFileError, match="row 4: dmos 'n/a' is not a number"):
        load_split("kadid10k", "train", root=tmp_path)


def test_live_dmos_is_negated(tmp_path):
    base = tmp_path / "live"
    rows = []
    for r in range(3):
        _png(base / "refimgs" / f"r{r}.bmp", r)
        for k in range(2):
            _png(base / "jpeg" / f"img{r}{k}.bmp", 10 * r + k)
            rows.append([f"jpeg/img{r}{k}.bmp", f"refimgs/r{r}.bmp", 20.0 + 10 * k + r])
    _write_csv(base / "live.csv", ["dist_img", "ref_img", "dmos"], rows)
    both = [load_split("live", s, root=tmp_path) for s in ("train", "test")]
    scores = np.concatenate([s.scores for s in both])
    assert sorted(scores) == sorted(-float(r[2]) for r in rows)
    assert both[0].classes == ("jpeg",) and "negated" in both[0].score_note


def test_tid2013_names_match_case_insensitively(tmp_path):
    base = tmp_path / "tid2013"
    lines = []
    for r in (1, 2, 25):
        _png(base / "reference_images" / (f"I{r:02d}.BMP" if r < 25 else "i25.bmp"), r)
        for t in (1, 2):
            name = f"i{r:02d}_{t:02d}_1.bmp"
            _png(base / "distorted_images" / (name.upper() if t == 2 else name), r * 10 + t)
            lines.append(f"{4.0 + t + r / 100:.5f} {name}")
    (base / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    train = load_split("tid2013", "train", root=tmp_path)
    assert len(train) == 4 and train.classes == ("type01", "type02")
    (base / "mos_with_names.txt").write_text("5.1 not_a_tid_name.bmp\n")
    with pytest.raises(LabelFileError, match="line 1"):
        load_split("tid2013", "train", root=tmp_path)


def test_koniq_official_split_when_the_sets_file_exists(tmp_path):
    base = tmp_path / "koniq10k"
    rows = []
    for i in range(10):
        _png(base / "1024x768" / f"{i}.jpg", i)
        rows.append([f"{i}.jpg", 1 + i * 0.3, ["training", "validation", "test"][i % 3]])
    _write_csv(base / "koniq10k_distributions_sets.csv", ["image_name", "MOS", "set"], rows)
    test = load_split("koniq10k", "test", root=tmp_path)
    assert len(test) == 3 and test.split_note == "the dataset's official split"
    assert not test.has_references and (test.ref_index == -1).all()
    (base / "koniq10k_distributions_sets.csv").unlink()
    _write_csv(base / "koniq10k_scores_and_distributions.csv", ["image_name", "MOS"], [r[:2] for r in rows])
    assert len(load_split("koniq10k", "test", root=tmp_path)) == 2  # seeded 80/20 of 10 images


def test_full_reference_on_a_no_reference_set_fails_before_extraction(options, tmp_path):
    base = tmp_path / "koniq10k"
    rows = [[f"{i}.jpg", i] for i in range(10)]
    for i in range(10):
        _png(base / "1024x768" / f"{i}.jpg", i)
    _write_csv(base / "koniq10k_scores_and_distributions.csv", ["image_name", "MOS"], rows)
    result = run_task(options, "iqa/koniq10k", mode="fr", root=tmp_path).result
    assert not result.ok and result.error["user_error"]
    assert "no reference images" in result.error["message"] and result.cache["extractions"] == 0


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ({"mode": "rr"}, UnknownNameError, "iqa mode"),
        ({"head": "mpl"}, UnknownNameError, "Did you mean: mlp"),
        ({"loss": "l1"}, UnknownNameError, "iqa loss"),
        ({"epochs": "0"}, UsageError, "epochs must be a positive"),
        ({"dropout": "1.0"}, UsageError, "dropout"),
        ({"cv_folds": "1"}, UsageError, "cv_folds"),
        ({"ridge_alpha": "-1"}, UsageError, "ridge_alpha"),
    ],
)
def test_bad_args_are_usage_errors(args, error, message):
    with pytest.raises(error, match=message):
        make_spec(TINY, "iqa/skimage-distortions-mini", "random", task_args=args)


def test_losses_follow_pyiqa_definitions():
    import torch

    from bob.tasks.iqa.heads import nin_loss, plcc_loss

    pred = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.4])
    # Both are invariant to a positive affine map of the targets: 0 for a perfect linear fit.
    assert nin_loss(pred, 3 * pred + 1).item() == pytest.approx(0.0, abs=1e-6)
    assert plcc_loss(pred, 3 * pred + 1).item() == pytest.approx(0.0, abs=1e-6)
    assert plcc_loss(pred, -pred).item() == pytest.approx(1.0, abs=1e-6)
    # norm-in-norm with p=1, q=2: ||u(pred) - u(target)||_1 / (2 * sqrt(N)), u = centred unit vector.
    target = torch.tensor([1.0, 2.0, 0.0, 4.0, 3.0])
    u = lambda v: (v - v.mean()) / (v - v.mean()).norm()  # noqa: E731
    expected = (u(pred) - u(target)).abs().sum() / (2 * np.sqrt(5))
    assert nin_loss(pred, target).item() == pytest.approx(expected.item(), rel=1e-6)


# --- generated set and runs -------------------------------------------------------------------------


def test_generated_set_is_deterministic_and_split_by_photo():
    train = load_split("skimage-distortions-mini", "train")
    test = load_split("skimage-distortions-mini", "test")
    assert (len(train), len(test)) == (80, 20)
    assert not set(train.content) & set(test.content)
    # Regenerating from scratch gives the same pixels and scores as the stored arrays.
    from bob.data import DATASETS
    from bob.tasks.iqa.skimage_set import generate

    options = DATASETS.get("skimage-distortions-mini").meta["options"]
    fresh = generate(options["photos"], 1, options["distortions"], options["size"])
    assert np.array_equal(
        fresh["images"][train.images.indices],
        np.stack([np.asarray(train.image(i)) for i in range(len(train))]),
    )
    assert np.array_equal(fresh["scores"][train.images.indices], train.scores)
    # SSIM of a distorted image to its reference falls as the severity rises (5 levels per type).
    ladders = test.scores.reshape(-1, 5)
    assert (np.diff(ladders, axis=1) < 0).mean() > 0.9 and (test.scores <= 1.0).all()


@pytest.mark.slow
def test_nr_and_fr_runs_record_their_protocol(options):
    nr = run_task(options, "iqa/skimage-distortions-mini", epochs=3, image_size=32).result
    assert nr.ok, nr.error
    assert set(nr.metrics) == {"srcc", "krcc", "plcc", "plcc_logistic4", "srcc_within_type"}
    assert nr.protocol["head"] == "mlp" and nr.protocol["mlp"]["loss"] == "mse"
    assert nr.protocol["direction"] == "higher score = better quality"
    assert (nr.protocol["num_train"], nr.protocol["num_test"]) == (80, 20)
    fr = run_task(options, "iqa/skimage-distortions-mini", mode="fr", image_size=32).result
    assert fr.ok, fr.error
    assert fr.protocol["head"] == "linear" and "selected_alpha" in fr.protocol["ridge"]
    # A full-reference distance tracks SSIM even through a random network.
    assert fr.metrics["srcc"] > 0.5, fr.metrics
    again = run_task(options, "iqa/skimage-distortions-mini", mode="fr", image_size=32, ridge_alpha=10).result
    assert again.cache["extractions"] == 0 and again.cache["hits"] == 2


@pytest.mark.slow
def test_fr_on_a_real_layout_and_the_result_loads_in_the_leaderboard(options, tmp_path):
    from bob.leaderboard import load_results

    make_kadid(tmp_path / "data", refs=5, types=2, levels=5)
    result = run_task(
        options, "iqa/kadid10k", mode="fr", root=tmp_path / "data", image_size=32, cv_folds=2
    ).result
    assert result.ok, result.error
    assert result.metrics["srcc"] > 0.5  # noise level drives both the distance and the score
    loaded = load_results(options.results_dir)
    assert not loaded.skipped and list(loaded.runs["task"]) == ["iqa/kadid10k"]


@pytest.mark.slow
@pytest.mark.long
def test_imagenet_mobilenet_beats_random_weights_without_reference(options, weights_dir):
    """The embedded default (1,800 images at 128 px, nr): minutes on two CPU cores."""
    task = "iqa/skimage-distortions"
    pretrained = run_task(options, task, "pretrained", "torchvision/mobilenet_v2").result
    random = run_task(options, task, "random", "torchvision/mobilenet_v2").result
    assert pretrained.ok and random.ok, (pretrained.error, random.error)
    assert pretrained.metrics["srcc"] - random.metrics["srcc"] >= 0.05, (pretrained.metrics, random.metrics)
    assert pretrained.metrics["plcc_logistic4"] > random.metrics["plcc_logistic4"]
