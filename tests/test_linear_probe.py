"""The linear-probe protocol and kNN: correctness against scikit-learn, determinism, failure modes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bob.data.base import stratified_partition
from bob.errors import TrainingDivergedError, UsageError
from bob.tasks.common.linear_head import HeadConfig, Standardizer, fit_heads
from bob.tasks.common.probe import run_linear_probe
from bob.tasks.knn.run import knn_predict
from bob.tasks.linear_probe import LinearProbeArgs

FAST = LinearProbeArgs()


def _blobs(n_per_class: int, num_classes: int, dim: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(num_classes, dim))
    y = np.repeat(np.arange(num_classes), n_per_class)
    x = centers[y] + rng.normal(scale=spread, size=(len(y), dim))
    return x.astype(np.float32), y


def _splits(x, y, seed=0):
    rest, test = stratified_partition(y, 0.25, seed)
    train, val = stratified_partition(y[rest], 0.2, seed)
    return (x[rest][train], y[rest][train]), (x[rest][val], y[rest][val]), (x[test], y[test])


def test_separable_data_is_learned():
    x, y = _blobs(60, 10, 32, 0.5, seed=0)
    out = run_linear_probe(*_splits(x, y), 10, FAST, seed=0)
    assert out["metrics"]["top1"] >= 0.99
    assert out["metrics"]["top5"] == 1.0
    assert 7 <= len(out["protocol"]["sweep"]) <= 7 + 8 + 2, "7 coarse values, then at most 8 and 2 new ones"


@pytest.fixture(scope="module")
def digits_features():
    """Real features: ImageNet MobileNetV2 on the digits test and train splits (64 px)."""
    from bob.backbones import resolve_backbone
    from bob.data import load_split
    from bob.features import extract_pooled, split_batches

    ref = resolve_backbone("torchvision/mobilenet_v2", weights="pretrained")
    cfg = ref.data_config.with_overrides(image_size=64, crop_pct=1.0)
    model = ref.build(64)
    device = torch.device("cpu")
    out = {}
    for name in ("train", "test"):
        split = load_split("digits", name)
        out[name] = (
            extract_pooled(model, split_batches(split, cfg, 64, 0, device), len(split), device),
            split.labels,
        )
    return out


def test_matches_sklearn_at_the_selected_regularisation(digits_features):
    from sklearn.linear_model import LogisticRegression

    x, y = digits_features["train"]
    rest, held = stratified_partition(y, 0.2, seed=0)
    out = run_linear_probe(
        (x[rest], y[rest]), (x[held], y[held]), digits_features["test"], 10, LinearProbeArgs(), 0
    )
    lam = out["protocol"]["selected_weight_decay"]
    std = Standardizer.fit(x)  # the final head is fit on train + val = all of x
    sk = LogisticRegression(C=1.0 / (lam * len(x)), max_iter=5000, tol=1e-6).fit(std(x), y)
    xt, yt = digits_features["test"]
    sk_top1 = sk.score(std(xt), yt)
    assert out["metrics"]["top1"] > 0.85
    assert abs(out["metrics"]["top1"] - sk_top1) <= 0.01, (out["metrics"]["top1"], sk_top1, lam)


def test_same_seed_same_result(digits_features):
    x, y = digits_features["train"]
    rest, held = stratified_partition(y, 0.2, seed=0)
    args = (x[rest], y[rest]), (x[held], y[held]), digits_features["test"], 10, FAST, 0
    a, b = run_linear_probe(*args), run_linear_probe(*args)
    assert a["metrics"] == b["metrics"] and a["protocol"] == b["protocol"]
    assert torch.equal(a["head"]["weight"], b["head"]["weight"])


def test_fixed_weight_decay_skips_the_sweep():
    x, y = _blobs(30, 5, 8, 0.5, seed=1)
    out = run_linear_probe(*_splits(x, y), 5, LinearProbeArgs(min_steps=100, weight_decay=1e-3), seed=0)
    assert out["protocol"]["sweep"] == [] and out["protocol"]["selected_weight_decay"] == 1e-3


def test_batched_heads_equal_heads_trained_alone():
    x, y = _blobs(20, 4, 6, 1.0, seed=2)
    xt, yt = torch.tensor(x), torch.tensor(y)
    cfg = HeadConfig(epochs=5, min_steps=20, batch_size=16)
    w_all, b_all = fit_heads(xt, yt, 4, [1e-4, 1e-1], cfg, seed=0)
    w_one, b_one = fit_heads(xt, yt, 4, [1e-1], cfg, seed=0)
    assert torch.allclose(w_all[1], w_one[0], atol=1e-5) and torch.allclose(b_all[1], b_one[0], atol=1e-5)


def test_hand_written_gradient_matches_autograd():
    from bob.tasks.common.linear_head import _softmax_regression_grad

    torch.manual_seed(0)
    k, c, d, b = 3, 4, 5, 6
    x, y = torch.randn(b, d), torch.randint(0, c, (b,))
    weight, bias = torch.randn(d, k * c), torch.randn(k * c)
    lam = torch.tensor([0.0, 0.1, 1.0]).repeat_interleave(c)
    weight.grad, bias.grad = torch.zeros_like(weight), torch.zeros_like(bias)
    _softmax_regression_grad(x, y, weight, bias, lam, k, c)
    w, bb = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    logits = (x @ w + bb).view(b, k, c)
    loss = sum(
        torch.nn.functional.cross_entropy(logits[:, j], y)
        + 0.5 * lam[j * c] * w[:, j * c : (j + 1) * c].square().sum()
        for j in range(k)
    )
    loss.backward()
    assert torch.allclose(weight.grad, w.grad, atol=1e-6) and torch.allclose(bias.grad, bb.grad, atol=1e-6)


def test_diverging_training_is_an_error():
    x = torch.full((8, 3), float("inf"))
    with pytest.raises(TrainingDivergedError, match="diverged"):
        fit_heads(x, torch.zeros(8, dtype=torch.long), 2, [0.1], HeadConfig(epochs=1, min_steps=1), seed=0)


def test_standardizer_keeps_tiny_but_informative_features():
    x = np.array([[1e-9, 5.0], [3e-9, 5.0], [2e-9, 5.0]], dtype=np.float32)
    z = Standardizer.fit(x)(x)
    assert np.allclose(z[:, 0].std(), 1.0, atol=1e-3) and np.allclose(z[:, 1], 0.0)


def test_knn_vote_by_hand():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    query = np.array([[1, 0.05], [0.05, 1]], dtype=np.float32)
    scores = knn_predict(train, labels, query, 2, k=3, temperature=0.1)
    assert scores.argmax(1).tolist() == [0, 1]
    sims = (train / np.linalg.norm(train, axis=1, keepdims=True)) @ (query[0] / np.linalg.norm(query[0]))
    top3 = np.argsort(-sims)[:3]
    expected = np.zeros(2)
    np.add.at(expected, labels[top3], np.exp(sims[top3] / 0.1))
    assert np.allclose(scores[0], expected, rtol=1e-4)
    assert knn_predict(train, labels, query, 2, k=100).shape == (2, 2), "k larger than the bank is clipped"


def test_metrics_match_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

    from bob.tasks.common.metrics import classification_metrics

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 7))
    labels = rng.integers(0, 7, 200)
    got = classification_metrics(scores, labels, 7)
    assert got["top1"] == pytest.approx(top_k_accuracy_score(labels, scores, k=1))
    assert got["top5"] == pytest.approx(top_k_accuracy_score(labels, scores, k=5))
    assert got["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels, scores.argmax(1)))
    assert "top5" not in classification_metrics(scores[:, :3], labels % 3, 3)


@pytest.mark.parametrize("n", [1, 80, 256, 257, 512, 513, 1020, 6400, 50_000])
def test_a_quick_run_caps_the_epochs_min_steps_adds_and_a_full_run_keeps_them(n):
    from bob.tasks.common.linear_head import epochs_for
    from bob.tasks.common.probe import MAX_EPOCHS, head_config

    full = LinearProbeArgs()
    unbounded = epochs_for(n, HeadConfig(full.epochs, full.min_steps, full.lr, full.batch_size))
    assert epochs_for(n, head_config(full, n)) == unbounded, "no limit, no max_epochs: the protocol as it ran"
    quick = LinearProbeArgs(limit=1000)
    capped = epochs_for(n, head_config(quick, n))
    assert capped == max(quick.epochs, min(unbounded, MAX_EPOCHS))
    steps_per_epoch = -(-n // quick.batch_size)
    # the cap binds only where min_steps would need more than MAX_EPOCHS epochs: two batches or fewer
    assert (capped == unbounded) == (steps_per_epoch * MAX_EPOCHS >= quick.min_steps)
    assert epochs_for(n, head_config(LinearProbeArgs(max_epochs=20), n)) == max(
        full.epochs, min(unbounded, 20)
    )
    explicit = LinearProbeArgs(epochs=300, limit=1000)  # an asked-for epoch count is never cut
    assert epochs_for(n, head_config(explicit, n)) >= 300


def test_max_epochs_enters_the_run_id_only_when_set_and_must_be_positive():
    from bob.spec import make_spec

    base = make_spec("timm/test_resnet", "linear-probe/shapes-mini", "random")
    assert "max_epochs" not in base.task_args
    capped = make_spec(
        "timm/test_resnet", "linear-probe/shapes-mini", "random", task_args={"max_epochs": "50"}
    )
    assert capped.task_args["max_epochs"] == 50 and capped.id != base.id
    with pytest.raises(UsageError, match="max_epochs must be a positive integer"):
        make_spec("timm/test_resnet", "linear-probe/shapes-mini", "random", task_args={"max_epochs": "0"})


def test_a_tiny_quick_probe_trains_max_epochs_per_head_and_still_learns():
    from bob.tasks.common.probe import MAX_EPOCHS

    x, y = _blobs(10, 10, 32, 0.5, seed=0)  # 100 samples: one minibatch, as shapes-mini's train
    out = run_linear_probe(*_splits(x, y), 10, dataclasses.replace(FAST, limit=100), seed=0)
    assert out["protocol"]["epochs"] == MAX_EPOCHS
    assert out["metrics"]["top1"] >= 0.9
