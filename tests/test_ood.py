"""The `ood/<shift>` suite: ECE against torchmetrics, logit masking, set selection, cache reuse, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from bob.errors import UnknownNameError, UsageError
from bob.runner import execute
from bob.spec import make_spec
from bob.suites import parse_task_name
from bob.tasks.common.calibration import expected_calibration_error, softmax
from bob.tasks.ood import OodArgs
from bob.tasks.ood.data import get_shift
from bob.tasks.ood.metrics import score, summarise
from bob.tasks.ood.sets import select_sets

TINY = "timm/mobilenetv3_small_050"
FAST_ARGS = {"image_size": "32", "epochs": "2", "min_steps": "20"}


def _torchmetrics_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    metric = MulticlassCalibrationError(num_classes=probs.shape[1], n_bins=n_bins, norm="l1")
    return float(metric(torch.as_tensor(probs, dtype=torch.float32), torch.as_tensor(labels)))


# ------------------------------------------------------------------------------------------- ECE


def test_ece_hand_built_case():
    # confidences 0.9 (right), 0.9 (wrong), 0.55 (right), 1.0 (right), 0.1-ish never max
    probs = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.9, 0.05, 0.05],
            [0.25, 0.55, 0.20],
            [1.0, 0.0, 0.0],
        ]
    )
    labels = np.array([0, 1, 1, 0])
    # bins: 0.9 → [13/15, 14/15): acc 0.5, conf 0.9 → 0.4·2/4; 0.55 → [8/15, 9/15): |1 − 0.55|·1/4;
    # 1.0 → its own bin, acc 1, conf 1 → 0.
    expected = 0.4 * 2 / 4 + 0.45 / 4
    assert expected_calibration_error(probs, labels) == pytest.approx(expected, abs=1e-12)
    assert _torchmetrics_ece(probs, labels) == pytest.approx(expected, abs=1e-6)


def test_ece_perfectly_calibrated_and_overconfident():
    labels = np.array([0, 0, 0, 1])  # 75% right at confidence 0.75
    probs = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    wrong = np.tile([1.0, 0.0], (4, 1))  # always certain, right 3 times out of 4
    assert expected_calibration_error(wrong, labels) == pytest.approx(0.25)
    assert _torchmetrics_ece(wrong, labels) == pytest.approx(0.25, abs=1e-6)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("n_bins", [15, 10, 4])
def test_ece_equals_torchmetrics_on_random_cases(seed, n_bins):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 400)), int(rng.integers(2, 12))
    logits = rng.normal(scale=rng.uniform(0.1, 8.0), size=(n, c))
    labels = rng.integers(0, c, size=n)
    probs = softmax(logits)
    if seed % 2:  # some rows certain: confidence exactly 1.0 has a bin of its own in torchmetrics
        certain = rng.random(n) < 0.2
        probs[certain] = np.eye(c)[probs[certain].argmax(1)]
    ours = expected_calibration_error(probs, labels, n_bins)
    assert ours == pytest.approx(_torchmetrics_ece(probs, labels, n_bins), abs=2e-6)


def test_ece_rejects_bad_input():
    with pytest.raises(ValueError, match="expected probs"):
        expected_calibration_error(np.zeros((3, 2)), np.zeros(2, dtype=int))


# ----------------------------------------------------------------------------------------- scoring


def test_score_masks_logits_to_the_class_subset():
    logits = np.array([[5.0, 1.0, 2.0, 0.0], [0.0, 9.0, 1.0, 3.0]])
    labels = np.array([2, 3])  # in the 4-class space; neither is the unmasked argmax
    unmasked = score(logits, labels, None, 15)
    masked = score(logits, labels, np.array([2, 3]), 15)
    assert unmasked["top1"] == 0.0 and masked["top1"] == 1.0
    probs = softmax(logits[:, [2, 3]])
    assert masked["ece"] == pytest.approx(expected_calibration_error(probs, np.array([0, 1])))


def test_summary_metrics_are_consistent():
    sets = {
        "fog-1": {"top1": 0.8, "ece": 0.1},
        "fog-3": {"top1": 0.6, "ece": 0.3},
        "snow-1": {"top1": 0.4, "ece": 0.2},
    }
    m = summarise({"top1": 0.9, "ece": 0.05}, sets)
    assert m["top1/fog"] == pytest.approx(0.7) and m["ece/fog"] == pytest.approx(0.2)
    assert m["top1_ood"] == pytest.approx(0.6) and m["ece_ood"] == pytest.approx(0.2)
    assert m["drop"] == pytest.approx(0.3) and "top1/fog-3" not in m and m["top1/snow"] == 0.4
    plain = summarise({"top1": 0.9, "ece": 0.05}, {"imagenet-a": {"top1": 0.3, "ece": 0.4}})
    assert plain["top1/imagenet-a"] == 0.3 and plain["ece/imagenet-a"] == 0.4


# ------------------------------------------------------------------------------------------ sets


def test_set_selection_and_argument_errors():
    digits = get_shift("digits-c")
    default = select_sets(digits, OodArgs())
    assert len(default) == 20 and "fog-5" in default and "glass_blur-1" not in default
    assert len(select_sets(digits, OodArgs(corruptions=("all",)))) == 75
    assert select_sets(digits, OodArgs(corruptions=("snow",), severities=(5, 2))) == ["snow-2", "snow-5"]
    with pytest.raises(UnknownNameError) as err:
        select_sets(digits, OodArgs(corruptions=("gausian_noise",)))
    assert "gaussian_noise" in err.value.suggestions
    shapes = get_shift("shapes-domains")
    assert select_sets(shapes, OodArgs()) == [
        "shapes-texture",
        "shapes-cartoon",
        "shapes-sketch",
        "shapes-noise",
    ]
    with pytest.raises(UsageError, match="only apply to corruption shifts"):
        select_sets(shapes, OodArgs(corruptions=("fog",)))
    with pytest.raises(UsageError, match="severities"):
        OodArgs(severities=(0, 6)).validate()
    with pytest.raises(UnknownNameError, match="Did you mean: linear"):
        OodArgs(mode="linaer").validate()


def test_unknown_shift_suggests_close_names():
    with pytest.raises(UnknownNameError) as err:
        parse_task_name("ood/shapes-domain")
    assert "ood/shapes-domains" in err.value.suggestions
    with pytest.raises(UnknownNameError):
        parse_task_name("linear-probe/shapes-domains")  # a shift is not a classification dataset
    with pytest.raises(UsageError, match="not a shift"):
        get_shift("digits")


def test_listing_ood_tasks_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from bob.suites import task_names\n"
        "names = task_names('ood/*')\n"
        "assert 'ood/shapes-domains' in names and 'ood/imagenet-c' in names, names\n"
        "import bob.tasks.ood, bob.tasks.ood.data, bob.data.real_shifts, bob.data.corruptions\n"
        "heavy = [m for m in ('torch', 'torchvision', 'timm', 'imagecorruptions') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------- runs


def test_ood_reuses_the_linear_probe_feature_cache(options):
    probe = execute(make_spec(TINY, "linear-probe/shapes-mini", "random", task_args=FAST_ARGS), options)
    assert probe.result.ok, probe.result.error
    assert probe.stats["extractions"] == 2
    first = execute(make_spec(TINY, "ood/shapes-mini-domains", "random", task_args=FAST_ARGS), options)
    assert first.result.ok, first.result.error
    assert first.stats == {"extractions": 2, "cache_hits": 2}, "train/test from the probe's cache; 2 new sets"
    again = execute(
        make_spec(TINY, "ood/shapes-mini-domains", "random", task_args={**FAST_ARGS, "weight_decay": "0.01"}),
        options,
    )
    assert again.result.ok, again.result.error
    assert again.stats == {"extractions": 0, "cache_hits": 4}, "a second OOD run extracts nothing"
    m = first.result.metrics
    assert first.result.main_metric[0] == "top1_ood"
    assert m["top1_id"] == pytest.approx(probe.result.metrics["top1"]), (
        "same features, same protocol, same head"
    )
    assert set(m) >= {"top1/shapes-mini-sketch", "ece/shapes-mini-texture", "drop", "ece_id", "ece_ood"}
    assert all(0.0 <= v <= 1.0 for k, v in m.items() if k != "drop")
    p = first.result.protocol
    assert p["sets"] == ["shapes-mini-sketch", "shapes-mini-texture"] and p["mode"] == "linear"
    assert p["ece"]["n_bins"] == 15 and p["selected_weight_decay"] > 0
    head = torch.load(first.result.artifacts["head"], weights_only=True)
    assert head["weight"].shape[1] == 10


def test_corruption_shift_runs_and_records_its_recipe(options):
    args = {**FAST_ARGS, "corruptions": "gaussian_noise,contrast", "severities": "1,5"}
    out = execute(make_spec(TINY, "ood/digits-c", "random", task_args=args), options)
    assert out.result.ok, out.result.error
    assert out.stats["extractions"] == 2 + 4
    m, p = out.result.metrics, out.result.protocol
    sets = torch.load(out.result.artifacts["sets"], weights_only=True)
    assert m["top1/contrast"] == pytest.approx((sets["contrast-1"]["top1"] + sets["contrast-5"]["top1"]) / 2)
    assert m["ece/gaussian_noise"] == pytest.approx(
        np.mean([sets[f"gaussian_noise-{s}"]["ece"] for s in (1, 5)])
    )
    assert sets["id"]["top1"] == m["top1_id"] and len(m) == 5 + 2 * 2
    assert p["sets"] == ["gaussian_noise-1", "gaussian_noise-5", "contrast-1", "contrast-5"]
    assert p["severities"] == [1, 5] and p["corruption_seed"] == 0
    assert p["corruption_render"] == "bicubic resize (shorter side) to 32", "the backbone's own resize"
    assert p["corruption_library"].startswith("imagecorruptions")


def test_finetune_mode_trains_end_to_end_and_extracts_nothing(options):
    args = {"mode": "finetune", "ft_epochs": "1", "ft_batch_size": "16"}
    out = execute(make_spec(TINY, "ood/shapes-mini-domains", "random", task_args=args), options)
    assert out.result.ok, out.result.error
    m, p = out.result.metrics, out.result.protocol
    assert p["classifier"].startswith("end-to-end fine-tuning") and p["epochs"] == 1
    assert p["optimizer"].startswith("AdamW") and p["layer_decay_grouping"]
    assert set(p["sets"]) == {"shapes-mini-sketch", "shapes-mini-texture"}
    assert all(np.isfinite(v) for v in m.values())
    assert m["drop"] == pytest.approx(m["top1_id"] - m["top1_ood"])
    assert out.stats["extractions"] == 0, "fine-tuning scores the trained model, never the frozen cache"


def test_finetune_overrides_are_checked_and_refused_in_linear_mode():
    with pytest.raises(UsageError, match="epochs"):
        OodArgs(mode="finetune", ft_epochs=0).validate()
    with pytest.raises(UsageError, match="mode=finetune"):
        OodArgs(ft_lr=1e-2).validate()


def test_missing_real_data_fails_before_training(options, tmp_path):
    spec = make_spec(TINY, "ood/imagenet-sketch", "random", task_args={"root": str(tmp_path / "nothing")})
    out = execute(spec, options)
    assert not out.result.ok and out.result.error["type"] == "DatasetNotFoundError"
    assert "imagenet" in out.result.error["message"] and out.stats["extractions"] == 0


@pytest.mark.slow
def test_imagenet_mobilenet_beats_random_init_out_of_distribution(options, weights_dir):
    """ImageNet MobileNetV2 vs the same architecture at random init on `shapes-domains` (~2 min)."""
    runs = {}
    for weights in ("pretrained", "random"):
        out = execute(make_spec("torchvision/mobilenet_v2", "ood/shapes-domains", weights), options)
        assert out.result.ok, out.result.error
        runs[weights] = out.result.metrics
    pre, rnd = runs["pretrained"], runs["random"]
    assert pre["top1_id"] >= 0.85 and pre["top1_ood"] >= 0.25, pre
    assert pre["top1_ood"] - rnd["top1_ood"] >= 0.15, (pre["top1_ood"], rnd["top1_ood"])
    assert pre["ece_ood"] < rnd["ece_ood"], "random features are confidently wrong off distribution"
    assert all(pre[f"top1/shapes-{d}"] > 0.15 for d in ("texture", "cartoon", "sketch", "noise")), pre


@pytest.mark.slow
def test_imagenet_a_run_on_a_fake_tree_masks_to_its_200_classes(options, tmp_path):
    """The whole real path on 1000 fake classes: ImageNet in distribution, ImageNet-A masked."""
    from PIL import Image

    from bob.data.real_shifts import imagenet_wnids, valid_class_indices

    wnids = imagenet_wnids()
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 1)):
        for wnid in wnids:
            (tmp_path / "imagenet" / split / wnid).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "imagenet" / split / wnid / f"{i}.png")
    a_classes = valid_class_indices("imagenet-a")[:5]
    for k in a_classes:
        (tmp_path / "imagenet-a" / wnids[k]).mkdir(parents=True)
        Image.new("RGB", (8, 8), (int(k) % 256, 0, 0)).save(tmp_path / "imagenet-a" / wnids[k] / "x.jpg")
    args = {**FAST_ARGS, "root": str(tmp_path), "weight_decay": "0.001"}
    out = execute(make_spec(TINY, "ood/imagenet-a", "random", task_args=args), options)
    assert out.result.ok, out.result.error
    assert out.result.protocol["class_subsets"] == {"imagenet-a": "200 classes (logits masked)"}
    assert out.result.protocol["num_per_set"] == {"imagenet-a": 5}
    assert out.stats["extractions"] == 3
