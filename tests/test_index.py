"""The served ScaNN index: settings derived from the corpus, and its storage in leaf order."""

import numpy as np
import pytest
import tensorflow as tf

import tfrs_youtube  # noqa: F401  (Keras 2 before TFRS)
import tensorflow_recommenders as tfrs
from scann.scann_ops.py import scann_ops

from tfrs_youtube.index import scann_settings, store_in_leaf_order

# ScannState's constructor takes the serialised searcher's tensors in this order.
STATE_TENSORS = ("scann_config", "serialized_partitioner", "datapoint_to_token", "ah_codebook", "hashed_dataset",
                 "int8_dataset", "int8_multipliers", "dp_norms", "dataset")


def test_settings_follow_the_corpus_and_can_be_overridden():
    assert scann_settings(1_000_000, 300) == {"num_leaves": 1000, "leaves_to_search": 20, "reordering_candidates": 1000}
    assert scann_settings(10_000, 300)["leaves_to_search"] == 60  # enough leaves to hold 20 x N points
    assert scann_settings(1_000_000, 500)["reordering_candidates"] == 1500
    assert scann_settings(1_000_000, 300, num_leaves=400, leaves_to_search=9, reorder=700) == {
        "num_leaves": 400, "leaves_to_search": 9, "reordering_candidates": 700}


def test_leaf_order_renumbers_the_points_and_changes_no_answer():
    rng = np.random.default_rng(0)
    n, d, k = 4000, 16, 50
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    ids = np.array([f"v{i:04d}" for i in range(n)])
    layer = tfrs.layers.factorized_top_k.ScaNN(k=k, num_leaves=60, num_leaves_to_search=6,
                                               num_reordering_candidates=200, training_iterations=5)
    layer.index(tf.constant(vectors), tf.constant(ids))
    state = layer._serialized_searcher
    # A searcher of its own over copies of the tensors as they were: the reference answers.
    before = scann_ops.ScannState([tf.identity(getattr(state, name)) for name in STATE_TENSORS])
    leaves_before = before.datapoint_to_token.numpy()
    queries = tf.constant(rng.normal(size=(30, d)).astype(np.float32))
    expected = scann_ops.searcher_from_module(before).search_batched(queries, final_num_neighbors=k)

    order = store_in_leaf_order(layer)

    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    leaves = state.datapoint_to_token.numpy()
    assert np.all(np.diff(leaves) >= 0) and not np.all(np.diff(leaves_before) >= 0)
    np.testing.assert_array_equal(leaves, leaves_before[order])  # each point kept its leaf
    np.testing.assert_array_equal(state.dataset.numpy(), vectors[order])  # ... and its vector
    scores, found = layer(queries, k=k)
    np.testing.assert_array_equal(found.numpy().astype(str), ids[expected.indices.numpy()])
    np.testing.assert_allclose(scores.numpy(), expected.distances.numpy(), rtol=1e-6)


def test_leaf_order_needs_an_index_with_identifiers():
    layer = tfrs.layers.factorized_top_k.ScaNN(k=5, num_leaves=10, num_leaves_to_search=2)
    with pytest.raises(ValueError, match="identifiers"):
        store_in_leaf_order(layer)
    layer.index(tf.constant(np.random.default_rng(1).normal(size=(500, 8)).astype(np.float32)))
    with pytest.raises(ValueError, match="identifiers"):
        store_in_leaf_order(layer)
