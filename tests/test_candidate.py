"""Candidate generation (`candidate`): the log Q corrected softmax checked by hand, the sampled
negatives it trains with, a train step without corpus-sized constants, streaming frequency
estimation inside the step, and Keras fit with factorized top-K on validation."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from tfrs_youtube.candidate import CandidateConfig, CandidateGenerator, candidate_features
from tfrs_youtube.inputs import arrays, dataset
from tfrs_youtube.sampling import background_probabilities
from tfrs_youtube.training import build_models


def as_tensors(features: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {name: tf.constant(values) for name, values in features.items()}


@pytest.fixture(scope="module")
def small_model(tiny_examples):
    models = build_models(tiny_examples, tiny_config())
    embeddings = models.embeddings
    train = arrays(tiny_examples, "retrieval", "train", candidate_features(embeddings))
    return train, embeddings, embeddings.video_label_probability


def test_model_loss_equals_the_hand_computed_corrected_softmax(small_model):
    train, embeddings, p = small_model
    config = CandidateConfig(num_sampled_negatives=0, temperature=0.5)
    model = CandidateGenerator(config, embeddings, p, topk_metrics=False)
    rows = [i for i in range(len(train["video_id"])) if train["video_id"][i] != train["video_id"][0]][:2]
    batch = as_tensors({k: v[[0] + rows[:1]] for k, v in train.items()})
    loss = float(model.compute_loss(batch, training=False))

    u = model.user_tower(batch).numpy()
    index = batch["video_id"].numpy()
    v = model.video_vectors(batch["video_id"]).numpy()
    B = 2
    Q = B * p[index]  # expected copies among the two positives
    logits = u @ v.T / 0.5 - np.log(Q)[None, :]
    expected = -sum(logits[i, i] - np.log(np.exp(logits[i]).sum()) for i in range(B))
    assert loss == pytest.approx(expected, rel=1e-5)
    # Without the correction the loss differs: the correction is really applied.
    plain = CandidateGenerator(CandidateConfig(num_sampled_negatives=0, temperature=0.5, log_q_correction=False),
                               embeddings, p, topk_metrics=False)
    assert float(plain.compute_loss(batch)) != pytest.approx(loss, rel=1e-3)


def test_sampled_negatives_follow_the_background_distribution(small_model):
    _, embeddings, p = small_model
    model = CandidateGenerator(CandidateConfig(), embeddings, p, topk_metrics=False)
    tf.random.set_seed(0)
    draws = model.negatives.sample(200_000).numpy()
    frequency = np.bincount(draws, minlength=len(p)) / len(draws)
    top = np.argsort(p)[-20:]
    np.testing.assert_allclose(frequency[top], p[top], rtol=0.15)
    assert frequency[0] == 0  # out of vocabulary is never a negative


def test_the_train_step_holds_no_corpus_sized_constant(small_model):
    """Label and sampling probabilities are variables the step gathers from, not constants in
    its graph (a million-video constant would be copied into every traced step)."""
    train, embeddings, p = small_model
    model = CandidateGenerator(CandidateConfig(num_sampled_negatives=32), embeddings, p, topk_metrics=False)
    model.compile(optimizer="sgd")
    batch = as_tensors({k: v[:16] for k, v in train.items()})
    graph = tf.function(model.train_step).get_concrete_function(batch).graph
    sizes = [tf.make_ndarray(op.get_attr("value")).size for op in graph.get_operations() if op.type == "Const"]
    assert max(sizes) < embeddings.video.vocabulary_size, max(sizes)


def test_streaming_estimation_updates_inside_the_train_step(small_model):
    train, embeddings, p = small_model
    config = CandidateConfig(frequency_estimation="streaming", negative_distribution="uniform",
                             num_sampled_negatives=16, streaming_buckets=1024)
    model = CandidateGenerator(config, embeddings, None, topk_metrics=False)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    data = tf.data.Dataset.from_tensor_slices({k: v[:512] for k, v in train.items()}).batch(64)
    history = model.fit(data, epochs=2, verbose=0)
    assert int(model.frequency.step.numpy()) == 16  # 8 batches x 2 epochs
    assert np.isfinite(history.history["loss"]).all()
    # The most frequent label of those batches is estimated as more frequent than a rare one.
    labels, counts = np.unique(train["video_id"][:512], return_counts=True)
    est = model.frequency.probability(tf.constant(labels[[counts.argmax(), counts.argmin()]]))
    assert est.numpy()[0] > est.numpy()[1]


def test_correction_survives_tfrs_clipping_for_frequent_videos(small_model):
    """TFRS clips sampling probabilities into [1e-6, 1]; B p above 1 must still be corrected."""
    train, embeddings, _ = small_model
    _, first = np.unique(train["video_id"], return_index=True)
    rows = first[:4]  # four different videos
    batch = as_tensors({k: v[rows] for k, v in train.items()})
    index = batch["video_id"].numpy()
    p = np.full(embeddings.video.vocabulary_size + 1, 1e-4, np.float32)
    p[index] = [0.5, 0.3, 0.1, 0.02]  # B p = 2.0, 1.2, 0.4, 0.08
    model = CandidateGenerator(CandidateConfig(num_sampled_negatives=0, temperature=0.5), embeddings, p,
                               topk_metrics=False)
    loss = float(model.compute_loss(batch))
    u, v = model.user_tower(batch).numpy(), model.video_vectors(batch["video_id"]).numpy()
    logits = u @ v.T / 0.5 - np.log(4 * p[index])[None, :]
    expected = -sum(logits[i, i] - np.log(np.exp(logits[i]).sum()) for i in range(4))
    assert loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_keras_fit_reports_factorized_top_k_during_validation(tiny_examples):
    """The README's use: CandidateGenerator(config, embeddings); compile; fit with validation data."""
    models = build_models(tiny_examples, tiny_config())
    embeddings = models.embeddings
    np.testing.assert_allclose(embeddings.video_label_probability,
                               background_probabilities(tiny_examples.label_counts()))
    model = CandidateGenerator(CandidateConfig(), embeddings)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    features = candidate_features(embeddings)
    history = model.fit(dataset(tiny_examples, "retrieval", "train", 256, shuffle=True, features=features),
                        validation_data=dataset(tiny_examples, "retrieval", "validation", 512, features=features),
                        epochs=2, verbose=0).history
    for k in (10, 50, 100):
        values = history[f"val_factorized_top_k/top_{k}_categorical_accuracy"]
        assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    assert history["val_factorized_top_k/top_100_categorical_accuracy"][-1] > 100 / 300  # above chance
    assert "factorized_top_k/top_10_categorical_accuracy" not in history  # not computed in training
