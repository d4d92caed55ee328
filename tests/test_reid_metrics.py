"""Re-ID metrics against a loop-by-loop transcription of torchreid's `eval_market1501` and hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from bob.tasks.reid.metrics import (
    QUERY_CHUNK,
    ReidScores,
    cosine_distance,
    euclidean_distance,
    eval_market1501,
    evaluate_reid,
)


def torchreid_eval_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """torchreid/metrics/rank.py `eval_market1501`, transcribed loop by loop (with a stable sort)."""
    num_q = distmat.shape[0]
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, num_valid_q = [], [], 0.0
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        cmc[cmc > 1] = 1
        # torchreid truncates to max_rank; pad short rows with their last value so they stack.
        cmc = np.pad(cmc[:max_rank], (0, max(0, max_rank - len(cmc))), mode="edge")
        all_cmc.append(cmc)
        num_valid_q += 1.0
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum()
        tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(tmp_cmc)]) * raw_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)
    all_cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / num_valid_q
    return all_cmc, float(np.mean(all_ap)), int(num_q - num_valid_q)


def _random_case(rng, n_q, n_g, n_ids, n_cams, ties=False):
    q_pids = rng.integers(1, n_ids + 1, n_q)
    g_pids = rng.integers(0, n_ids + 1, n_g)  # 0 = distractors
    q_cams, g_cams = rng.integers(0, n_cams, n_q), rng.integers(0, n_cams, n_g)
    dist = rng.integers(0, 5, (n_q, n_g)).astype(float) if ties else rng.random((n_q, n_g))
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed", range(12))
def test_matches_the_torchreid_transcription_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    dist, q_pids, g_pids, q_cams, g_cams = _random_case(
        rng,
        int(rng.integers(5, 60)),
        int(rng.integers(3, 80)),
        int(rng.integers(2, 15)),
        3,
        ties=seed % 3 == 0,
    )
    max_rank = 10
    cmc, mean_ap, skipped = torchreid_eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, max_rank)
    metrics, ours_skipped = eval_market1501(
        dist, q_pids, g_pids, q_cams, g_cams, ranks=range(1, max_rank + 1)
    )
    assert ours_skipped == skipped
    assert metrics["map"] == pytest.approx(mean_ap, abs=1e-12)
    for k in range(1, max_rank + 1):
        assert metrics[f"rank{k}"] == pytest.approx(float(cmc[k - 1]), abs=1e-6)


def test_hand_built_case_with_same_camera_removal_and_a_skipped_query():
    # query 0: person 1 on camera 0; query 1: person 4, who is nowhere in the gallery.
    q_pids, q_cams = np.array([1, 4]), np.array([0, 0])
    g_pids = np.array([1, 2, 1, 3, 1])
    g_cams = np.array([0, 1, 1, 0, 2])
    dist = np.array([[0.0, 0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.2, 0.3, 0.4]])
    metrics, skipped = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, ranks=(1, 2, 5))
    # gallery 0 (same person, same camera) is removed; the ranking reads 2, 1, 3, 1 -> hits at ranks 2 and 4.
    assert skipped == 1
    assert metrics["map"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert (metrics["rank1"], metrics["rank2"], metrics["rank5"]) == (0.0, 1.0, 1.0)


def test_same_person_on_another_camera_is_a_match_and_same_camera_is_not():
    q_pids, q_cams = np.array([7]), np.array([2])
    dist = np.array([[0.0, 0.5]])
    same_cam, _ = eval_market1501(dist, q_pids, np.array([7, 7]), q_cams, np.array([2, 0]), ranks=(1,))
    assert same_cam == {"map": 1.0, "rank1": 1.0}  # the nearest (same camera) is gone, the other is first
    other_person, _ = eval_market1501(dist, q_pids, np.array([3, 7]), q_cams, np.array([2, 0]), ranks=(1,))
    assert other_person == {"map": 0.5, "rank1": 0.0}  # a different person on the same camera stays


def test_distractors_are_negatives_and_perfect_ranking_scores_one():
    q_pids, q_cams = np.array([1, 2]), np.array([0, 0])
    g_pids, g_cams = np.array([1, 1, 2, 0, 0]), np.array([1, 2, 1, 1, 2])
    dist = np.array([[0.1, 0.2, 0.9, 0.8, 0.7], [0.9, 0.8, 0.1, 0.2, 0.3]])
    metrics, skipped = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, ranks=(1,))
    assert skipped == 0 and metrics == {"map": 1.0, "rank1": 1.0}
    dist[0, 3] = 0.0  # a distractor moves in front of query 0's two matches
    metrics, _ = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, ranks=(1,))
    assert metrics["map"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1.0) / 2) and metrics["rank1"] == 0.5


def test_ties_go_to_the_lower_gallery_index():
    q_pids, q_cams = np.array([1]), np.array([0])
    dist = np.zeros((1, 2))
    first, _ = eval_market1501(dist, q_pids, np.array([1, 2]), q_cams, np.array([1, 1]), ranks=(1,))
    second, _ = eval_market1501(dist, q_pids, np.array([2, 1]), q_cams, np.array([1, 1]), ranks=(1,))
    assert first["rank1"] == 1.0 and second["rank1"] == 0.0


def test_no_valid_query_is_an_error():
    scores = ReidScores()
    scores.add_block(np.zeros((1, 1)), np.array([1]), np.array([1]), np.array([0]), np.array([0]))
    assert scores.skipped == 1
    with pytest.raises(ValueError, match="no query has a correct match"):
        scores.summary()


def test_chunked_evaluation_equals_one_block_and_distances_follow_torchreid():
    rng = np.random.default_rng(0)
    n_q = QUERY_CHUNK + 37
    q, g = rng.normal(size=(n_q, 8)), rng.normal(size=(90, 8))
    q_pids, g_pids = rng.integers(1, 20, n_q), rng.integers(1, 20, 90)
    q_cams, g_cams = rng.integers(0, 4, n_q), rng.integers(0, 4, 90)
    chunked = evaluate_reid(q, g, q_pids, g_pids, q_cams, g_cams, "cosine").summary()
    whole, _ = eval_market1501(cosine_distance(q, g), q_pids, g_pids, q_cams, g_cams)
    assert chunked == pytest.approx(whole)
    qn, gn = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    assert cosine_distance(q, g) == pytest.approx(1 - qn @ gn.T)
    direct = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    assert euclidean_distance(q, g) == pytest.approx(direct)
