"""Per-sample files (bob/samples, tasks/common/samples.py): every suite writes one beside its result,
and the metric recomputed from it equals the reported one; each kind's resampled metric equals the
reference implementation on the resample built by duplicating units (scipy, scikit-learn, COCOeval)."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score
from task_runs import run_task

from bob.pareto import hypervolume_2d
from bob.results import RunResult
from bob.runner import RunOptions
from bob.samples import SUFFIX, SamplesError, from_bytes, make_samples, read_samples, samples_path
from bob.samples.draws import Draws, seed_draws
from bob.suites import SUITES, task_class
from bob.tasks.common.coco_eval import coco_metrics

RNG = np.random.default_rng(0)
# More modes of some suites (the default check args are the first case of every suite).
EXTRA = {
    "ood": {"mode": "finetune", "ft_epochs": "1"},
    "few-label": {"mode": "linear"},
    "video-cls": {"pool": "temporal-conv", "head_epochs": "2"},
    "iqa": {"mode": "fr"},
    "detection": {"head": "query"},
}


def _check_file(result: RunResult) -> None:
    """The result records its sample file; the file matches the sha256 and reproduces the main metric."""
    assert result.status == "ok", result.error
    record, main = result.protocol["samples"], result.task["main_metric"]
    assert record["stored"] and "check" not in record, record
    path = result.artifacts["samples"]
    assert path.endswith(SUFFIX) and record["file"] == path.rsplit("/", 1)[-1]
    samples = read_samples(path, record["sha256"])
    assert samples.metric == main and record["rows"] == samples.n_units
    assert record["fields"] == sorted(samples.arrays)
    assert samples.value() == pytest.approx(result.metrics[main], rel=1e-12, abs=1e-12)


def _suite_cases() -> list[tuple[str, dict[str, str]]]:
    cases = []
    for name in SUITES.names():
        if name == "zero-shot":  # needs a text tower: test_zero_shot_writes_its_file
            continue
        cases.append((name, {}))
        if name in EXTRA:
            cases.append((name, EXTRA[name]))
    return cases


@pytest.mark.parametrize(("suite", "extra"), _suite_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_suite_writes_a_file_that_reproduces_its_main_metric(options, suite, extra):
    cls = task_class(suite)
    outcome = run_task(options, f"{suite}/{cls.check_dataset}", **{**cls.check_args, **extra})
    _check_file(outcome.result)


@pytest.mark.slow
def test_zero_shot_writes_its_file(options):
    outcome = run_task(
        options, "zero-shot/shapes-mini", backbone="open_clip/ViT-S-32-alt", templates="simple", image_size=32
    )
    _check_file(outcome.result)


def test_distillation_with_a_baseline_keeps_the_students_file(options):
    """kd_baseline fine-tunes twice; the file is the student's (the run's top1), not the baseline's."""
    outcome = run_task(
        options, "finetune/shapes-mini", epochs=1, warmup_epochs=0, batch_size=16,
        teacher="timm/test_resnet", teacher_weights="random", kd_baseline="true",
    )  # fmt: skip
    _check_file(outcome.result)


def test_no_samples_writes_nothing_and_says_so(results_dir, cache_dir):
    options = RunOptions(results_dir, cache_dir, device="cpu", num_workers=0, save_samples=False)
    result = run_task(options, "knn/shapes-mini").result
    assert result.status == "ok" and "samples" not in result.artifacts
    assert result.protocol["samples"] == {"stored": False, "reason": "turned off (--no-samples)"}
    assert not list(results_dir.rglob(f"*{SUFFIX}"))


# ---------------------------------------------------------------------------------- the file format


def _top1_set(n: int = 50):
    labels = RNG.integers(0, 4, n)
    return make_samples(
        "top1", "top1", {"pred": RNG.integers(0, 4, n), "label": labels}, units="image", truth=(labels,)
    )


def test_the_file_round_trips_without_pickles_and_checks_its_sha(tmp_path):
    samples = _top1_set()
    data = samples.to_bytes()
    again = from_bytes(data)
    assert again.key == samples.key and again.value() == samples.value()
    with zipfile.ZipFile(tmp_path.joinpath("x.npz").open("wb"), "w") as z:
        z.writestr("meta.npy", b"not numpy")
    with pytest.raises(SamplesError, match=r"x\.npz is not a valid sample file"):
        from_bytes((tmp_path / "x.npz").read_bytes(), "x.npz")
    with pytest.raises(SamplesError, match=r"y\.npz is not a readable sample file"):
        from_bytes(b"garbage", "y.npz")
    path = tmp_path / "r.samples.npz"
    path.write_bytes(data)
    with pytest.raises(SamplesError, match="does not match the sha256"):
        read_samples(path, "0" * 64)
    with pytest.raises(SamplesError, match="is missing"):
        read_samples(tmp_path / "gone.samples.npz")
    assert samples_path(tmp_path / "abc.json") == tmp_path / "abc.samples.npz"


