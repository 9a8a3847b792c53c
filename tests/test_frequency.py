"""The streaming frequency estimator of Yi et al. 2019: convergence, collisions, graphs, saving."""

from __future__ import annotations

import numpy as np
import pytest

import tfrs_youtube  # noqa: F401  (Keras 2 before TensorFlow loads Keras)
import tensorflow as tf

from tfrs_youtube.frequency import StreamingFrequencyEstimator


def run_stream(estimator: StreamingFrequencyEstimator, rates: np.ndarray, steps: int,
               seed: int) -> np.ndarray:
    """Feeds batches holding item i with probability rates[i], independently; returns Q."""
    mask = tf.constant(np.random.default_rng(seed).random((steps, len(rates))) < rates)
    ids = tf.constant([f"video{i}" for i in range(len(rates))])

    @tf.function
    def feed():
        for t in tf.range(steps):
            estimator.update(tf.boolean_mask(ids, mask[t]))

    feed()
    return estimator.probability(ids).numpy()


@pytest.mark.parametrize("num_hashes", [1, 3])
def test_estimates_converge_to_known_rates(num_hashes):
    rates = np.geomspace(0.01, 0.8, 50)
    estimator = StreamingFrequencyEstimator(1 << 16, num_hashes, alpha=0.01, seed=0)
    estimate = run_stream(estimator, rates, steps=4000, seed=0)

    relative = np.abs(estimate / rates - 1.0)
    frequent = rates >= 0.1
    assert relative[frequent].max() < 0.2
    assert relative[frequent].mean() < 0.08
    assert relative.mean() < 0.1  # rare items too, thanks to the warm-up mean
    ranks = np.argsort(np.argsort(estimate))
    assert np.corrcoef(ranks, np.arange(len(rates)))[0, 1] > 0.99
    assert estimator.step.numpy() == 4000


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_more_hashes_shrink_the_overestimate_from_collisions(seed):
    rates = 0.5 / np.arange(1, 301) ** 0.8  # Zipf-like: 0.5 down to 0.005
    rare = rates < np.median(rates)
    errors = {}
    for num_hashes in (1, 3):
        estimator = StreamingFrequencyEstimator(256, num_hashes, alpha=0.02, seed=seed)
        log_ratio = np.log(run_stream(estimator, rates, steps=2000, seed=seed) / rates)
        errors[num_hashes] = np.abs(log_ratio[rare]).mean()
        if num_hashes == 1:  # sharing a bucket with popular items inflates a rare item's rate
            assert log_ratio[rare].mean() > np.log(1.5)
    assert errors[3] < 0.7 * errors[1]


class Counter(tf.keras.Model):
    """A model whose training step only feeds the estimator, as a retrieval model would."""

    def __init__(self, estimator: StreamingFrequencyEstimator):
        super().__init__()
        self.estimator = estimator

    def train_step(self, ids):
        return {"step": self.estimator.update(ids)}


@pytest.mark.parametrize("warmup", [False, True])
def test_update_inside_keras_train_step_matches_hand_computation(warmup):
    estimator = StreamingFrequencyEstimator(1 << 16, alpha=0.5, initial_gap=10.0, warmup=warmup)
    a, b = estimator.buckets(tf.constant(["a", "b"]))[0].numpy()
    assert a != b
    model = Counter(estimator)
    model.compile(optimizer="sgd")
    assert len(model.non_trainable_weights) == (4 if warmup else 3)
    # Step 1 sees b; step 2 sees a twice and b once (the repeated a counts once).
    batches = tf.data.Dataset.from_tensors(tf.constant(["b"])).concatenate(
        tf.data.Dataset.from_tensors(tf.constant(["a", "b", "a"])))
    model.fit(batches, epochs=1, verbose=0)

    if warmup:  # every sighting so far weighs 1/n >= alpha: plain means of the gaps
        gap_a = 2.0  # first seen at step 2: gap 2 - 0
        gap_b = (1.0 + 1.0) / 2  # gaps 1 - 0 and 2 - 1
    else:  # the paper's rule from B = 10
        gap_a = 0.5 * 10.0 + 0.5 * (2 - 0)  # 6
        gap_b = 0.5 * (0.5 * 10.0 + 0.5 * (1 - 0)) + 0.5 * (2 - 1)  # 3.25
    assert estimator.step.numpy() == 2
    np.testing.assert_array_equal(estimator.last_seen.numpy()[0, [a, b]], [2, 2])
    np.testing.assert_array_equal(estimator.gap.numpy()[0, [a, b]], [gap_a, gap_b])
    np.testing.assert_array_equal(estimator(tf.constant(["a", "b", "never"])).numpy(),
                                  np.float32([1 / gap_a, 1 / gap_b, 1 / 10.0]))


def test_integer_ids_empty_batches_and_probabilities_in_range():
    estimator = StreamingFrequencyEstimator(1 << 10, num_hashes=2, initial_gap=4.0)
    estimator.update(tf.constant([], tf.int64))
    estimator.update(tf.constant([7, 7, 8], tf.int64))
    probability = estimator.probability(tf.constant([[7, 8], [9, 10]], tf.int64)).numpy()
    assert probability.shape == (2, 2) and probability.dtype == np.float32
    np.testing.assert_allclose(probability[0], [0.5, 0.5])  # first seen at step 2
    np.testing.assert_allclose(probability[1], [0.25, 0.25])  # never seen: 1 / initial_gap
    assert estimator.step.numpy() == 2


def test_config_and_saved_model_round_trip(tmp_path):
    estimator = StreamingFrequencyEstimator(1 << 10, num_hashes=3, alpha=0.05, initial_gap=50.0,
                                            seed=7, name="frequency")
    config = estimator.get_config()
    assert StreamingFrequencyEstimator.from_config(config).get_config() == config
    ids = tf.constant(["x", "y", "z", "unseen"])
    for batch in (["x", "y"], ["x"], ["x", "z"], ["y", "x"]):
        estimator.update(tf.constant(batch))

    module = tf.Module()
    module.estimator = estimator
    module.probability = tf.function(estimator.probability,
                                     input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path), signatures={"probability": module.probability})
    loaded = tf.saved_model.load(str(tmp_path))
    expected = estimator(ids).numpy()
    np.testing.assert_array_equal(loaded.probability(ids).numpy(), expected)
    served = loaded.signatures["probability"](ids=ids)
    np.testing.assert_array_equal(served["output_0"].numpy(), expected)
    np.testing.assert_array_equal(loaded.estimator.gap.numpy(), estimator.gap.numpy())


def test_same_stream_and_seed_give_identical_arrays():
    rates = np.linspace(0.05, 0.5, 40)

    def arrays(seed: int):
        estimator = StreamingFrequencyEstimator(64, num_hashes=2, alpha=0.05, seed=seed)
        run_stream(estimator, rates, steps=300, seed=0)
        return [w.numpy() for w in (estimator.last_seen, estimator.gap, estimator.sightings)]

    for first, second in zip(arrays(3), arrays(3)):
        np.testing.assert_array_equal(first, second)
    ids = tf.constant([f"video{i}" for i in range(40)])
    assert not np.array_equal(StreamingFrequencyEstimator(64, seed=3).buckets(ids),
                              StreamingFrequencyEstimator(64, seed=4).buckets(ids))
