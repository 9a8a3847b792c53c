"""The log Q correction's sampling probabilities (`sampling`): expected counts derived, checked
by simulation and by hand, and the alias-table negative sampler. The corrected loss itself, in the
candidate generator, is checked in tests/test_candidate.py."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.sampling import (NegativeSampler, alias_table, background_probabilities, expected_count,
                                   expected_in_batch, uniform_probabilities)


def test_expected_count_by_hand():
    p = tf.constant([0.5, 0.3, 0.2])
    q = tf.constant([0.1, 0.3, 0.6])
    np.testing.assert_allclose(expected_in_batch(p, 4).numpy(), [2.0, 1.2, 0.8], rtol=1e-6)
    np.testing.assert_allclose(expected_count(expected_in_batch(p, 4), q, 10).numpy(), [3.0, 4.2, 6.8], rtol=1e-6)
    np.testing.assert_allclose(expected_count(tf.constant([0.0]), None, 0).numpy(), [1e-12])  # floored


def test_expected_count_matches_simulated_batches():
    """Copies of each item among B positives drawn from p and M negatives drawn from q."""
    rng = np.random.default_rng(0)
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    q = np.array([0.1, 0.1, 0.2, 0.2, 0.2, 0.2])
    B, M, trials = 8, 5, 40_000
    positives = rng.choice(len(p), size=(trials, B), p=p)
    negatives = rng.choice(len(q), size=(trials, M), p=q)
    counts = np.stack([np.bincount(np.r_[a, b], minlength=len(p)) for a, b in zip(positives, negatives)])
    formula = expected_count(expected_in_batch(tf.constant(p), B), tf.constant(q), M).numpy()
    np.testing.assert_allclose(counts.mean(axis=0), formula, rtol=0.02)


def test_background_probabilities_count_labels_and_smooth():
    p = background_probabilities(np.array([0, 2, 1, 0]))  # label counts per index; 0 is unknown
    np.testing.assert_allclose(p, [0, 3 / 6, 2 / 6, 1 / 6])  # add-one smoothed; unknown never a label
    np.testing.assert_allclose(uniform_probabilities(4), [0, 0.25, 0.25, 0.25, 0.25])


def test_alias_table_reproduces_the_distribution_exactly():
    p = np.array([0.0, 0.5, 0.3, 0.15, 0.05, 0.0, 1e-9])
    accept, alias = alias_table(p)
    # P(i) = (accept[i] + sum of (1 - accept[j]) over the columns j that alias to i) / n
    implied = accept.astype(np.float64).copy()
    np.add.at(implied, alias, 1.0 - accept)
    np.testing.assert_allclose(implied / len(p), p / p.sum(), atol=1e-7)
    assert accept[0] == 0 and alias[0] != 0  # a zero-probability entry is never kept
    with pytest.raises(ValueError, match="non-negative"):
        alias_table(np.array([0.5, -0.1]))


def test_negative_sampler_draws_from_q_and_never_index_zero():
    rng = np.random.default_rng(1)
    q = rng.pareto(1.0, 2001) + 0.01
    q[0] = 0.0
    q /= q.sum()
    tf.random.set_seed(0)
    draws = NegativeSampler(q).sample(400_000).numpy()
    frequency = np.bincount(draws, minlength=len(q)) / len(draws)
    assert frequency[0] == 0
    top = np.argsort(q)[-20:]
    np.testing.assert_allclose(frequency[top], q[top], rtol=0.1)
    # The chi-square statistic over the 200 most likely entries is what chance gives (df 199).
    head = np.argsort(q)[-200:]
    expected = q[head] * len(draws)
    assert ((np.bincount(draws, minlength=len(q))[head] - expected) ** 2 / expected).sum() < 300
