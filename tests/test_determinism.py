"""Same config and seed, same numbers."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.pipeline import ExampleConfig, build_examples
from tfrs_youtube.training import TrainConfig, build_models, fit_candidate_generator

# No per-user sampling of labels, so that one set of examples serves every seed.
EXAMPLES = ExampleConfig(max_examples_per_user=None)


def _train_once(examples, seed):
    config = TrainConfig(examples=EXAMPLES, candidate_epochs=1, batch_size=256, seed=seed)
    config.candidate.num_sampled_negatives = 64
    models = build_models(examples, config)
    models.candidate.topk = None
    figures = fit_candidate_generator(models, examples, config, verbose=0)
    return figures["history"]["loss"], [w.numpy() for w in models.candidate.trainable_weights]


@pytest.mark.slow
def test_same_seed_same_model(tiny_log, tmp_path):
    tf.config.experimental.enable_op_determinism()
    tiny_examples = build_examples(tiny_log, str(tmp_path / "examples"), EXAMPLES, say=None)
    loss_a, weights_a = _train_once(tiny_examples, seed=0)
    loss_b, weights_b = _train_once(tiny_examples, seed=0)
    assert loss_a == loss_b
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
    loss_c, _ = _train_once(tiny_examples, seed=8)
    assert loss_c != loss_a
