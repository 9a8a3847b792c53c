"""The partitioned index (`ivf.PartitionedIndex`) against exact search, in memory: every
partition probed is exact search, batch sizes agree, small corpora pad, recall follows the probes."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.ivf import PartitionedIndex, default_partitions, exact_top_k, spherical_kmeans

N, D, K = 3000, 16, 50


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(60, D))
    vectors = (centres[rng.integers(0, 60, N)] + 0.5 * rng.normal(size=(N, D))).astype(np.float32)
    queries = (centres[rng.integers(0, 60, 60)] + 0.5 * rng.normal(size=(60, D))).astype(np.float32)
    return vectors, np.array([f"v{i}" for i in range(N)]), queries


def _ids(index, queries, k=K):
    return index(tf.constant(queries), k=k)[1].numpy().astype(str)


def test_probing_every_partition_is_exact_search(corpus):
    vectors, ids, queries = corpus
    index = PartitionedIndex(k=K, num_probes=10 ** 6).index(vectors, tf.constant(ids))
    assert index.is_exact() and index.num_probes == index.settings["partitions"] == default_partitions(N)
    exact = ids[exact_top_k(queries, vectors, K)]
    one_by_one = np.concatenate([_ids(index, queries[i:i + 1]) for i in range(len(queries))])
    assert (one_by_one == exact).all()  # the batch-1 path (slices)
    assert (_ids(index, queries) == exact).all()  # the batched path (gathers)
    scores = index(tf.constant(queries[:3]))[0].numpy()
    np.testing.assert_allclose(scores, np.sort(queries[:3] @ vectors.T, axis=1)[:, ::-1][:, :K], rtol=1e-5)


def test_batches_of_zero_one_and_several_agree(corpus):
    vectors, ids, queries = corpus
    index = PartitionedIndex(k=K, num_probes=5).index(vectors, tf.constant(ids))
    together = _ids(index, queries[:9])
    assert (np.concatenate([_ids(index, queries[i:i + 1]) for i in range(9)]) == together).all()
    scores, empty = index(tf.zeros([0, D]))
    assert scores.shape == (0, K) and empty.shape == (0, K)
    assert all(len(set(row)) == K and "" not in row for row in together)


def test_fewer_candidates_than_k_are_padded_with_empty_ids_and_the_lowest_score(corpus):
    vectors, ids, queries = corpus
    small = PartitionedIndex(k=K, num_partitions=4, num_probes=4).index(vectors[:30], tf.constant(ids[:30]))
    for batch in (queries[:1], queries[:3]):
        scores, found = small(tf.constant(batch))
        found = found.numpy().astype(str)
        assert found.shape == (len(batch), K)
        assert (found[:, 30:] == "").all() and (scores.numpy()[:, 30:] == np.finfo(np.float32).min).all()
        assert all(set(row[:30]) == set(ids[:30]) for row in found)
    # Probing one partition of many finds fewer than K: the rest is padding, never a repeat.
    narrow = PartitionedIndex(k=K, num_partitions=500, num_probes=1).index(vectors, tf.constant(ids))
    assert narrow.settings["largest_partition"] < K
    for row in _ids(narrow, queries[:4]):
        real = [v for v in row if v]
        assert len(real) == len(set(real)) < K and row[len(real):].tolist() == [""] * (K - len(real))


def test_recall_grows_with_the_probes_and_the_predicted_curve_is_what_the_search_finds(corpus):
    vectors, ids, queries = corpus
    index = PartitionedIndex(k=K, recall_k=K).index(vectors, tf.constant(ids), queries=queries)
    curve = index.probe_recall(queries)
    assert (np.diff(curve) >= 0).all() and curve[-1] == 1.0 and curve[0] < 0.9
    exact = ids[exact_top_k(queries, vectors, K)]
    for probes in (1, 3, 10):
        probed = PartitionedIndex(k=K, num_probes=probes).index(vectors, tf.constant(ids))
        found = np.mean([len(set(a) & set(e)) / K for a, e in zip(_ids(probed, queries), exact)])
        assert found == pytest.approx(curve[probes - 1], abs=1e-9), probes
    assert (index.probe_recall(queries, per_query=True).mean(axis=0) == pytest.approx(curve))
    # The chosen number of probes is the smallest that reaches the target on the choosing half,
    # less one standard error.
    settings = index.settings
    rows = index.probe_recall(queries[:30], per_query=True)
    bound = rows.mean(axis=0) - rows.std(axis=0, ddof=1) / np.sqrt(30)
    assert bound[settings["probes"] - 1] >= 0.95 and (settings["probes"] == 1 or bound[settings["probes"] - 2] < 0.95)
    assert settings["held_out_queries"] == 30 and settings["recall_at_50_held_out"] == pytest.approx(
        index.probe_recall(queries[30:])[settings["probes"] - 1])


def test_the_partitions_are_seeded_and_balanced(corpus):
    vectors, _, _ = corpus
    first, again = spherical_kmeans(vectors, 40, seed=3), spherical_kmeans(vectors, 40, seed=3)
    assert (first == again).all() and not (first == spherical_kmeans(vectors, 40, seed=4)).all()
    counts = np.bincount(first, minlength=40)
    assert counts.min() > 0 and counts.max() < 4 * N / 40


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="N > 0"):
        PartitionedIndex().index(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="3 identifiers for 4 candidates"):
        PartitionedIndex().index(np.ones((4, 2), np.float32), tf.constant(["a", "b", "c"]))
    with pytest.raises(ValueError, match="recall_target"):
        PartitionedIndex(recall_target=1.5)
    with pytest.raises(ValueError, match="index"):
        PartitionedIndex()(tf.zeros([1, 4]))


def test_a_validated_request_of_any_batch_size_reaches_the_index(corpus):
    """Inside one graph with the request's validation (as served): the batch-1 branch must not
    let Grappler fold the request's batch size to 1 (it did, with a literal [1, k] padding)."""
    from tfrs_youtube.served_request import validate_request

    vectors, ids, queries = corpus
    index = PartitionedIndex(k=K, num_probes=4).index(vectors, tf.constant(ids))
    spec = {"country": tf.TensorSpec([None], tf.string, name="country"),
            "user_vector": tf.TensorSpec([None, D], tf.float32, name="user_vector")}
    serve = tf.function(lambda request: index(validate_request(request, spec)["user_vector"])[1],
                        input_signature=[spec])
    for batch in (0, 1, 3):
        found = serve({"country": tf.constant(["x"] * batch, tf.string), "user_vector": tf.constant(queries[:batch])})
        assert found.shape == (batch, K)
