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
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_youtube.features.embeddings import FeatureEmbeddings

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
RANKING_CONTINUOUS = ("time_since_topic_watch_s", "previous_impressions", "video_age_s", "age")
# Paper 4.1: "it is also useful to propagate information from candidate generation into ranking
# in the form of features": the candidate generator's score u·v of the impressed video.
RETRIEVAL_SCORE = "retrieval_score"


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
      calibration_fraction: the share of training impressions (the latest) held out from fitting,
        to choose the epoch and fit the watch-time calibration (`training.train_ranker`).
      calibration_knots: equal-count bins of the calibration map (fewer: less noise per knot).
      learning_rate: Adam's.
      seed: initialiser seed.
    """

    hidden_layers: tuple[int, ...] = (256, 128)
    weighted: bool = True
    use_retrieval_score: bool = False
    fine_tune_embeddings: bool = False
    negatives: str = "every_impression"
    feature_powers: bool = True
    calibration_fraction: float = 0.1
    calibration_knots: int = 10
    learning_rate: float = 0.002
    seed: int = 0

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
    """Scores impressions; `expected_watch_time(features) = exp(logit)`.

    Reads the impression video and the watched videos from the shared video table, the recent
    search tokens from the shared token table, user and video language from the one language
    table, and the continuous features through the shared quantile normalisers.

    Args:
      config: a `RankerConfig`.
      embeddings: the `FeatureEmbeddings` shared with candidate generation.
    """

    def __init__(self, config: RankerConfig, embeddings: FeatureEmbeddings, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embeddings = embeddings
        init = lambda i: tf.keras.initializers.GlorotUniform(seed=config.seed + 200 + i)  # noqa: E731
        layers = [tf.keras.layers.Dense(w, activation="relu", kernel_initializer=init(i))
                  for i, w in enumerate(config.hidden_layers)]
        layers.append(tf.keras.layers.Dense(1, kernel_initializer=init(len(layers))))
        self.scorer = tf.keras.Sequential(layers, name="scorer")
        self.calibration = WatchTimeCalibration(config.calibration_knots, name="calibration")
        self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
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

    def call(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        """The logit of each impression, shape [batch]: log of its expected watch time."""
        return self.calibration(self.raw_logits(features))

    def raw_logits(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        """The network's logit before calibration, shape [batch]."""
        e = self.embeddings
        language = e.categorical["language"]
        parts = [
            e.video(features["video_id"]),
            e.video.mean(features["watch_history"]),
            e.token.mean(features["search_tokens"]),
            language(features["language"]),
            language(features["video_language"]),
            e.categorical["country"](features["country"]),
            e.categorical["gender"](features["gender"]),
            e.categorical["device"](features["device"]),
        ]
        parts += [e.categorical[name](features[name]) for name in e.extra_user_features]
        continuous = RANKING_CONTINUOUS + ((RETRIEVAL_SCORE,) if self.config.use_retrieval_score else ())
        width = None if self.config.feature_powers else 1
        parts += [e.normalized(name, features[name])[:, :width] for name in continuous]
        return tf.squeeze(self.scorer(tf.concat(parts, axis=-1)), axis=-1)

    def expected_watch_time(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.exp(self(features))

    def calibrate(self, examples: dict[str, np.ndarray], batch_size: int = 4096) -> "Ranker":
        """Fits `WatchTimeCalibration` on held-out impressions (not trained on), so that
        exp(logit) matches their observed watch time per impression. Call it after `fit`."""
        from tfrs_youtube.pipeline import as_tensors

        n = len(examples["clicked"])
        logits = np.concatenate([self.raw_logits(as_tensors({k: v[i:i + batch_size] for k, v in examples.items()}))
                                 .numpy() for i in range(0, n, batch_size)]) if n else np.zeros(0)
        observed = np.where(np.asarray(examples["clicked"]) > 0, examples["watch_time_s"], 0.0)
        self.calibration.fit(logits, observed)
        return self

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        logits = self(features)
        clicked = tf.cast(features["clicked"], tf.float32)
        weights = impression_weights(clicked, features["watch_time_s"], self.config.weighted)
        labels, predictions = clicked, logits
        if self.config.negatives == "every_impression":
            # Positives: the clicked impressions, weighted; negatives: every impression, weight 1.
            labels = tf.concat([tf.ones_like(clicked), tf.zeros_like(clicked)], axis=0)
            predictions = tf.concat([logits, logits], axis=0)
            weights = tf.concat([weights * clicked, tf.ones_like(clicked)], axis=0)
        # Keras' binary cross-entropy reduces the last axis: one column per example.
        loss = self.task(labels=labels[:, None], predictions=predictions[:, None], sample_weight=weights,
                         compute_metrics=False)
        self.auc.update_state(clicked, logits)
        if not training and "page" in features:
            self.page_loss.update_state(features["page"], clicked, features["watch_time_s"], logits)
        return loss

    def train_step(self, inputs):
        logs = super().train_step(inputs)
        # Training batches are shuffled, so pages are split across them: the per-page metric is
        # only meaningful on page-aligned validation batches (`pipeline.to_page_dataset`).
        logs.pop(self.page_loss.name, None)
        return logs


def _pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to `values` in weighted least squares."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, w in zip(values, weights):
        blocks.append([float(v), float(w), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, w2, c2), (m1, w1, c1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.concatenate([np.full(c, m) for m, _, c in blocks])


class WatchTimeCalibration(tf.keras.layers.Layer):
    """A monotone piecewise-linear map of the ranker's logit, fitted so that exp(logit) matches
    the observed watch time per impression on held-out data.

    The weighted logistic loss makes exp(logit) an estimate of expected watch time only where
    the network is right; on impressions it has not seen, its most extreme scores are also its
    most over-confident ones (the lowest decile of predictions is watched several times longer
    than predicted). Fitted on a calibration slice the network did not train on (the latest
    training impressions), this map corrects that without changing any ranking: it is
    increasing, so AUC and the weighted per-user loss stay the same. Identity until fitted.

    Args:
      num_knots: the number of equal-count bins of the calibration slice's logits.
      knots / values: previously fitted knots (for `from_config`).
    """

    def __init__(self, num_knots: int = 20, knots=None, values=None, **kwargs):
        super().__init__(**kwargs)
        self.num_knots = int(num_knots)
        identity = np.linspace(-1.0, 1.0, self.num_knots, dtype=np.float32)
        self.knots = self.add_weight(name="knots", shape=(self.num_knots,), trainable=False,
                                     initializer=tf.keras.initializers.Constant(
                                         identity if knots is None else np.asarray(knots, np.float32)))
        self.values = self.add_weight(name="values", shape=(self.num_knots,), trainable=False,
                                      initializer=tf.keras.initializers.Constant(
                                          identity if values is None else np.asarray(values, np.float32)))

    def fit(self, logits: np.ndarray, observed_s: np.ndarray, iterations: int = 5) -> "WatchTimeCalibration":
        """Fits the map on raw logits and each impression's watch time (0 when not clicked)."""
        logits = np.asarray(logits, np.float64)
        observed_s = np.asarray(observed_s, np.float64)
        if logits.shape != observed_s.shape or logits.size < self.num_knots:
            raise ValueError(f"{self.name}: need at least {self.num_knots} calibration impressions with matching "
                             f"logits and watch times, got {logits.shape} and {observed_s.shape}")
        if not (np.isfinite(logits).all() and np.isfinite(observed_s).all()) or observed_s.sum() <= 0:
            raise ValueError(f"{self.name}: calibration data must be finite with some watch time")
        order = np.argsort(logits, kind="stable")
        bins = np.array_split(order, self.num_knots)
        # A bin without clicks would ask for log(0): shrink each bin's mean towards the overall
        # mean by one pseudo-impression's worth of the overall rate.
        prior, strength = observed_s.mean(), 1.0
        observed = np.array([(observed_s[b].sum() + strength * prior) / (len(b) + strength) for b in bins])
        counts = np.array([len(b) for b in bins], np.float64)
        knots = np.array([np.log(np.mean(np.exp(logits[b]))) for b in bins])
        knots = np.maximum.accumulate(knots + np.arange(len(knots)) * 1e-6)  # strictly increasing
        values = _pool_adjacent_violators(np.log(observed), counts)
        for _ in range(iterations):
            # Interpolation between bin centres does not give each bin exactly its mean: correct
            # each knot by the remaining ratio, keeping the map increasing.
            mapped = self._apply(logits, knots, values)
            predicted = np.array([np.exp(mapped[b]).mean() for b in bins])
            values = _pool_adjacent_violators(values + np.log(observed / predicted), counts)
        values = values + np.arange(len(values)) * 1e-6
        self.knots.assign(knots.astype(np.float32))
        self.values.assign(values.astype(np.float32))
        return self

    @staticmethod
    def _apply(z: np.ndarray, knots: np.ndarray, values: np.ndarray) -> np.ndarray:
        # Inside: linear interpolation; outside: parallel to the identity from the end knots.
        inside = np.interp(z, knots, values)
        return np.where(z < knots[0], z - knots[0] + values[0], np.where(z > knots[-1], z - knots[-1] + values[-1],
                                                                         inside))

    def call(self, z: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(z)
        z = tf.reshape(z, [-1])
        k, v = self.knots, self.values
        n = self.num_knots
        i = tf.clip_by_value(tf.searchsorted(k, z, side="right") - 1, 0, n - 2)
        lo, hi = tf.gather(k, i), tf.gather(k, i + 1)
        frac = tf.clip_by_value((z - lo) / tf.maximum(hi - lo, 1e-12), 0.0, 1.0)
        inside = tf.gather(v, i) + frac * (tf.gather(v, i + 1) - tf.gather(v, i))
        mapped = tf.where(z < k[0], z - k[0] + v[0], tf.where(z > k[-1], z - k[-1] + v[-1], inside))
        return tf.reshape(mapped, shape)

    def get_config(self):
        config = super().get_config()
        config.update(num_knots=self.num_knots, knots=self.knots.numpy().tolist(), values=self.values.numpy().tolist())
        return config


class WeightedPerUserLoss(tf.keras.metrics.Metric):
    """The paper's ranking metric, streamed over batches that never split a page.

    Within a page (one user's impressions at one request, the `page` feature), every pair of a
    clicked and an unclicked impression where the unclicked one scores higher counts the clicked
    one's watch time as mispredicted; the result is mispredicted over total paired watch time
    (`evaluation.weighted_per_user_loss` is the same on numpy arrays).
    """

    def __init__(self, name: str = "weighted_per_user_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.mispredicted = self.add_weight(name="mispredicted", initializer="zeros", dtype=tf.float64)
        self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float64)

    def update_state(self, pages, clicked, watch_time_s, scores, sample_weight=None):
        pages = tf.reshape(pages, [-1])
        positive = tf.reshape(tf.cast(clicked, tf.float32), [-1]) > 0
        scores = tf.reshape(tf.cast(scores, tf.float32), [-1])
        watch = tf.reshape(tf.cast(watch_time_s, tf.float64), [-1])
        # Pair (i, j): i clicked, j unclicked, same page.
        pair = (pages[:, None] == pages[None, :]) & positive[:, None] & ~positive[None, :]
        wrong = pair & (scores[None, :] > scores[:, None])
        count = lambda mask: tf.reduce_sum(tf.cast(mask, tf.float64), axis=1)  # noqa: E731
        self.mispredicted.assign_add(tf.reduce_sum(watch * count(wrong)))
        self.total.assign_add(tf.reduce_sum(watch * count(pair)))

    def result(self):
        # NaN, not 0, when no page had both a clicked and an unclicked impression.
        return tf.where(self.total > 0, self.mispredicted / tf.maximum(self.total, 1e-12),
                        tf.constant(float("nan"), tf.float64))

    def reset_state(self):
        self.mispredicted.assign(0.0)
        self.total.assign(0.0)


def ranker_input_signature(ranker: Ranker) -> dict[str, tf.TensorSpec]:
    """The impression features the ranker reads, batch dimension first (histories [batch, length])."""
    spec = {name: tf.TensorSpec([None], tf.string, name=name)
            for name in ("video_id", "language", "video_language", "country", "gender", "device")
            + ranker.embeddings.extra_user_features}
    spec["watch_history"] = tf.TensorSpec([None, None], tf.string, name="watch_history")
    spec["search_tokens"] = tf.TensorSpec([None, None], tf.string, name="search_tokens")
    continuous = RANKING_CONTINUOUS + ((RETRIEVAL_SCORE,) if ranker.config.use_retrieval_score else ())
    spec.update({name: tf.TensorSpec([None], tf.float32, name=name) for name in continuous})
    return spec


def save_ranker(ranker: Ranker, path: str) -> str:
    """Saves the ranker alone as a SavedModel whose `serving_default` scores impressions.

    Outputs `logit` and `expected_watch_time_s` (= exp(logit)). The quantile normalisers, the
    calibration and every table travel inside the graph: loading needs only TensorFlow.
    """
    @tf.function(input_signature=[ranker_input_signature(ranker)])
    def score(features):
        logit = ranker(features)
        return {"logit": logit, "expected_watch_time_s": tf.exp(logit)}

    module = tf.Module()
    module.ranker = ranker
    module.score = score
    level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")  # Keras' "cannot re-create from config" warnings: not needed here
    try:
        tf.saved_model.save(module, path, signatures={"serving_default": score})
    finally:
        tf.get_logger().setLevel(level)
    return path