def test_a_file_with_an_unknown_kind_or_bad_arrays_is_refused():
    samples = _top1_set()
    with pytest.raises(SamplesError, match="unknown kind"):
        from_bytes(dataclasses.replace(samples, kind="nope").to_bytes())
    with pytest.raises(ValueError, match="missing field"):
        make_samples("top1", "top1", {"pred": np.zeros(3, int)}, units="image")
    with pytest.raises(ValueError, match="unit out of range"):
        make_samples(
            "mean",
            "map",
            {"value": np.ones(3), "unit": np.array([0, 1, 5])},
            units="q",
            params={"n_units": 3},
        )


def test_the_pairing_key_follows_the_truth_not_the_predictions():
    labels = np.arange(10) % 3
    a = make_samples("top1", "top1", {"pred": labels, "label": labels}, units="image", truth=(labels,))
    b = make_samples(
        "top1", "top1", {"pred": labels[::-1].copy(), "label": labels}, units="image", truth=(labels,)
    )
    c = make_samples(
        "top1", "top1", {"pred": labels, "label": labels[::-1].copy()}, units="image", truth=(labels[::-1],)
    )
    assert a.key == b.key != c.key


# ------------------------------------------------------------------------- kinds against references


def _counts(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap-like counts (0, 1 or 2 per unit) and the indices that duplicate the units accordingly."""
    w = RNG.integers(0, 3, n)
    return w.astype(float)[None], np.repeat(np.arange(n), w)


def test_top1_with_cells_and_units_is_the_weighted_mean_of_cell_means():
    n_units = 30
    unit = np.r_[np.arange(30), np.arange(30)]
    cell = np.r_[np.zeros(30, int), np.ones(30, int)]
    pred, label = RNG.integers(0, 2, 60), RNG.integers(0, 2, 60)
    s = make_samples(
        "top1", "m", {"pred": pred, "label": label, "unit": unit, "cell": cell},
        units="image", params={"n_units": n_units, "coef": [0.25, 0.75]},
    )  # fmt: skip
    hit = pred == label
    assert s.value() == pytest.approx(0.25 * hit[:30].mean() + 0.75 * hit[30:].mean())
    w, idx = _counts(n_units)
    expected = 0.25 * hit[:30][idx].mean() + 0.75 * hit[30:][idx].mean()
    assert s.statistic(w)[0] == pytest.approx(expected)
    assert s.linear is not None and s.linear.exact32 and not s.binary


def test_spearman_equals_scipy_on_the_duplicated_resample():
    pred, target = np.round(RNG.normal(size=80), 1), np.round(RNG.normal(size=80), 1)
    s = make_samples("spearman", "srcc", {"pred": pred, "target": target}, units="image")
    assert s.value() == pytest.approx(stats.spearmanr(pred, target).statistic, abs=1e-12)
    w, idx = _counts(80)
    assert s.statistic(w)[0] == pytest.approx(stats.spearmanr(pred[idx], target[idx]).statistic, abs=1e-12)


def test_multilabel_map_equals_scikit_learn_on_the_duplicated_resample():
    scores = np.round(RNG.normal(size=(60, 4)), 1).astype(np.float32)  # ties across images
    targets, ignore = RNG.random((60, 4)) < 0.3, RNG.random((60, 4)) < 0.1
    s = make_samples(
        "average_precision", "map", {"scores": scores, "targets": targets, "ignore": ignore}, units="image"
    )

    def reference(rows: np.ndarray) -> float:
        sc, tg, ig = scores[rows], targets[rows], ignore[rows]
        aps = [
            average_precision_score(tg[~ig[:, c], c], sc[~ig[:, c], c])
            for c in range(4)
            if tg[~ig[:, c], c].any()
        ]
        return float(np.mean(aps))

    assert s.value() == pytest.approx(reference(np.arange(60)), abs=1e-12)
    w, idx = _counts(60)
    assert s.statistic(w)[0] == pytest.approx(reference(idx), abs=1e-12)


def test_miou_sums_the_images_areas():
    inter = RNG.integers(0, 50, (20, 3))
    label, pred = inter + RNG.integers(0, 20, (20, 3)), inter + RNG.integers(0, 20, (20, 3))
    label[:, 2], pred[:, 2], inter[:, 2] = 0, 0, 0  # a class absent everywhere: NaN, skipped
    s = make_samples(
        "iou", "miou", {"intersect": inter, "area_label": label, "area_pred": pred}, units="image"
    )
    w, idx = _counts(20)
    i, lab, p = inter[idx].sum(0), label[idx].sum(0), pred[idx].sum(0)
    assert s.statistic(w)[0] == pytest.approx(np.mean(i[:2] / (lab + p - i)[:2]))


@pytest.mark.parametrize("n", [7, 8])
def test_the_median_of_timed_calls_is_numpys_median_of_the_resample(n):
    values = RNG.random(n)
    s = make_samples(
        "quantile", "latency_ms", {"value": values}, units="call", params={"q": 0.5, "scale": 1e3}
    )
    assert s.value() == np.median(values) * 1e3
    for _ in range(5):
        w, idx = _counts(n)
        if len(idx):
            assert s.statistic(w)[0] == pytest.approx(np.median(values[idx]) * 1e3)


def test_hypervolume_moves_every_point_with_the_resample():
    correct, macs = RNG.random((3, 40)) < 0.6, np.array([1e9, 2e9, 4e9])
    s = make_samples(
        "hypervolume",
        "hypervolume",
        {"correct": correct, "macs": macs},
        units="image",
        params={"margin": 1.05},
    )
    w, idx = _counts(40)
    ref = 1.05 * 4e9
    expected = hypervolume_2d(np.c_[macs, correct[:, idx].mean(1)], (ref, 0.0), (True, False)) / ref
    assert s.statistic(w)[0] == pytest.approx(expected)


def _coco_case(n_images: int = 30):
    """Ground truth (crowd regions included) and noisy detections with distinct scores."""
    images = [{"id": i + 1, "width": 100, "height": 100} for i in range(n_images)]
    anns, dets = [], []
    for im in images:
        for _ in range(RNG.integers(0, 4)):
            x, y, w, h = *RNG.uniform(0, 60, 2), *RNG.uniform(10, 40, 2)
            cat = int(RNG.integers(1, 4))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": int(RNG.random() < 0.1)})  # fmt: skip
            jit = RNG.normal(0, 4, 4)
            box = [x + jit[0], y + jit[1], max(1.0, w + jit[2]), max(1.0, h + jit[3])]
            dets.append({"image_id": im["id"], "category_id": cat, "bbox": box, "score": float(RNG.random())})
        x, y = RNG.uniform(0, 60, 2)
        dets.append({"image_id": im["id"], "category_id": int(RNG.integers(1, 4)), "bbox": [x, y, 20.0, 20.0],
                     "score": float(RNG.random())})  # fmt: skip
    gt = {
        "images": images,
        "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)],
        "annotations": anns,
    }
    return gt, dets


def _duplicated(gt, dets, counts):
    """The COCO set in which image i appears counts[i] times (fresh ids): COCOeval on a resample."""
    images, anns, out = [], [], []
    for image, k in zip(gt["images"], counts, strict=True):
        for _ in range(int(k)):
            new = len(images) + 1
            images.append({**image, "id": new})
            for a in (a for a in gt["annotations"] if a["image_id"] == image["id"]):
                anns.append({**a, "id": len(anns) + 1, "image_id": new})
            out += [{**d, "image_id": new} for d in dets if d["image_id"] == image["id"]]
    return {**gt, "images": images, "annotations": anns}, out


def test_coco_ap_of_a_resample_is_cocoeval_on_the_duplicated_images():
    gt, dets = _coco_case()
    captured = {}
    metrics, _ = coco_metrics(gt, dets, ("bbox",), captured)
    s = captured["bbox"]
    assert s.value() == pytest.approx(metrics["box_ap"], abs=1e-12)
    for _ in range(2):
        w, _idx = _counts(len(gt["images"]))
        expected, _ = coco_metrics(*_duplicated(gt, dets, w[0]), ("bbox",))
        assert s.statistic(w)[0] == pytest.approx(expected["box_ap"], abs=1e-12)
    many = RNG.integers(0, 3, (64, len(gt["images"]))).astype(np.float32)  # rows never interact
    assert np.array_equal(
        s.statistic(many), np.concatenate([s.statistic(many[i : i + 1]) for i in range(64)])
    )


# ---------------------------------------------------------------------------------------- the draws


def test_draws_are_seeded_chunked_and_keep_strata_sizes():
    strata = np.repeat([0, 1, 2], [5, 10, 3])
    draws = Draws(18, "abcdef0123456789", strata, resamples=40, seed=3)
    draws.rows_per_chunk = 16  # three chunks
    whole = np.vstack(list(draws))
    assert whole.shape == (40, 18) and whole.dtype == np.float32
    again = Draws(18, "abcdef0123456789", strata, resamples=40, seed=3)
    again.rows_per_chunk = 16
    assert np.array_equal(whole, np.vstack(list(again)))
    for s, size in ((0, 5), (1, 10), (2, 3)):
        assert (whole[:, strata == s].sum(1) == size).all()
    other = Draws(18, "abcdef0123456789", strata, resamples=40, seed=4)
    other.rows_per_chunk = 16
    assert not np.array_equal(whole, np.vstack(list(other)))
    assert (seed_draws(1, 5, 0, "ab" * 8) == 0).all() and seed_draws(3, 5, 0, "ab" * 8).max() <= 2
