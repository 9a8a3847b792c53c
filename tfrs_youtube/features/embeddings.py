"""The feature embeddings shared by candidate generation and ranking.

The paper's two networks read the same ids: a video watched in the history, a video shown as an
impression and a video scored as a retrieval candidate are one row of one table. Sharing the
layer objects (not copies) lets the ranker start from what candidate generation learned.
Out-of-vocabulary ids, and the "" that pads histories, embed to zero, as in the paper.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import numpy as np
import tensorflow as tf

from tfrs_youtube.features.quantile import QuantileNormalization

EMPTY_VOCABULARY_ENTRY = "\x00<empty vocabulary>"
CATEGORICAL = ("country", "language", "gender", "device")
CONTINUOUS = ("age", "example_age_s", "time_since_topic_watch_s", "previous_impressions", "video_age_s",
              "retrieval_score")


def categorical_dim(vocabulary_size: int) -> int:
    """Embedding width for a categorical feature: grows with log(vocabulary size) (paper 4.1)."""
    return int(min(32, max(2, math.ceil(2 * math.log2(vocabulary_size + 1)))))


def _vocabulary(values: Iterable[str]) -> list[str]:
    # Sorted for determinism; "" is padding and must stay out of vocabulary (it embeds to zero).
    return sorted({str(v) for v in values} - {""})


class IdEmbedding(tf.keras.layers.Layer):
    """A string lookup and an embedding table where unknown ids (and "") embed to zero.

    Args:
      vocabulary: the known ids.
      dim: embedding width.
      seed: initialiser seed.
    """

    def __init__(self, vocabulary: list[str], dim: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = list(vocabulary)
        self.dim = int(dim)
        self.seed = int(seed)
        # StringLookup refuses an empty vocabulary (a dataset without searches has no tokens):
        # one reserved entry that no real id can equal keeps every real id out of vocabulary.
        lookup_vocabulary = self.vocabulary or [EMPTY_VOCABULARY_ENTRY]
        self.lookup = tf.keras.layers.StringLookup(vocabulary=lookup_vocabulary, mask_token=None, num_oov_indices=1)
        self.embedding = tf.keras.layers.Embedding(
            len(lookup_vocabulary) + 1,
            self.dim,
            embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(self.dim), seed=seed),
        )

    @property
    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def indices(self, ids: tf.Tensor) -> tf.Tensor:
        """0 for unknown ids and padding; 1..V for known ids."""
        return self.lookup(ids)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        index = self.lookup(ids)
        known = tf.cast(index > 0, tf.float32)[..., None]
        return self.embedding(index) * known

    def mean(self, ids: tf.Tensor, decay: float = 0.0, known_rows: tf.Tensor | None = None,
             kept: tf.Tensor | None = None) -> tf.Tensor:
        """Mean of the known ids' embeddings along the last axis (zero when none is known).

        With `decay` > 0 the mean is weighted exp(-decay x position): histories are most recent
        first, so position is the number of steps back. `known_rows` (one 0/1 per table row)
        narrows "known" further: ids whose row is 0 are left out like padding; so does `kept`
        (one 0/1 per id, the shape of `ids`).
        """
        return self.means(ids, (decay,), known_rows, kept)[0]

    def means(self, ids: tf.Tensor, decays: tuple[float, ...], known_rows: tf.Tensor | None = None,
              kept: tf.Tensor | None = None) -> list[tf.Tensor]:
        """`mean(ids, decay, known_rows, kept)` for each decay, looking the ids up once."""
        index = self.lookup(ids)
        if known_rows is None:
            known = tf.cast(index > 0, tf.float32)[..., None]
        else:
            known = tf.gather(known_rows, index)[..., None]  # row 0 (unknown, padding) must be 0
        if kept is not None:
            known = known * tf.cast(kept, tf.float32)[..., None]
        vectors = self.embedding(index) * known
        out = []
        for decay in decays:
            weights = known
            if decay > 0:
                steps = tf.cast(tf.range(tf.shape(ids)[-1]), tf.float32)
                weights = known * tf.exp(-decay * steps)[:, None]
            total = tf.reduce_sum(vectors * weights if decay > 0 else vectors, axis=-2)
            out.append(total / tf.maximum(tf.reduce_sum(weights, axis=-2), 1.0))
        return out

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary=self.vocabulary, dim=self.dim, seed=self.seed)
        return config


@dataclasses.dataclass
class EmbeddingConfig:
    """Widths of the shared tables.

    Args:
      video_dim: width of the video table; also the candidate generator's output width d.
      token_dim: width of the search-token table.
      num_quantiles: resolution of the continuous features' CDF.
      powers: feed x̃² and √x̃ beside x̃ (the paper's setting).
      extra_user_features: further categorical columns of the users table (such as MovieLens'
        occupation) embedded and fed to both models, when the table has them.
      seed: initialiser seed.
    """

    video_dim: int = 64
    token_dim: int = 64
    num_quantiles: int = 100
    powers: bool = True
    extra_user_features: tuple[str, ...] = ("occupation",)
    seed: int = 0


class FeatureEmbeddings(tf.keras.layers.Layer):
    """Every vocabulary lookup and embedding table of the system, built once from the data.

    One video table (history, impression, retrieval candidate), one token table, one table per
    categorical feature (a single language table serves user and video language), and a
    quantile normaliser per continuous feature. Both models receive this same object.

    Args:
      vocabularies: "video", "token" and each name in `CATEGORICAL` -> known values.
      quantiles: continuous feature name -> its stored quantiles (from `adapt_continuous`).
      config: an `EmbeddingConfig`.
    """

    def __init__(self, vocabularies: dict[str, list[str]], config: EmbeddingConfig | dict | None = None,
                 quantiles: dict[str, list[float]] | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = EmbeddingConfig(**config)
        self.config = config or EmbeddingConfig()
        self.vocabularies = {k: list(v) for k, v in vocabularies.items()}
        c = self.config
        self.video = IdEmbedding(self.vocabularies["video"], c.video_dim, seed=c.seed, name="video")
        self.token = IdEmbedding(self.vocabularies["token"], c.token_dim, seed=c.seed + 1, name="token")
        # The standard categorical features, then the extra user features this data has.
        self.extra_user_features = tuple(name for name in c.extra_user_features if name in self.vocabularies)
        self.categorical = {
            name: IdEmbedding(
                self.vocabularies[name], categorical_dim(len(self.vocabularies[name])), seed=c.seed + 2 + i, name=name
            )
            for i, name in enumerate(CATEGORICAL + self.extra_user_features)
        }
        quantiles = quantiles or {}
        self.continuous = {
            name: QuantileNormalization(c.num_quantiles, c.powers, quantiles=quantiles.get(name), name=name)
            for name in CONTINUOUS
        }
        # Create every table now, under this layer's own names, rather than inside whichever
        # model first calls it (the variables belong to neither model: they are shared).
        with tf.name_scope(self.name):
            for table in [self.video, self.token, *self.categorical.values()]:
                table(tf.constant([""]))
        self.built = True
        # Set by `from_examples`: label frequency over the video table's indices (0: unknown).
        self.video_label_probability: np.ndarray | None = None

    @classmethod
    def from_examples(cls, log, config: EmbeddingConfig | None = None, label_videos=None,
                      **continuous_values) -> "FeatureEmbeddings":
        """Vocabularies from the event log; quantiles from the given continuous feature arrays.

        `label_videos` (the training labels; default every watch of the log) gives the videos'
        label frequencies, `video_label_probability`, which candidate generation samples from
        and corrects by.
        """
        tokens = log.searches["query"].str.split().explode().dropna() if len(log.searches) else []
        vocabularies = {
            "video": _vocabulary(log.videos["video_id"]),
            "token": _vocabulary(tokens),
            "country": _vocabulary(log.users["country"]),
            # One language table for users and videos (paper 4.1: shared embeddings).
            "language": _vocabulary(list(log.users["language"]) + list(log.videos["language"])),
            "gender": _vocabulary(log.users["gender"]),
            "device": _vocabulary(log.users["device"]),
        }
        config = config or EmbeddingConfig()
        for name in config.extra_user_features:
            if name in log.users.columns:
                vocabularies[name] = _vocabulary(log.users[name].astype(str))
        layer = cls(vocabularies, config)
        from tfrs_youtube.sampling import background_probabilities

        labels = log.watches["video_id"].to_numpy() if label_videos is None else np.asarray(label_videos)
        layer.video_label_probability = background_probabilities(layer.video.vocabulary, labels)
        continuous_values.setdefault("age", log.users["age"].to_numpy())
        layer.adapt_continuous(**continuous_values)
        return layer

    def adapt_continuous(self, **values) -> None:
        for name, array in values.items():
            if name not in self.continuous:
                raise KeyError(f"unknown continuous feature {name!r} (known: {CONTINUOUS})")
            self.continuous[name].adapt(array)

    def normalized(self, name: str, x: tf.Tensor) -> tf.Tensor:
        """[batch, 3] (or [batch, 1]) CDF features of a continuous input."""
        return self.continuous[name](x)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabularies=self.vocabularies,
            config=dataclasses.asdict(self.config),
            quantiles={k: [float(v) for v in layer.quantiles.numpy()] for k, layer in self.continuous.items()},
        )
        return config

    def call(self, inputs):  # pragma: no cover - the layer is used through its parts
        raise NotImplementedError("use .video, .token, .categorical[name] or .normalized(name, x)")
