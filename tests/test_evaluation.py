"""Evaluation arithmetic against hand-computed cases."""

import math

import numpy as np
import pytest

from tfrs_youtube.evaluation import (auc, calibration_by_group, calibration_deciles, evaluate_retrieval,
                                     mean_standard_error, metrics_from_ranks, scann_searcher, target_ranks,
                                     weighted_per_user_loss)


def test_ranks_exclude_history_but_keep_the_target():
    # Items a, b, c, d are columns 0..3; -1 is an item outside the corpus.
    scores = np.array([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    ranks = target_ranks(lambda s, e: scores[s:e], 3, np.array([2, 2, 0]),
                         exclude=[np.array([0]), np.array([2, -1]), np.array([], np.int64)])
    # Query 0: "a" is excluded so "c" is second; query 1: the target stays though in the history;
    # query 2: ties count against the target.
    assert list(ranks) == [1, 2, 3]
    assert math.isinf(target_ranks(lambda s, e: scores[s:e], 1, np.array([-1]))[0])


def test_metrics_from_ranks_by_hand():
    m = metrics_from_ranks(np.array([0, 1, 5, np.inf]), ks=(2,))
    assert m["HR@2"] == pytest.approx(0.5)
    assert m["NDCG@2"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert m["MAP@2"] == pytest.approx((1 + 0.5) / 4)


def test_exact_retrieval_matches_brute_force():
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(20, 4)), rng.normal(size=(30, 4))
    targets = rng.integers(0, 30, 20)
    m = evaluate_retrieval(users, items, targets, ks=(5,))
    scores = users @ items.T
    expected = np.mean([(scores[i] > scores[i, t]).sum() < 5 for i, t in enumerate(targets)])
    assert m["HR@5"] == pytest.approx(expected)


def test_weighted_per_user_loss_by_hand():
    # Page p1: clicked A (watch 10, score 0.2), clicked B (watch 30, score 0.9), unclicked C (0.5).
    # Pairs: (A, C) mispredicted (C > A) -> 10; (B, C) fine. Total over pairs = 10 + 30.
    # Page p2: clicked D (watch 20, score 0.1), unclicked E (0.3), F (0.0): (D,E) wrong -> 20 of 40.
    pages = np.array(["p1", "p1", "p1", "p2", "p2", "p2", "p3"])
    clicked = np.array([1, 1, 0, 1, 0, 0, 1])
    watch = np.array([10, 30, 0, 20, 0, 0, 99.0])
    scores = np.array([0.2, 0.9, 0.5, 0.1, 0.3, 0.0, 5.0])
    assert weighted_per_user_loss(pages, clicked, watch, scores) == pytest.approx((10 + 20) / (40 + 40))


def test_calibration_bins_by_hand():
    # Two bins of three impressions: predictions 1..6 s; watch times 0, 3, 0 and 0, 12, 6 s.
    rows = calibration_deciles(np.arange(1.0, 7.0), np.array([0.0, 3.0, 0.0, 0.0, 12.0, 6.0]), bins=2)
    assert [r["predicted_s"] for r in rows] == [2.0, 5.0]
    assert [r["observed_s"] for r in rows] == [1.0, 6.0]
    assert [(r["impressions"], r["clicks"]) for r in rows] == [(3, 1), (3, 2)]
    # Standard error of the mean: sample standard deviation / sqrt(n).
    assert rows[0]["observed_se_s"] == pytest.approx(np.std([0, 3, 0], ddof=1) / math.sqrt(3))
    assert rows[1]["observed_se_s"] == pytest.approx(6.0 / math.sqrt(3))
    assert "unknown_share" not in rows[0]
    # Unknown videos per bin, in the order of the predictions (not of the input).
    shuffled = np.array([5, 0, 3, 1, 4, 2])
    rows = calibration_deciles(np.arange(1.0, 7.0)[shuffled], np.zeros(6), bins=2,
                               unknown=np.array([True, False, False, True, True, False])[shuffled])
    assert [r["unknown_share"] for r in rows] == [pytest.approx(1 / 3), pytest.approx(2 / 3)]
    with pytest.raises(ValueError, match="unknown has shape"):
        calibration_deciles(np.arange(1.0, 7.0), np.zeros(6), bins=2, unknown=np.ones(5, bool))


def test_clustered_standard_error_by_hand():
    # Values 1, 3 (video a) and 5 (video b): mean 3, deviations summed per video -2 and +2, so the
    # clustered (CR1) error is sqrt(2 / (2 - 1) * (4 + 4)) / 3 = 4 / 3, against the plain 2 / sqrt(3).
    values, videos = np.array([1.0, 3.0, 5.0]), np.array(["a", "a", "b"])
    assert mean_standard_error(values) == pytest.approx(2 / math.sqrt(3))
    assert mean_standard_error(values, videos) == pytest.approx(4 / 3)
    assert math.isnan(mean_standard_error(values, np.array(["a", "a", "a"])))
    assert mean_standard_error(np.array([2.0])) == 0.0
    # A video whose impressions all lean one way widens the error over the independent one.
    lean = np.r_[np.full(50, 10.0), np.zeros(50)]
    assert mean_standard_error(lean, np.r_[np.zeros(50), np.arange(1, 51)]) > 2 * mean_standard_error(lean)
    # calibration_deciles clusters each bin's impressions by the given ids.
    rows = calibration_deciles(np.arange(1.0, 7.0), np.array([1.0, 3.0, 5.0, 0.0, 12.0, 6.0]), bins=2,
                               clusters=np.array(["a", "a", "b", "c", "d", "e"]))
    assert rows[0]["observed_se_s"] == pytest.approx(4 / 3)
    assert rows[1]["observed_se_s"] == pytest.approx(mean_standard_error(np.array([0.0, 12.0, 6.0])))
    with pytest.raises(ValueError, match="clusters has shape"):
        calibration_deciles(np.arange(1.0, 7.0), np.zeros(6), bins=2, clusters=np.zeros(5))


def test_calibration_by_group_by_hand():
    # Groups "b", "a", "b", "a", "b": a holds predictions 2, 4 (watch 0, 5); b holds 1, 3, 5 (watch 3, 0, 9).
    rows = calibration_by_group(np.arange(1.0, 6.0), np.array([3.0, 0.0, 0.0, 5.0, 9.0]),
                                np.array(["b", "a", "b", "a", "b"]))
    assert [r["group"] for r in rows] == ["a", "b"]
    assert [(r["predicted_s"], r["observed_s"]) for r in rows] == [(3.0, 2.5), (3.0, 4.0)]
    assert [(r["impressions"], r["clicks"]) for r in rows] == [(2, 1), (3, 2)]
    assert rows[1]["observed_se_s"] == pytest.approx(np.std([3, 0, 9], ddof=1) / math.sqrt(3))
    # Clustered: group b's watches 3 and 9 come from one video (x), 0 from another (y): deviations
    # -1 + 5 = 4 and -4, so sqrt(2 / 1 * 32) / 3 = 8 / 3.
    clustered = calibration_by_group(np.arange(1.0, 6.0), np.array([3.0, 0.0, 0.0, 5.0, 9.0]),
                                     np.array(["b", "a", "b", "a", "b"]), clusters=np.array(["x", "z", "y", "w", "x"]))
    assert clustered[1]["observed_se_s"] == pytest.approx(8 / 3)
    assert [r["observed_s"] for r in clustered] == [r["observed_s"] for r in rows]
    with pytest.raises(ValueError, match="one shape"):
        calibration_by_group(np.ones(3), np.ones(3), np.array(["a", "b"]))
    with pytest.raises(ValueError, match="one shape"):
        calibration_by_group(np.ones(2), np.ones(2), np.array(["a", "b"]), clusters=np.array(["x"]))


def test_auc_by_hand():
    assert auc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.5]) == pytest.approx(0.75)
    assert auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)


