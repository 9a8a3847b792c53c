"""The ranker: its loss's optimum, the per-page metric in Keras, calibration, shared tables, save/load."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.candidate import CandidateConfig, CandidateGenerator
from tfrs_youtube.data.examples import ExampleBuilder, ExampleConfig
from tfrs_youtube.evaluation import calibration_deciles, max_calibration_error, weighted_per_user_loss
from tfrs_youtube.features.embeddings import FeatureEmbeddings
from tfrs_youtube.pipeline import as_tensors, page_batches, predict, to_dataset, to_page_dataset
from tfrs_youtube.calibration import WatchTimeCalibration
from tfrs_youtube.metrics import WeightedPerUserLoss
from tfrs_youtube.ranking import (HIDDEN_LAYER_PRESETS, Ranker, RankerConfig,
                                  preset_name, save_ranker)
from tfrs_youtube.training import split_calibration, train_ranker


@pytest.fixture(scope="module")
def impressions(tiny_log):
    builder = ExampleBuilder(tiny_log, ExampleConfig(split="time"))
    train_rows, test_rows = builder.impression_split()
    train_rows, calibration_rows = split_calibration(builder, train_rows, 0.2)
    parts = [builder.ranking_examples(rows) for rows in (train_rows, calibration_rows, test_rows)]
    return builder, *parts


def _embeddings(log, train):
    return FeatureEmbeddings.from_examples(log, **{k: train[k] for k in ("time_since_topic_watch_s",
                                                                         "previous_impressions", "video_age_s")})


def test_presets_are_table_1():
    assert [preset_name(v) for v in HIDDEN_LAYER_PRESETS.values()] == list(HIDDEN_LAYER_PRESETS)
    assert RankerConfig(hidden_layers="1024-512-256").hidden_layers == (1024, 512, 256)
    with pytest.raises(ValueError, match="unknown preset '2048'"):
        RankerConfig(hidden_layers="2048")
    with pytest.raises(ValueError, match="negatives"):
        RankerConfig(negatives="some")


@pytest.mark.parametrize("negatives", ["every_impression", "unclicked"])
def test_odds_converge_to_the_watch_time_the_loss_promises(tiny_log, impressions, negatives):
    """Identical impressions, 3 of 10 clicked with 20, 40 and 90 s: exp(logit) must converge to
    their mean watch time 15 s (every impression a negative), or to 150 / 7 s (the paper's loss,
    E[T] / (1 - P))."""
    _, train, _, _ = impressions
    one = {k: np.repeat(v[:1], 10, axis=0) for k, v in train.items()}
    one["clicked"] = np.array([1, 1, 1] + [0] * 7, np.float32)
    one["watch_time_s"] = np.array([20, 40, 90] + [0] * 7, np.float32)
    tf.keras.utils.set_random_seed(0)
    # No dropping of history or video: the loss's optimum for these exact inputs is the question.
    config = RankerConfig(hidden_layers=(), negatives=negatives, learning_rate=0.05, unknown_history_rate=0.0,
                          unknown_video_rate=0.0)
    ranker = Ranker(config, _embeddings(tiny_log, train))
    ranker.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    ranker.fit(to_dataset(one, 10), epochs=400, verbose=0)
    expected = 15.0 if negatives == "every_impression" else 150.0 / 7
    predicted = float(ranker.expected_watch_time(as_tensors({k: v[:1] for k, v in one.items()}))[0])
    assert predicted == pytest.approx(expected, rel=0.03)


def test_streaming_metric_equals_the_numpy_metric_by_hand():
    # Page 1: clicked a (10 s, score 0.2), b (30 s, 0.9); unclicked c (0.5), d (0.1).
    #   pairs (a,c) wrong, (a,d) right, (b,c) right, (b,d) right -> 10 mispredicted of 2x10 + 2x30.
    # Page 2: clicked e (5 s, 0.3), unclicked f (0.7) -> 5 mispredicted of 5. Total 15 / 85.
    pages = np.array([1, 1, 1, 1, 2, 2])
    clicked = np.array([1, 1, 0, 0, 1, 0], np.float32)
    watch = np.array([10, 30, 0, 0, 5, 0], np.float32)
    scores = np.array([0.2, 0.9, 0.5, 0.1, 0.3, 0.7], np.float32)
    assert weighted_per_user_loss(pages, clicked, watch, scores) == pytest.approx(15 / 85)
    metric = WeightedPerUserLoss()
    for start, stop in [(0, 4), (4, 6)]:  # page-aligned batches
        metric.update_state(pages[start:stop], clicked[start:stop], watch[start:stop], scores[start:stop])
    assert float(metric.result()) == pytest.approx(15 / 85)
    assert np.isnan(float(WeightedPerUserLoss().result()))  # nothing paired yet: not a misleading 0


def test_page_batches_never_split_a_page():
    pages = np.array([1, 1, 2, 2, 2, 3, 4, 4, 4, 4, 4, 5])
    splits = page_batches(pages, 4)
    assert splits[0] == 0 and splits[-1] == len(pages)
    for start in splits[1:-1]:
        assert pages[start] != pages[start - 1]
    # A page larger than the batch size stays whole, in a batch of its own.
    assert any(b - a == 5 and set(pages[a:b]) == {4} for a, b in zip(splits[:-1], splits[1:]))


def test_fit_reports_the_papers_metric_on_validation(tiny_log, impressions):
    _, train, calibration, test = impressions
    ranker = Ranker(RankerConfig(hidden_layers=(32,)), _embeddings(tiny_log, train))
    ranker.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    history = ranker.fit(to_dataset(train, 256, shuffle=True), validation_data=to_page_dataset(test, 128),
                         epochs=2, verbose=0)
    assert "weighted_per_user_loss" not in history.history  # training batches split pages
    reported = history.history["val_weighted_per_user_loss"][-1]
    logits = predict(ranker, test)
    assert reported == pytest.approx(weighted_per_user_loss(test["page"], test["clicked"], test["watch_time_s"],
                                                            logits), rel=1e-5)
    assert 0.0 < reported < 1.0 and "val_auc" in history.history


def test_calibration_layer_fixes_a_known_miscalibration_without_reordering():
    rng = np.random.default_rng(0)
    log_true = rng.normal(1.0, 1.0, 200_000)
    observed = rng.exponential(np.exp(log_true))  # mean exp(log_true) per impression
    logits = 1.6 * log_true - 0.5  # over-confident and biased
    layer = WatchTimeCalibration(name="calibration")
    np.testing.assert_allclose(layer(tf.constant([-3.0, 0.0, 5.0])).numpy(), [-3.0, 0.0, 5.0], atol=1e-6)
    before = max_calibration_error(calibration_deciles(np.exp(logits), observed))
    layer.fit(logits, observed)
    mapped = layer(tf.constant(logits, tf.float32)).numpy()
    after = max_calibration_error(calibration_deciles(np.exp(mapped), observed))
    assert before > 0.5 and after < 0.05
    order = np.argsort(logits)
    assert (np.diff(mapped[order]) >= -1e-5).all()  # monotone: rankings unchanged
    clone = WatchTimeCalibration.from_config(layer.get_config())
    np.testing.assert_allclose(clone(tf.constant(logits[:100], tf.float32)).numpy(), mapped[:100], rtol=1e-6)
    with pytest.raises(ValueError, match="finite"):
        WatchTimeCalibration().fit(np.array([np.nan] * 30), np.ones(30))


def test_ranker_and_candidate_generator_read_the_same_variables(tiny_log, impressions):
    _, train, calibration, _ = impressions
    embeddings = _embeddings(tiny_log, train)
    candidate = CandidateGenerator(CandidateConfig(), embeddings)
    table = embeddings.video.embedding.embeddings
    ids = tf.constant(train["video_id"][:4].astype(str))
    features = as_tensors({k: v[:4] for k, v in train.items()})
    ranker = Ranker(RankerConfig(hidden_layers=(16,)), embeddings)
    ranker(features)
    candidate(dict(features, example_age_s=tf.zeros([4])))
    # One variable object, reachable from both models: not a copy.
    assert any(v is table for v in candidate.variables) and any(v is table for v in ranker.variables)
    before_vectors, before_scores = candidate.video_vectors(ids).numpy(), ranker(features).numpy()
    table.assign(table + tf.random.stateless_normal(table.shape, seed=[1, 2]))  # (vectors are L2-normalised)
    assert not np.allclose(candidate.video_vectors(ids).numpy(), before_vectors)
    assert not np.allclose(ranker(features).numpy(), before_scores)

    # Frozen (default): fitting the ranker leaves the candidate generator's vectors alone;
    # fine-tuned: they move, because they are the same variables.
    for fine_tune, moves in ((False, False), (True, True)):
        ranker = Ranker(RankerConfig(hidden_layers=(16,), fine_tune_embeddings=fine_tune), embeddings)
        start = table.numpy().copy()
        train_ranker(ranker, train, None, epochs=1, batch_size=256, verbose=0)
        assert (not np.array_equal(table.numpy(), start)) == moves


def test_saved_ranker_scores_identically_in_a_fresh_process(tiny_log, impressions, tmp_path):
    _, train, calibration, test = impressions
    ranker = Ranker(RankerConfig(hidden_layers=(32, 16)), _embeddings(tiny_log, train))
    train_ranker(ranker, train, calibration, epochs=2, batch_size=256, verbose=0)
    assert not np.allclose(ranker.calibration.values.numpy(), ranker.calibration.knots.numpy())  # calibrated
    inputs = {k: test[k][:50] for k in ("video_id", "watch_history", "search_tokens", "language", "video_language",
                                        "country", "gender", "device", "occupation", "time_since_topic_watch_s",
                                        "previous_impressions", "video_age_s", "age") if k in test}
    expected = ranker(as_tensors(inputs)).numpy()
    save_ranker(ranker, str(tmp_path / "ranker"))
    np.savez(tmp_path / "inputs.npz", **{k: np.asarray(v, dtype=str if v.dtype == object else np.float32)
                                         for k, v in inputs.items()})
    code = """
        import json, sys
        import numpy as np
        import tensorflow as tf
        assert "tfrs_youtube" not in sys.modules
        score = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        inputs = dict(np.load(sys.argv[2]))
        out = score(**{k: tf.constant(v) for k, v in inputs.items()})
        print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(tmp_path / "ranker"),
                          str(tmp_path / "inputs.npz")], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["logit"], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["expected_watch_time_s"], np.exp(expected), rtol=1e-5)


