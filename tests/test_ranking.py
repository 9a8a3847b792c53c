"""The ranker: its loss's optimum, the per-page metric on validation, the calibration it fits,
one call for a page of impressions and for served candidates, unknown videos.

The calibration layer alone is tested in tests/test_calibration.py, the Keras metric in
tests/test_metrics.py, and the tables the ranker shares with the candidate generator in
tests/test_embeddings.py (which reuses this file's examples and helpers)."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.evaluation import weighted_per_user_loss
from tfrs_youtube.inputs import dataset
from tfrs_youtube.pipeline import ExampleConfig, build_examples
from tfrs_youtube.ranking import HIDDEN_LAYER_PRESETS, Ranker, RankerConfig, preset_name, ranking_features
from tfrs_youtube.reports import ranked_impressions
from tfrs_youtube.training import TrainConfig, build_models, fit_ranker


@pytest.fixture(scope="module")
def examples(tiny_log, tmp_path_factory):
    config = ExampleConfig(split="time", calibration_fraction=0.2)
    return build_examples(tiny_log, str(tmp_path_factory.mktemp("ranking") / "examples"), config, say=None)


def _config(examples, **ranker):
    config = TrainConfig(examples=examples.config, ranker_epochs=2, batch_size=256)
    config.ranker = RankerConfig(**{"hidden_layers": (16,), **ranker})
    return config


def _pages(examples, split="fit", n=64, models=None):
    """A batch of n pages as the ranker reads them."""
    from tfrs_youtube.features.embeddings import FeatureEmbeddings

    embeddings = models.embeddings if models else FeatureEmbeddings.from_examples(examples)
    return next(iter(dataset(examples, "ranking", split, n, features=ranking_features(embeddings))))


def test_presets_are_table_1():
    assert [preset_name(v) for v in HIDDEN_LAYER_PRESETS.values()] == list(HIDDEN_LAYER_PRESETS)
    assert RankerConfig(hidden_layers="1024-512-256").hidden_layers == (1024, 512, 256)
    with pytest.raises(ValueError, match="unknown preset '2048'"):
        RankerConfig(hidden_layers="2048")
    with pytest.raises(ValueError, match="negatives"):
        RankerConfig(negatives="some")


@pytest.mark.parametrize("unit", [None, 6000.0])
@pytest.mark.parametrize("negatives", ["every_impression", "unclicked"])
def test_odds_converge_to_the_watch_time_the_loss_promises(examples, negatives, unit):
    """A page of ten identical impressions, 3 clicked with 20, 40 and 90 s: exp(logit) must
    converge to their mean watch time 15 s (every impression a negative), or to 150 / 7 s (the
    paper's loss, E[T] / (1 - P)), whatever the unit the loss is taken in (the training pages'
    mean watch time per click, or a film's 6,000 s): the unit scales the problem, not its optimum."""
    # No dropping of history or video: the loss's optimum for these exact inputs is the question.
    config = _config(examples, hidden_layers=(), negatives=negatives, unknown_history_rate=0.0,
                     unknown_video_rate=0.0)
    models = build_models(examples, config)
    assert float(models.ranker.log_watch_time_unit.numpy()) > np.log(10)  # the pages' mean, not 1 s
    if unit is not None:
        models.ranker.set_watch_time_unit(unit)
    page = {k: v[:1] for k, v in _pages(examples, models=models).items()}
    page["video_id"] = tf.fill([1, 10], page["video_id"][0, 0])
    page["impression_mask"] = tf.ones([1, 10], tf.bool)
    page["clicked"] = tf.constant([[1, 1, 1] + [0] * 7], tf.float32)
    page["watch_time_s"] = tf.constant([[20, 40, 90] + [0] * 7], tf.float32)
    tf.keras.utils.set_random_seed(0)
    ranker = models.ranker
    ranker.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    ranker.fit(tf.data.Dataset.from_tensors(page).repeat(400), epochs=1, verbose=0)
    expected = 15.0 if negatives == "every_impression" else 150.0 / 7
    assert float(ranker.expected_watch_time(page)[0, 0]) == pytest.approx(expected, rel=0.03)


def test_fit_reports_the_papers_metric_on_validation(examples):
    config = _config(examples)
    models = build_models(examples, config)
    history = fit_ranker(models, examples, config, verbose=0)["history"]
    assert "weighted_per_user_loss" not in history  # reported on validation pages only
    # The best epoch is kept (early stopping restores it): its metric is the lowest reported.
    reported = min(history["val_weighted_per_user_loss"])
    shown = ranked_impressions(models, examples, config, "calibration")
    computed = weighted_per_user_loss(shown["page"], shown["clicked"], shown["watch_time_s"], shown["logit"])
    assert reported == pytest.approx(computed, rel=1e-4)  # the calibration map is monotone: same pairs
    assert 0.0 < reported < 1.0 and "val_auc" in history
    assert not np.allclose(models.ranker.calibration.values.numpy(), models.ranker.calibration.knots.numpy())


def test_a_page_of_candidates_scores_as_each_candidate_alone(examples):
    """Training scores a page's impressions and serving its retrieved candidates with one call:
    the user's part once per request, broadcast; the logits must be each candidate's own."""
    models = build_models(examples, _config(examples))
    page = _pages(examples, models=models, n=8)
    together = models.ranker(page).numpy()
    for j in range(int(page["video_id"].shape[1])):
        alone = models.ranker(dict(page, video_id=page["video_id"][:, j:j + 1])).numpy()[:, 0]
        np.testing.assert_allclose(alone, together[:, j], rtol=1e-5, atol=1e-5)


def test_videos_the_ranker_never_trained_on_are_scored_as_unknown(examples):
    """The ranker knows the videos its fitted pages show or hold in their histories; any other
    video is scored exactly as an unknown one (index 0), and training drops a share of known
    videos to unknown (so it learns that case) while inference never does."""
    # (No history dropping here: training-mode logits are compared with the unknown video's.)
    config = _config(examples, unknown_video_rate=0.5, unknown_history_rate=0.0)
    config.ranker_epochs = 1
    models = build_models(examples, config)
    ranker = models.ranker
    fit_ranker(models, examples, config, verbose=0)
    known = ranker.known_videos.numpy()
    assert known[0] == 0.0
    np.testing.assert_array_equal(known > 0, examples.statistics["ranker_video_counts"] > 0)
    calibration = _pages(examples, "calibration", 256, models)
    shown = calibration["video_id"].numpy()[calibration["impression_mask"].numpy()]
    new_videos = [v for v in shown if known[v] == 0]
    assert new_videos, "the fixture's calibration slice should show videos the fitted part never had"

    rows = {k: v[:1] for k, v in calibration.items()}
    logit_of = lambda video, training=False: float(ranker.raw_logits(  # noqa: E731
        dict(rows, video_id=tf.constant([[video]], tf.int64)), training=training).numpy()[0, 0])
    table = models.embeddings.video.embedding.embeddings
    known_video = int(np.flatnonzero(known)[0])

    def moves_when_its_row_changes(video) -> bool:
        before, row = logit_of(video), table[video].numpy()
        table[video].assign(row + 1.0)
        after = logit_of(video)
        table[video].assign(row)
        return abs(after - before) > 1e-6

    # An unknown video's embedding is not read (its catalog facts, age and topic, still are).
    assert not moves_when_its_row_changes(new_videos[0])
    assert moves_when_its_row_changes(known_video)
    assert len({logit_of(known_video) for _ in range(5)}) == 1  # inference: no dropping
    ranker.known_videos[known_video].assign(0.0)
    as_unknown = logit_of(known_video)
    ranker.known_videos[known_video].assign(1.0)
    batch = {k: tf.repeat(v, 400, axis=0) for k, v in rows.items()}
    batch["video_id"] = tf.fill([400, 1], tf.constant(known_video, tf.int64))
    dropped = ranker.raw_logits(batch, training=True).numpy()
    share = np.mean(np.isclose(dropped, as_unknown, atol=1e-6))
    assert 0.35 < share < 0.65  # about unknown_video_rate of them

    # In a history, a video the ranker does not know is left out of the mean, like padding: the
    # user's representation is the same with it as without it, and differs when a known one is added.
    history = rows["watch_history"].numpy()
    padding = int(np.flatnonzero(history[0] == 0)[0])
    with_new, with_known = history.copy(), history.copy()
    with_new[0, padding], with_known[0, padding] = new_videos[0], known_video
    user = lambda h: ranker.user_representation(dict(rows, watch_history=tf.constant(h))).numpy()  # noqa: E731
    np.testing.assert_allclose(user(with_new), user(history), rtol=0, atol=1e-7)
    assert not np.allclose(user(with_known), user(history), atol=1e-4)


def test_training_drops_a_share_of_each_history_and_inference_never_does(examples):
    """`unknown_history_rate`: in training each history loses a share of its entries drawn per
    example (uniform up to the rate), left out of the mean exactly like unknown videos; the
    mean is over the kept entries only; inference reads every entry."""
    models = build_models(examples, _config(examples, unknown_history_rate=0.6))
    embeddings, ranker = models.embeddings, models.ranker
    page = _pages(examples, models=models, n=256)
    longest = int(np.argmax((page["watch_history"].numpy() > 0).sum(axis=1)))
    history = tf.repeat(page["watch_history"][longest:longest + 1], 2000, axis=0)
    assert ranker.history_kept(history, training=False) is None
    kept = ranker.history_kept(history, training=True).numpy()
    dropped_per_row = 1.0 - kept.mean(axis=1)
    assert dropped_per_row.mean() == pytest.approx(0.3, abs=0.03)  # uniform(0, 0.6): 0.3 on average
    assert dropped_per_row.min() < 0.1 and dropped_per_row.max() > 0.45  # drawn per example

    # The mean over kept entries, by hand.
    index = page["watch_history"].numpy()[longest:longest + 2]
    mask = np.random.default_rng(0).random(index.shape) < 0.5
    table = embeddings.video.embedding.embeddings.numpy()
    use = mask & (index > 0)
    expected = np.stack([table[index[i][use[i]]].mean(axis=0) if use[i].any() else np.zeros(table.shape[1])
                         for i in range(2)])
    got = embeddings.video.mean(tf.constant(index), kept=tf.constant(mask)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    rows = {k: v[longest:longest + 1] for k, v in page.items()}
    inference = [ranker.user_representation(rows).numpy() for _ in range(3)]
    assert all(np.array_equal(inference[0], x) for x in inference)
    many = {k: tf.repeat(v, 50, axis=0) for k, v in rows.items()}
    assert not np.allclose(ranker.user_representation(many, training=True).numpy(), inference[0], atol=1e-6)
    off = Ranker(RankerConfig(hidden_layers=(16,), unknown_history_rate=0.0), embeddings)
    assert off.history_kept(history, training=True) is None
