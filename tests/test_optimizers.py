"""Sparse table updates: LazyAdam is Adam on the rows a step touches and leaves the others alone."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from tfrs_youtube.optimizers import LazyAdam, embedding_tables, model_optimizer
from tfrs_youtube.training import build_models, candidate_optimizer


def _apply(optimizer, variable, gradients):
    for gradient in gradients:
        optimizer.apply_gradients([(gradient, variable)])


def test_lazy_adam_equals_adam_when_every_row_has_a_gradient():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(5, 3)).astype(np.float32)
    grads = [rng.normal(size=(5, 3)).astype(np.float32) for _ in range(4)]
    dense, lazy = tf.Variable(start), tf.Variable(start)
    _apply(tf.keras.optimizers.legacy.Adam(0.1), dense, [tf.constant(g) for g in grads])
    # The same gradients as IndexedSlices over every row, rows listed out of order.
    order = np.array([3, 0, 4, 1, 2])
    _apply(LazyAdam(0.1), lazy, [tf.IndexedSlices(tf.constant(g[order]), tf.constant(order)) for g in grads])
    np.testing.assert_allclose(lazy.numpy(), dense.numpy(), rtol=1e-5, atol=1e-6)


def test_lazy_adam_leaves_untouched_rows_and_their_moments_alone():
    start = np.arange(12, dtype=np.float32).reshape(4, 3)
    variable = tf.Variable(start)
    optimizer = LazyAdam(0.1)
    _apply(optimizer, variable, [tf.IndexedSlices(tf.ones([1, 3]), tf.constant([1]))])
    _apply(optimizer, variable, [tf.IndexedSlices(tf.ones([1, 3]), tf.constant([2]))])
    after = variable.numpy()
    np.testing.assert_array_equal(after[[0, 3]], start[[0, 3]])
    assert (after[[1, 2]] < start[[1, 2]]).all()
    # Row 1's moments did not decay in the step that only touched row 2.
    m = optimizer.get_slot(variable, "m").numpy()
    np.testing.assert_allclose(m[1], 0.1, rtol=1e-6)  # (1 - beta_1) x 1, once
    np.testing.assert_allclose(m[2], 0.1, rtol=1e-6)
    np.testing.assert_array_equal(m[[0, 3]], 0)


def test_lazy_adam_sums_duplicate_indices():
    once, twice = tf.Variable(tf.zeros([3, 2])), tf.Variable(tf.zeros([3, 2]))
    _apply(LazyAdam(0.1), once, [tf.IndexedSlices(tf.fill([1, 2], 2.0), tf.constant([1]))])
    _apply(LazyAdam(0.1), twice, [tf.IndexedSlices(tf.ones([2, 2]), tf.constant([1, 1]))])
    np.testing.assert_allclose(twice.numpy(), once.numpy(), rtol=1e-6)


def test_model_optimizer_gives_the_tables_sparse_updates(tiny_examples):
    config = tiny_config()
    models = build_models(tiny_examples, config)
    optimizer = candidate_optimizer(models, config)
    dense, sparse = optimizer.optimizers
    assert isinstance(sparse, LazyAdam) and not isinstance(dense, LazyAdam)
    assert models.embeddings.video.embedding.embeddings in embedding_tables(models.embeddings)
    model = models.candidate
    model.topk = None
    model.compile(optimizer=optimizer)
    table = models.embeddings.video.embedding.embeddings
    before = table.numpy()
    batch = {"watch_history": tf.constant([[1, 0], [2, 0]], tf.int64), "search_tokens": tf.zeros([2, 1], tf.int64),
             **{name: tf.zeros([2], tf.int64) for name in models.embeddings.user_fields},
             "age": tf.constant([30.0, 40.0]), "example_age_s": tf.constant([0.0, 0.0]),
             "video_id": tf.constant([3, 4], tf.int64)}
    model.user_tower(batch)  # builds the tower
    tower_before = [w.numpy() for w in model.user_tower.tower.trainable_weights]
    model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    changed = np.flatnonzero(np.abs(table.numpy() - before).sum(axis=1))
    sampled = config.candidate.num_sampled_negatives
    # Only the rows the step read: the histories (1, 2), the positives (3, 4) and the sampled
    # negatives; the rest of the table is untouched.
    assert {1, 2, 3, 4} <= set(changed) and len(changed) <= 4 + sampled < table.shape[0]
    assert all((w.numpy() != b).any() for w, b in zip(model.user_tower.tower.trainable_weights, tower_before))


@pytest.mark.parametrize("name,kind", [("adagrad", tf.keras.optimizers.legacy.Adagrad),
                                       ("adam", tf.keras.optimizers.legacy.Adam)])
def test_other_embedding_optimizers_are_chosen_by_name_and_unknown_ones_refused(tiny_examples, name, kind):
    config = tiny_config()
    config.candidate.embedding_optimizer = name
    models = build_models(tiny_examples, config)
    sparse = candidate_optimizer(models, config).optimizers[1]
    assert isinstance(sparse, kind) and not isinstance(sparse, LazyAdam)
    with pytest.raises(ValueError, match="embedding optimizer must be one of"):
        model_optimizer(models.candidate, models.embeddings, 0.01, "sgd-ish")