def test_scoring_candidates_per_request_equals_scoring_each_impression(tiny_log, impressions):
    """Serving computes the user's part once per request; the logits must be the per-row ones."""
    _, train, _, _ = impressions
    ranker = Ranker(RankerConfig(hidden_layers=(16,)), _embeddings(tiny_log, train))
    users = as_tensors({k: v[:3] for k, v in train.items()})
    n = 4
    rows = {k: np.repeat(v[:3], n, axis=0) for k, v in train.items()}
    rows["video_id"] = np.asarray(train["video_id"][:12], dtype=object)  # 4 different videos per user
    for name in ("video_language", "time_since_topic_watch_s", "previous_impressions", "video_age_s"):
        rows[name] = train[name][:12]
    per_row = ranker(as_tensors(rows)).numpy()
    impressions_only = {k: v for k, v in as_tensors(rows).items()
                        if k in ("video_id", "video_language", "time_since_topic_watch_s", "previous_impressions",
                                 "video_age_s")}
    np.testing.assert_allclose(ranker.score_candidates(users, impressions_only, n).numpy(), per_row, rtol=1e-5,
                               atol=1e-5)


def test_videos_the_ranker_never_trained_on_are_scored_as_unknown(tiny_log, impressions):
    """`train_ranker` marks the videos of its fitted impressions (shown or in their histories) as
    known; any other video is scored exactly as an out-of-vocabulary id, and training drops a
    share of known videos to unknown (so it learns that case) while inference never does."""
    _, train, calibration, _ = impressions
    # (No history dropping here: training-mode logits are compared with the unknown video's.)
    ranker = Ranker(RankerConfig(hidden_layers=(16,), unknown_video_rate=0.5, unknown_history_rate=0.0),
                    _embeddings(tiny_log, train))
    train_ranker(ranker, train, calibration, epochs=1, verbose=0)
    seen = set(np.asarray(train["video_id"]).astype(str)) | set(np.asarray(train["watch_history"]).astype(str).ravel())
    vocabulary = ranker.embeddings.video.vocabulary
    known = ranker.known_videos.numpy()
    assert known[0] == 0.0
    assert [bool(known[i + 1]) for i in range(len(vocabulary))] == [v in seen for v in vocabulary]
    new_videos = [v for v in np.asarray(calibration["video_id"]).astype(str) if v not in seen]
    assert new_videos, "the fixture's calibration slice should show videos the fitted part never had"

    rows = as_tensors({k: v[:1] for k, v in calibration.items()})
    logit_of = lambda video, training=False: float(ranker.raw_logits(  # noqa: E731
        dict(rows, video_id=tf.constant([video])), training=training).numpy()[0])
    assert logit_of(new_videos[0]) == pytest.approx(logit_of("no-such-video"), abs=1e-6)
    known_video = next(v for v in vocabulary if v in seen)
    assert logit_of(known_video) != pytest.approx(logit_of("no-such-video"), abs=1e-6)
    assert len({logit_of(known_video) for _ in range(5)}) == 1  # inference: no dropping
    batch = as_tensors({k: np.repeat(v[:1], 400, axis=0) for k, v in calibration.items()})
    batch["video_id"] = tf.fill([400], known_video)
    dropped = ranker.raw_logits(batch, training=True).numpy()
    unknown = logit_of("no-such-video")
    share = np.mean(np.isclose(dropped, unknown, atol=1e-6))
    assert 0.35 < share < 0.65  # about unknown_video_rate of them

    # In a history, a video the ranker does not know is left out of the mean, like padding: the
    # user's representation is the same with it as without it, and differs when a known one is added.
    history = np.asarray(calibration["watch_history"])[:1].astype(object)
    padding = int(np.flatnonzero(history[0] == "")[0])
    with_new, with_known = history.copy(), history.copy()
    with_new[0, padding], with_known[0, padding] = new_videos[0], known_video
    user = lambda h: ranker.user_representation(dict(rows, watch_history=tf.constant(h.astype(str)))).numpy()  # noqa: E731
    np.testing.assert_allclose(user(with_new), user(history), rtol=0, atol=1e-7)
    assert not np.allclose(user(with_known), user(history), atol=1e-4)


