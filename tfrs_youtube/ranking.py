"""Ranking (paper section 4): weighted logistic regression on impressions.

Each impression is an example: clicked ones are positives weighted by their watch time, the
others negatives of weight 1. The learned odds e^{Wx+b} then approximate the expected watch time
of an impression, so ranking by the logit ranks by expected watch time rather than by click
probability, which would reward clickbait.

Why the odds estimate watch time: for impressions with features x, N of them, k clicked with
watch times T_i, the weighted loss is minimised at odds = sum(T_i) / (N - k) = E[T] / (1 - P),
with P the click rate; the paper notes E[T](1 + P) ~ E[T] for small P. Where the ranker is
confident, P is not small (a third of the top decile's impressions are clicked on the synthetic
log) and exp(logit) then overstates watch time by 1 / (1 - P). By default (`negatives=
"every_impression"`) every impression therefore also counts once as a negative of weight 1,
clicked or not: the optimum becomes sum(T_i) / N = E[T] exactly, and the ranking order, which
only ever depended on E[T], is the paper's. `negatives="unclicked"` is the paper's loss as written.

Watch times come in the data's own unit and length: seconds of clips, or a film's 6,000. Weights
of thousands against 1 for an unclicked impression make the loss's gradients a thousand times
those of a clip log and push the logits far from 0, where the sigmoid is flat in float32 (and an
AUC read from it is 0.5). So the loss is taken in units of the training pages' mean watch time
per click, U (`Ranker.set_watch_time_unit`): positives weigh T / U, the network's own output z
has odds E[T] / U at its optimum, and the ranker's logit is z + log U, exp(logit) still the
expected watch time in the data's unit. Only the scale of the problem changes, not its optimum.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_youtube.calibration import WatchTimeCalibration
from tfrs_youtube.features.context import IMPRESSION_CONTINUOUS
from tfrs_youtube.features.embeddings import FeatureEmbeddings
from tfrs_youtube.features.lookup import rows
from tfrs_youtube.metrics import WeightedPerUserLoss

# Table 1's hidden-layer presets.
HIDDEN_LAYER_PRESETS = {
    "none": (),
    "256": (256,),
    "512": (512,),
    "1024": (1024,),
    "512-256": (512, 256),
    "1024-512": (1024, 512),
    "1024-512-256": (1024, 512, 256),
}
# The continuous features the ranker reads: derived per candidate from the request
# (`IMPRESSION_CONTINUOUS`, from `features.context.CandidateFeatures`), and the user's own.
USER_CONTINUOUS = ("age",)
# Paper 4.1: "it is also useful to propagate information from candidate generation into ranking
# in the form of features": the candidate generator's score u·v of the impressed video.
RETRIEVAL_SCORE = "retrieval_score"


# What the ranker reads of a page (with the user fields the embeddings hold): the request, the
# page's videos and, to learn from, its clicks and watch times.
RANKING_FEATURES = ("watch_history", "watch_ages_s", "search_tokens", "impression_history", "impression_ages_s",
                    "age", "request_time", "video_id", "clicked", "watch_time_s", "impression_mask")


def ranking_features(embeddings: FeatureEmbeddings) -> tuple[str, ...]:
    """What the ranker reads of a page."""
    return RANKING_FEATURES + tuple(embeddings.user_fields)


NEGATIVES = ("every_impression", "unclicked")


def preset_name(hidden_layers: tuple[int, ...]) -> str:
    """Table 1's name of a hidden-layer tuple: "none", "256", "1024-512-256"."""
    return "-".join(str(w) for w in hidden_layers) or "none"


