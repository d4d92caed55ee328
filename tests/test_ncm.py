"""The nearest-class-mean suite (tasks/ncm/): checked against scikit-learn's NearestCentroid."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestCentroid
from task_runs import run_task

from bob.errors import UsageError
from bob.task import parse_task_args
from bob.tasks.ncm import NcmArgs
from bob.tasks.ncm.run import nearest_class_mean


def _blobs(seed: int = 0, n: int = 40, classes: int = 5, dim: int = 16):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(classes, dim))
    y = np.repeat(np.arange(classes), n)
    return (centers[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


def test_raw_features_predict_like_scikit_learn():
    x, y = _blobs()
    test_x, _ = _blobs(seed=1)
    scores = nearest_class_mean(x, y, test_x, 5, "none", chunk=7)  # chunks smaller than the test set
    expected = NearestCentroid().fit(x, y).predict(test_x)
    assert np.array_equal(scores.argmax(1), expected)
    centroid = x[y == 2].mean(0)
    assert scores[0, 2] == pytest.approx(-np.linalg.norm(test_x[0] - centroid), rel=1e-6)


def test_cl2n_ignores_a_shift_and_a_scale_of_every_feature():
    x, y = _blobs()
    test_x, _ = _blobs(seed=1)
    base = nearest_class_mean(x, y, test_x, 5, "cl2n")
    shift, scale = np.random.default_rng(2).normal(size=16).astype(np.float32), 7.5
    moved = nearest_class_mean(x * scale + shift, y, test_x * scale + shift, 5, "cl2n")
    assert np.array_equal(base.argmax(1), moved.argmax(1))
    assert np.allclose(base, moved, atol=1e-6)  # the same distances after centring and normalising


def test_a_class_missing_from_train_is_never_predicted():
    x, y = _blobs()
    keep = y != 3
    scores = nearest_class_mean(x[keep], y[keep], x, 5, "l2")
    assert np.isneginf(scores[:, 3]).all() and (scores.argmax(1) != 3).all()


def test_a_run_reads_the_features_the_knn_run_extracted(options):
    first = run_task(options, "knn/shapes-mini")
    ncm = run_task(options, "ncm/shapes-mini")
    assert first.result.ok and ncm.result.ok, ncm.result.error
    assert ncm.result.cache["extractions"] == 0 and ncm.result.cache["hits"] == 2
    assert ncm.result.cache["keys"] == first.result.cache["keys"]
    assert 0.0 <= ncm.result.metrics["top1"] <= 1.0 and ncm.result.protocol["normalize"] == "cl2n"


def test_an_unknown_normalisation_is_a_usage_error():
    with pytest.raises(UsageError, match="normalize must be one of cl2n, l2, none, got 'zscore'"):
        parse_task_args(NcmArgs, {"normalize": "zscore"}, "ncm/digits")
