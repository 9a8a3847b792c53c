"""Same config and seed, same numbers."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.candidate import CandidateConfig, CandidateGenerator
from tfrs_youtube.sampling import background_probabilities
from tfrs_youtube.data.examples import ExampleBuilder
from tfrs_youtube.features.embeddings import FeatureEmbeddings
from tfrs_youtube.pipeline import to_dataset


def _train_once(log, train, seed):
    tf.keras.utils.set_random_seed(seed)
    embeddings = FeatureEmbeddings.from_examples(log, example_age_s=train["example_age_s"])
    model = CandidateGenerator(CandidateConfig(num_sampled_negatives=64, seed=seed), embeddings,
                               background_probabilities(embeddings.video.vocabulary, train["video_id"]),
                               topk_metrics=False)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    history = model.fit(to_dataset(train, 256, shuffle=True, seed=seed), epochs=1, verbose=0)
    return history.history["loss"], [w.numpy() for w in model.trainable_weights]


@pytest.mark.slow
def test_same_seed_same_model(tiny_log):
    tf.config.experimental.enable_op_determinism()
    train = ExampleBuilder(tiny_log).retrieval_examples("train")
    loss_a, weights_a = _train_once(tiny_log, train, seed=7)
    loss_b, weights_b = _train_once(tiny_log, train, seed=7)
    assert loss_a == loss_b
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
    loss_c, _ = _train_once(tiny_log, train, seed=8)
    assert loss_c != loss_a