def test_training_drops_a_share_of_each_history_and_inference_never_does(tiny_log, impressions):
    """`unknown_history_rate`: in training each history loses a share of its entries drawn per
    example (uniform up to the rate), left out of the mean exactly like unknown videos; the
    mean is over the kept entries only; inference reads every entry."""
    _, train, _, _ = impressions
    longest = int(np.argmax((np.asarray(train["watch_history"]).astype(str) != "").sum(axis=1)))
    train = {k: np.asarray(v)[longest:] for k, v in train.items()}  # row 0: the longest history
    embeddings = _embeddings(tiny_log, train)
    ranker = Ranker(RankerConfig(hidden_layers=(16,), unknown_history_rate=0.6), embeddings)
    history = tf.constant(np.asarray(train["watch_history"])[:1].astype(str).repeat(2000, axis=0))
    assert ranker.history_kept(history, training=False) is None
    kept = ranker.history_kept(history, training=True).numpy()
    dropped_per_row = 1.0 - kept.mean(axis=1)
    assert dropped_per_row.mean() == pytest.approx(0.3, abs=0.03)  # uniform(0, 0.6): 0.3 on average
    assert dropped_per_row.min() < 0.1 and dropped_per_row.max() > 0.45  # drawn per example

    # The mean over kept entries, by hand.
    ids = np.asarray(train["watch_history"])[:2].astype(str)
    mask = np.random.default_rng(0).random(ids.shape) < 0.5
    table = embeddings.video.embedding.embeddings.numpy()
    index = embeddings.video.indices(tf.constant(ids)).numpy()
    use = mask & (index > 0)
    expected = np.stack([table[index[i][use[i]]].mean(axis=0) if use[i].any() else np.zeros(table.shape[1])
                         for i in range(2)])
    got = embeddings.video.mean(tf.constant(ids), kept=tf.constant(mask)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    rows = as_tensors({k: v[:1] for k, v in train.items()})
    inference = [ranker.user_representation(rows).numpy() for _ in range(3)]
    assert all(np.array_equal(inference[0], x) for x in inference)
    many = as_tensors({k: np.repeat(v[:1], 50, axis=0) for k, v in train.items()})
    assert not np.allclose(ranker.user_representation(many, training=True).numpy(), inference[0], atol=1e-6)
    off = Ranker(RankerConfig(hidden_layers=(16,), unknown_history_rate=0.0), embeddings)
    assert off.history_kept(history, training=True) is None