def test_scann_evaluation_ranks_what_scann_returns():
    rng = np.random.default_rng(1)
    # Clustered, as learned embeddings are (uniform noise has no structure for a tree to use).
    centres = rng.normal(size=(40, 16))
    items = (centres[rng.integers(0, 40, 3000)] + 0.5 * rng.normal(size=(3000, 16))).astype(np.float32)
    users = (items[rng.integers(0, 3000, 400)] + 0.5 * rng.normal(size=(400, 16))).astype(np.float32)
    order = np.argsort(-(users @ items.T), axis=1)
    targets = order[np.arange(400), rng.integers(5, 60, 400)]  # never in the history
    history = list(order[:, :5])
    exact = evaluate_retrieval(users, items, targets, history, ks=(10, 50))
    # Half the leaves searched: ScaNN's tree starts from a random clustering, and a thin search of
    # an unlucky tree can miss a tenth of the top 50 (seen once in eight default builds).
    searcher = scann_searcher(items, 55, leaves_to_search=28)
    approx = evaluate_retrieval(users, items, targets, history, ks=(10, 50), index=searcher)
    # By hand: ScaNN's neighbours, the history dropped, the target's position in what is left.
    neighbours, _ = searcher.search_batched(users, final_num_neighbors=55)
    hits = [t in [j for j in row if j not in set(h)][:10] for t, row, h in zip(targets, neighbours, history)]
    assert approx["HR@10"] == pytest.approx(np.mean(hits))
    assert 0.05 < exact["HR@10"] < 0.9
    assert approx["HR@50"] > exact["HR@50"] - 0.05  # ScaNN finds nearly all of the exact top 50
    default = evaluate_retrieval(users, items, targets, history, ks=(10, 50), index="scann")
    assert default["HR@50"] > exact["HR@50"] - 0.2  # a missed item can also lift a target: no upper bound
    with pytest.raises(ValueError, match="index"):
        evaluate_retrieval(users, items, targets, index="faiss")
