"""The feature embeddings shared by candidate generation and ranking.

The paper's two networks read the same ids: a video watched in the history, a video shown as an
impression and a video scored as a retrieval candidate are one row of one table. Sharing the
layer objects (not copies) lets the ranker start from what candidate generation learned.

Ids become integer indices once: the example pipeline writes vocabulary indices (1..V), and the
served graph maps a request's strings to the same indices with `encode` (Keras `StringLookup`
over the same vocabularies) before anything else reads them. Index 0 is padding and unknown
ids, and embeds to zero, as out-of-vocabulary ids do in the paper. The models read indices only,
so no string lookup runs in a training step.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tfrs_youtube.features.context import IMPRESSION_CONTINUOUS, CandidateFeatures, VideoCatalog
from tfrs_youtube.features.contract import STANDARD_USER_FIELDS, RequestContract
from tfrs_youtube.features.lookup import rows
from tfrs_youtube.features.quantile import QuantileNormalization
from tfrs_youtube.sampling import background_probabilities

EMPTY_VOCABULARY_ENTRY = "\x00<empty vocabulary>"
# Every continuous feature a model reads, each with its own quantile normaliser: the user's age,
# example age (candidate generation), each candidate's derived features and its retrieval score
# (ranking).
CONTINUOUS = ("age", "example_age_s", *IMPRESSION_CONTINUOUS, "retrieval_score")
# Request inputs that hold video ids, and the one that holds search tokens.
VIDEO_INPUTS = ("watch_history", "impression_history", "video_id", "candidate_ids")
TOKEN_INPUTS = ("search_tokens",)


def categorical_dim(vocabulary_size: int) -> int:
    """Embedding width for a categorical feature: grows with log(vocabulary size) (paper 4.1)."""
    return int(min(32, max(2, math.ceil(2 * math.log2(vocabulary_size + 1)))))


class IdEmbedding(tf.keras.layers.Layer):
    """An embedding table over a vocabulary's indices, where index 0 (padding, unknown) embeds
    to zero; `indices` maps id strings to those indices.

    Args:
      vocabulary: the known ids, in index order (id i has index i + 1).
      dim: embedding width.
      seed: initialiser seed.
    """

    def __init__(self, vocabulary: list[str], dim: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = list(vocabulary)
        self.dim = int(dim)
        self.seed = int(seed)
        self._lookup = None
        self.embedding = tf.keras.layers.Embedding(
            len(self.vocabulary) + 1, self.dim,
            embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(self.dim), seed=seed),
        )

    @property
    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    @property
    def lookup(self) -> tf.keras.layers.StringLookup:
        """The string -> index map, built on first use (training reads indices and never needs it)."""
        if self._lookup is None:
            # StringLookup refuses an empty vocabulary (a dataset without searches has no tokens):
            # one reserved entry that no real id can equal keeps every real id out of vocabulary.
            self._lookup = tf.keras.layers.StringLookup(vocabulary=self.vocabulary or [EMPTY_VOCABULARY_ENTRY],
                                                        mask_token=None, num_oov_indices=1)
        return self._lookup

    def indices(self, ids: tf.Tensor) -> tf.Tensor:
        """0 for unknown ids and "" padding; 1..V for known ids."""
        return self.lookup(ids)

    def call(self, index: tf.Tensor) -> tf.Tensor:
        index = tf.cast(index, tf.int64)
        return self.embedding(index) * tf.cast(index > 0, tf.float32)[..., None]

    def mean(self, index: tf.Tensor, decay: float = 0.0, known_rows: tf.Tensor | None = None,
             kept: tf.Tensor | None = None) -> tf.Tensor:
        """Mean of the known entries' embeddings along the last axis (zero when none is known).

        With `decay` > 0 the mean is weighted exp(-decay x position): histories are most recent
        first, so position is the number of steps back. `known_rows` (one 0/1 per table row)
        narrows "known" further: entries whose row is 0 are left out like padding; so does `kept`
        (one 0/1 per entry, the shape of `index`).
        """
        return self.means(index, (decay,), known_rows, kept)[0]

    def means(self, index: tf.Tensor, decays: tuple[float, ...], known_rows: tf.Tensor | None = None,
              kept: tf.Tensor | None = None) -> list[tf.Tensor]:
        """`mean(index, decay, known_rows, kept)` for each decay, gathering the rows once."""
        index = tf.cast(index, tf.int64)
        if known_rows is None:
            known = tf.cast(index > 0, tf.float32)[..., None]
        else:
            known = rows(known_rows, index)[..., None]  # row 0 (unknown, padding) must be 0
        if kept is not None:
            known = known * tf.cast(kept, tf.float32)[..., None]
        vectors = self.embedding(index) * known
        out = []
        for decay in decays:
            weights = known
            if decay > 0:
                steps = tf.cast(tf.range(tf.shape(index)[-1]), tf.float32)
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
    """

    video_dim: int = 64
    token_dim: int = 64
    num_quantiles: int = 100
    powers: bool = True