@dataclasses.dataclass
class RankerConfig:
    """The ranker's settings.

    Args:
      hidden_layers: ReLU widths (a Table 1 preset name via `HIDDEN_LAYER_PRESETS`, or a tuple).
      weighted: weight clicked impressions by watch time (False: every impression weighs 1).
      use_retrieval_score: feed the candidate generator's score of the impression as a feature.
      fine_tune_embeddings: also train the shared tables (False: read them frozen, as candidate
        generation left them; only the ranker's own layers learn). They are the candidate
        generator's own variables, so fine-tuning moves its video vectors too.
      negatives: "every_impression" (each impression is also a negative of weight 1, so that
        exp(logit) = E[watch time] exactly: see the module docstring) or "unclicked" (the
        paper's loss as written; exp(logit) = E[watch time] / (1 - P(click))).
      feature_powers: feed x̃² and √x̃ of each continuous feature beside x̃ (Table 1's ablation
        turns them off).
      calibration_knots: at most this many knots in the calibration map (it uses one per 1,000
        clicks of the calibration slice).
      unknown_video_rate: during training, the share of impressions whose video is read as
        unknown (its embedding dropped to zero), so the ranker learns to score a video it knows
        nothing of from its other features (age, language, topic): what it meets in every video
        uploaded after training (`Ranker.set_known_videos`). 0 turns it off.
      unknown_history_rate: during training, each example's watch history loses a share of its
        videos drawn uniformly between 0 and this, left out of the history's mean as videos the
        ranker does not know are (`Ranker.user_representation`). After training, new videos fill
        recent histories (a fifth of a held-out history on the synthetic log, more for some
        users), so the ranker meets means over fewer videos than any full training history gave
        it; this shows it such means. 0 turns it off.
      learning_rate: Adam's.
      embedding_optimizer: how the shared tables are updated when `fine_tune_embeddings` (see
        `optimizers`).
    """

    hidden_layers: tuple[int, ...] = (256, 128)
    weighted: bool = True
    use_retrieval_score: bool = False
    fine_tune_embeddings: bool = False
    negatives: str = "every_impression"
    feature_powers: bool = True
    calibration_knots: int = 20
    unknown_video_rate: float = 0.1
    unknown_history_rate: float = 0.5
    learning_rate: float = 0.002
    embedding_optimizer: str = "lazy_adam"

    def __post_init__(self):
        if isinstance(self.hidden_layers, str):
            if self.hidden_layers not in HIDDEN_LAYER_PRESETS:
                raise ValueError(f"RankerConfig.hidden_layers: unknown preset {self.hidden_layers!r} "
                                 f"(known: {', '.join(HIDDEN_LAYER_PRESETS)})")
            self.hidden_layers = HIDDEN_LAYER_PRESETS[self.hidden_layers]
        if self.negatives not in NEGATIVES:
            raise ValueError(f"RankerConfig.negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        self.hidden_layers = tuple(int(w) for w in self.hidden_layers)


def impression_weights(clicked: tf.Tensor, watch_time_s: tf.Tensor, weighted: bool = True) -> tf.Tensor:
    """Watch time for clicked impressions, 1 for the others (1 for all when not weighted)."""
    clicked = tf.cast(clicked, tf.float32)
    if not weighted:
        return tf.ones_like(clicked)
    return tf.where(clicked > 0, tf.cast(watch_time_s, tf.float32), tf.ones_like(clicked))


class Ranker(tfrs.Model):
    """Scores a request's candidates; `expected_watch_time(features) = exp(logit)`.

    Its input is a request with [batch, N] candidate videos (`video_id`): a page of impressions
    in training, the retrieved candidates at serving, the same call either way. What depends on
    the user (watched videos from the shared video table, search tokens from the shared token
    table, language and the other user fields, age) is computed once per request; what depends on
    the candidate (its embedding from the same video table, its language from the one language
    table, the features `CandidateFeatures` derives from the request) once per candidate; the
    continuous features pass through the shared quantile normalisers.

    Args:
      config: a `RankerConfig`.
      embeddings: the `FeatureEmbeddings` shared with candidate generation.
      seed: initialiser and dropout seed.
    """

    def __init__(self, config: RankerConfig, embeddings: FeatureEmbeddings, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embeddings = embeddings
        self.seed = int(seed)
        init = lambda i: tf.keras.initializers.GlorotUniform(seed=self.seed + 200 + i)  # noqa: E731
        layers = [tf.keras.layers.Dense(w, activation="relu", kernel_initializer=init(i))
                  for i, w in enumerate(config.hidden_layers)]
        layers.append(tf.keras.layers.Dense(1, kernel_initializer=init(len(layers))))
        self.scorer = tf.keras.Sequential(layers, name="scorer")
        self.calibration = WatchTimeCalibration(config.calibration_knots, name="calibration")
        # Per row of the video table, 1 where the ranker may read the video's embedding and 0
        # where it must treat the video as unknown (row 0, out of vocabulary, is always 0).
        # Everything is known until `set_known_videos` says otherwise.
        rows = embeddings.video.vocabulary_size + 1
        self.known_videos = tf.Variable(np.r_[0.0, np.ones(rows - 1)].astype(np.float32), trainable=False,
                                        name="known_videos")
        # log U, the mean watch time per click of the training pages (see the module docstring);
        # 0 (U = 1 s) until `set_watch_time_unit` says otherwise.
        self.log_watch_time_unit = tf.Variable(0.0, trainable=False, name="log_watch_time_unit")
        # Reduced in `compute_loss` (a mean over the batch's rows): Keras refuses its automatic
        # reductions under a tf.distribute strategy.
        self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.BinaryCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.NONE))
        # The task's loss sees each clicked impression twice (see `negatives`), so the metrics
        # are the model's own and see each impression once.
        self.auc = tf.keras.metrics.AUC(from_logits=True, name="auc")
        self.page_loss = WeightedPerUserLoss()

    @property
    def trainable_weights(self):
        weights = super().trainable_weights
        if self.config.fine_tune_embeddings:
            return weights
        shared = {id(w) for w in self.embeddings.trainable_weights}
        return [w for w in weights if id(w) not in shared]

    def set_known_videos(self, known: np.ndarray) -> "Ranker":
        """Only the videos whose row of `known` (one entry per video table row, > 0 for known) is
        set have their embeddings read; any other impressed video is scored as unknown.

        A video that no training page showed or had watched has an embedding nothing trained (or
        trained by candidate generation only on watches after the ranker's data): training passes
        the videos its fitted pages show or have in their histories (the examples' statistics),
        so videos first seen in the calibration slice are unknown there exactly as videos
        uploaded after training are unknown at serving, and the calibration sees the situation it
        has to correct.
        """
        known = (np.asarray(known) > 0).astype(np.float32)
        if known.shape != tuple(self.known_videos.shape):
            raise ValueError(f"known videos need one entry per video table row ({self.known_videos.shape[0]}), "
                             f"got {known.shape}")
        known[0] = 0.0
        self.known_videos.assign(known)
        return self

    def set_watch_time_unit(self, seconds: float) -> "Ranker":
        """Takes the loss in units of `seconds` (the training pages' mean watch time per click):
        the network learns log(E[T] / U) and the logit adds log U back. Unweighted training (a
        click model) keeps the unit 1."""
        seconds = float(seconds)
        if not np.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"the watch time unit must be a positive number of seconds, got {seconds}")
        self.log_watch_time_unit.assign(np.log(seconds) if self.config.weighted else 0.0)
        return self

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """The logit of each candidate, [batch, N]: log of its expected watch time."""
        return self.calibration(self.raw_logits(features, training=training))

    def raw_logits(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """The network's logit before calibration, [batch, N]."""
        user = self.user_representation(features, training=training)
        impression = self.impression_representation(features, training=training)
        n = tf.shape(impression)[1]
        user = tf.repeat(user[:, None, :], n, axis=1)
        return tf.squeeze(self.scorer(tf.concat([user, impression], axis=-1)), axis=-1) + self.log_watch_time_unit

    def user_representation(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """The inputs that depend on the user only, [batch, width]: the same for every candidate
        of a request, so they are computed once per request, not once per candidate."""
        e = self.embeddings
        history = features["watch_history"]
        parts = [
            # Videos the ranker does not know are left out of the history's mean, as they are
            # scored as unknown when impressed: their rows are untrained (or trained on data the
            # ranker never saw), and in a held-out period they fill recent histories, so averaging
            # them in would move every user's representation away from anything training saw.
            e.video.mean(history, known_rows=self.known_videos, kept=self.history_kept(history, training)),
            e.token.mean(features["search_tokens"]),
        ]
        parts += [e.categorical[name](features[name]) for name in e.user_fields]
        parts += [self._continuous(name, features[name]) for name in USER_CONTINUOUS]
        return tf.concat(parts, axis=-1)

    def history_kept(self, history: tf.Tensor, training: bool = False) -> tf.Tensor | None:
        """In training, which entries of each [batch, length] history the ranker reads: a share
        of each history, drawn per example up to `unknown_history_rate`, is dropped like videos
        it does not know. None (all kept) at inference."""
        if not training or self.config.unknown_history_rate <= 0:
            return None
        rate = tf.random.uniform(tf.shape(history)[:1], maxval=self.config.unknown_history_rate,
                                 seed=self.seed + 1)
        return tf.random.uniform(tf.shape(history), seed=self.seed + 2) >= rate[:, None]

    def impression_representation(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """The inputs that depend on the candidate, [batch, N, width]."""
        e = self.embeddings
        index = tf.cast(features["video_id"], tf.int64)
        derived = e.candidate_features(features, index)
        known = rows(self.known_videos, index)
        if training and self.config.unknown_video_rate > 0:
            kept = tf.random.uniform(tf.shape(known), seed=self.seed) >= self.config.unknown_video_rate
            known = known * tf.cast(kept, tf.float32)
        video = e.video.embedding(index) * known[..., None]
        parts = [video, e.categorical["language"](derived["video_language"])]
        parts += [self._continuous(name, derived[name]) for name in IMPRESSION_CONTINUOUS]
        if self.config.use_retrieval_score:
            parts.append(self._continuous(RETRIEVAL_SCORE, features[RETRIEVAL_SCORE]))
        return tf.concat(parts, axis=-1)

    def _continuous(self, name: str, x: tf.Tensor) -> tf.Tensor:
        return self.embeddings.normalized(name, x)[..., :None if self.config.feature_powers else 1]

    def expected_watch_time(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.exp(self(features))

    def calibrate(self, pages: tf.data.Dataset) -> "Ranker":
        """Fits `WatchTimeCalibration` on held-out pages (not trained on), so that exp(logit)
        matches their observed watch time per impression. Call it after `fit`."""
        logits, observed = [], []
        for batch in pages:
            mask = batch["impression_mask"]
            logits.append(tf.boolean_mask(self.raw_logits(batch), mask).numpy())
            observed.append(tf.boolean_mask(tf.where(batch["clicked"] > 0, batch["watch_time_s"], 0.0), mask).numpy())
        self.calibration.fit(np.concatenate(logits), np.concatenate(observed))
        return self

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        mask = features["impression_mask"]
        logits = tf.boolean_mask(self(features, training=training), mask)
        clicked = tf.boolean_mask(tf.cast(features["clicked"], tf.float32), mask)
        watch = tf.boolean_mask(tf.cast(features["watch_time_s"], tf.float32), mask)
        # The loss in watch-time units U: weights T / U, odds E[T] / U (see the module docstring).
        unit = tf.exp(self.log_watch_time_unit)
        weights = impression_weights(clicked, watch / unit, self.config.weighted)
        labels, predictions = clicked, logits - self.log_watch_time_unit
        if self.config.negatives == "every_impression":
            # Positives: the clicked impressions, weighted; negatives: every impression, weight 1.
            labels = tf.concat([tf.ones_like(clicked), tf.zeros_like(clicked)], axis=0)
            predictions = tf.concat([predictions, predictions], axis=0)
            weights = tf.concat([weights * clicked, tf.ones_like(clicked)], axis=0)
        # Keras' binary cross-entropy reduces the last axis: one column per example.
        losses = self.task(labels=labels[:, None], predictions=predictions[:, None], sample_weight=weights,
                           compute_metrics=False)
        loss = tf.math.divide_no_nan(tf.reduce_sum(losses), tf.cast(tf.size(losses), tf.float32))
        # AUC from the logits in units of U: in seconds a film's logits sit near 8, where the
        # sigmoid the metric thresholds is 1 in float32 for every impression.
        self.auc.update_state(clicked, logits - self.log_watch_time_unit)
        if not training:
            # One record is one page: its row in the batch identifies it.
            pages = tf.boolean_mask(tf.broadcast_to(tf.range(tf.shape(mask)[0])[:, None], tf.shape(mask)), mask)
            self.page_loss.update_state(pages, clicked, watch, logits)
        return loss

    def train_step(self, inputs):
        logs = super().train_step(inputs)
        # The per-page metric is only reported on validation (training's is its own loss).
        logs.pop(self.page_loss.name, None)
        return logs
