"""Ranking (paper section 4): weighted logistic regression on impressions.

Each impression is an example: clicked ones are positives weighted by their watch time, the
others negatives of weight 1. The learned odds e^{Wx+b} then approximate the expected watch time
of an impression, so ranking by the logit ranks by expected watch time rather than by click
probability, which would reward clickbait.
"""

from __future__ import annotations

import dataclasses

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


@dataclasses.dataclass
class RankerConfig:
    """The ranker's settings.

    Args:
      hidden_layers: ReLU widths (a Table 1 preset name via `HIDDEN_LAYER_PRESETS`, or a tuple).
      weighted: weight clicked impressions by watch time (False: every impression weighs 1).
      use_retrieval_score: feed the candidate generator's score of the impression as a feature.
      fine_tune_embeddings: also train the shared tables (False: read them frozen, as candidate
        generation left them; only the ranker's own layers learn).
      learning_rate: Adam's.
      seed: initialiser seed.
    """

    hidden_layers: tuple[int, ...] = (256, 128)
    weighted: bool = True
    use_retrieval_score: bool = False
    fine_tune_embeddings: bool = False
    learning_rate: float = 0.002
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.hidden_layers, str):
            self.hidden_layers = HIDDEN_LAYER_PRESETS[self.hidden_layers]
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
        self.task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.AUC(from_logits=True, name="auc")],
        )

    @property
    def trainable_weights(self):
        weights = super().trainable_weights
        if self.config.fine_tune_embeddings:
            return weights
        shared = {id(w) for w in self.embeddings.trainable_weights}
        return [w for w in weights if id(w) not in shared]

    def call(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        """The logit of each impression, shape [batch]."""
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
        parts += [e.normalized(name, features[name]) for name in continuous]
        return tf.squeeze(self.scorer(tf.concat(parts, axis=-1)), axis=-1)

    def expected_watch_time(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.exp(self(features))

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        logits = self(features)
        weights = impression_weights(features["clicked"], features["watch_time_s"], self.config.weighted)
        # Keras' binary cross-entropy reduces the last axis: one column per example.
        return self.task(labels=tf.cast(features["clicked"], tf.float32)[:, None], predictions=logits[:, None],
                         sample_weight=weights)