class FeatureEmbeddings(tf.keras.layers.Layer):
    """Every vocabulary, embedding table and derived-feature layer of the system, built once.

    One video table (history, impression, retrieval candidate), one token table, one table per
    categorical user field (a single language table serves user and video language), the video
    catalog and the candidate features derived from it (`features.context`), and a quantile
    normaliser per continuous feature. Both models receive this same object.

    Args:
      vocabularies: "video", "token", "topic" and each categorical user field -> its entries in
        index order.
      catalog: "catalog_topic", "catalog_language", "catalog_upload_time" (and optionally
        "catalog_duration"): arrays of V + 1.
      contract: the `RequestContract` of the examples and requests.
      config: an `EmbeddingConfig`.
      seed: initialiser seed.
      quantiles: continuous feature name -> its stored quantiles (from `adapt_continuous`).
      user_fields: the categorical user fields, in order (default: those of `vocabularies`).
    """

    def __init__(self, vocabularies: dict[str, list[str]], catalog: dict[str, np.ndarray],
                 contract: RequestContract | dict | None = None, config: EmbeddingConfig | dict | None = None,
                 seed: int = 0, quantiles: dict[str, list[float]] | None = None,
                 user_fields: tuple[str, ...] | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = EmbeddingConfig(**config)
        if isinstance(contract, dict):
            contract = RequestContract(**contract)
        self.config = config or EmbeddingConfig()
        self.contract = contract or RequestContract()
        self.seed = int(seed)
        self.vocabularies = {k: list(v) for k, v in vocabularies.items()}
        c = self.config
        self.video = IdEmbedding(self.vocabularies["video"], c.video_dim, seed=seed, name="video")
        self.token = IdEmbedding(self.vocabularies["token"], c.token_dim, seed=seed + 1, name="token")
        if user_fields is None:
            user_fields = tuple(k for k in self.vocabularies if k not in ("video", "token", "topic"))
        missing = [name for name in STANDARD_USER_FIELDS if name not in user_fields]
        if missing:
            raise ValueError(f"FeatureEmbeddings needs the user fields {STANDARD_USER_FIELDS}; missing {missing}")
        self.user_fields = tuple(user_fields)
        self.extra_user_features = tuple(name for name in self.user_fields if name not in STANDARD_USER_FIELDS)
        self.categorical = {
            name: IdEmbedding(self.vocabularies[name], categorical_dim(len(self.vocabularies[name])),
                              seed=seed + 2 + i, name=name)
            for i, name in enumerate(self.user_fields)
        }
        self.catalog = VideoCatalog(catalog["catalog_topic"], catalog["catalog_language"],
                                    catalog["catalog_upload_time"], catalog.get("catalog_duration"), name="catalog")
        if self.catalog.num_rows != self.video.vocabulary_size + 1:
            raise ValueError(f"the catalog has {self.catalog.num_rows} rows for {self.video.vocabulary_size} videos")
        self.candidate_features = CandidateFeatures(self.catalog, self.contract, name="candidate_features")
        quantiles = quantiles or {}
        self.continuous = {
            name: QuantileNormalization(c.num_quantiles, c.powers, quantiles=quantiles.get(name), name=name)
            for name in CONTINUOUS
        }
        # Create every table now, under this layer's own names, rather than inside whichever
        # model first calls it (the variables belong to neither model: they are shared).
        with tf.name_scope(self.name):
            for table in [self.video, self.token, *self.categorical.values()]:
                table(tf.zeros([1], tf.int64))
        self.built = True
        # Set by `from_examples`: label frequency over the video table's indices (0: unknown).
        self.video_label_probability: np.ndarray | None = None

    @classmethod
    def from_examples(cls, examples, config: EmbeddingConfig | None = None, seed: int = 0) -> "FeatureEmbeddings":
        """The tables of an examples folder (`pipeline.ExampleSet`): its vocabularies, catalog and
        contract; `video_label_probability` from its training labels' counts, which candidate
        generation samples from and corrects by. The quantiles are adapted by the trainer."""
        layer = cls(examples.vocabularies(), examples.statistics, examples.contract, config, seed=seed,
                    user_fields=examples.user_fields)
        layer.video_label_probability = background_probabilities(examples.label_counts())
        return layer

    def encode(self, request: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """A request's id strings as vocabulary indices (other inputs unchanged): what the served
        graph does first, so that everything after it is the training graph."""
        out = {}
        for name, value in request.items():
            if name in VIDEO_INPUTS:
                out[name] = self.video.indices(value)
            elif name in TOKEN_INPUTS:
                out[name] = self.token.indices(value)
            elif name in self.categorical:
                out[name] = self.categorical[name].indices(value)
            else:
                out[name] = value
        return out

    def adapt_continuous(self, **values) -> None:
        for name, array in values.items():
            if name not in self.continuous:
                raise KeyError(f"unknown continuous feature {name!r} (known: {CONTINUOUS})")
            self.continuous[name].adapt(array)

    def normalized(self, name: str, x: tf.Tensor) -> tf.Tensor:
        """[..., 3] (or [..., 1]) CDF features of a continuous input."""
        return self.continuous[name](x)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabularies=self.vocabularies,
            config=dataclasses.asdict(self.config),
            contract=self.contract.to_dict(),
            seed=self.seed,
            user_fields=self.user_fields,
            quantiles={k: [float(v) for v in layer.quantiles.numpy()] for k, layer in self.continuous.items()},
        )
        return config

    def call(self, inputs):  # pragma: no cover - the layer is used through its parts
        raise NotImplementedError("use .video, .token, .categorical[name], .candidate_features or .normalized")
