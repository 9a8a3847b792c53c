"""Candidate generation (paper section 3): next-watch prediction as extreme classification.

The user tower turns a user's context (averaged watch and search embeddings, geography,
demographics, example age) into a vector u; the probability of watching video j is a softmax
over u·v_j for every video. Training samples the softmax: the other positives of the batch and
extra negatives drawn from the background distribution Q are the negatives, and every logit is
corrected by -log Q so the sampled loss estimates the full one (Yi et al. 2019).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_youtube.features.embeddings import FeatureEmbeddings
from tfrs_youtube.features.lookup import rows
from tfrs_youtube.frequency import StreamingFrequencyEstimator
from tfrs_youtube.sampling import (NegativeSampler, expected_count, expected_in_batch, per_draw_probability,
                                   uniform_probabilities)

# Figure 6's tower shapes, as multiples of the output width d (the last layer is d).
DEPTH_PRESETS = {0: (), 1: (1,), 2: (2, 1), 3: (4, 2, 1), 4: (8, 4, 2, 1)}


# An optional user-tower input: the example age's normalised features, precomputed.
NORMALIZED_EXAMPLE_AGE = "example_age_normalized"


@dataclasses.dataclass
class CandidateConfig:
    """The candidate generator's settings.

    Args:
      depth: tower preset of Figure 6 (0: linear to d; 1: d ReLU; 2: 2d->d; 3: 4d->2d->d; ...).
      num_sampled_negatives: extra negatives per batch, drawn from the background distribution.
      negative_distribution: "unigram" (label frequency, as the paper samples) or "uniform".
      log_q_correction: subtract log Q from every logit (the sampling-bias correction), Q being
        each candidate's expected number of copies in the batch's candidate set (see `sampling`).
      frequency_estimation: where the positives' part of Q comes from: "counts" (label counts of
        the training data) or "streaming" (Yi et al.'s hash-array estimator, updated in every
        training step, for data that arrives as a stream).
      streaming_buckets, streaming_hashes, streaming_alpha: the streaming estimator's settings.
      l2_normalize: unit-length user and video vectors (cosine scores), divided by temperature.
      temperature: softmax temperature for normalised vectors.
      recency_decay: when > 0, a second pooling of the watch history beside the plain mean,
        weighted exp(-recency_decay x steps back), so recent tastes weigh more (0: the paper's
        plain mean only).
      use_*: switch an input group of the user tower off.
      learning_rate: Adam's.
      embedding_optimizer: how the shared id tables are updated: "lazy_adam" (Adam on the rows
        a step touches, so a step costs the same whatever the corpus size), "adagrad", or
        "adam" (dense: every row every step); see `optimizers`.
    """

    depth: int = 2
    num_sampled_negatives: int = 256
    negative_distribution: str = "unigram"
    log_q_correction: bool = True
    frequency_estimation: str = "counts"
    streaming_buckets: int = 1 << 18
    streaming_hashes: int = 2
    streaming_alpha: float = 0.01
    l2_normalize: bool = True
    temperature: float = 0.1
    recency_decay: float = 0.05
    use_watches: bool = True
    use_searches: bool = True
    use_geography: bool = True
    use_demographics: bool = True
    use_example_age: bool = True
    learning_rate: float = 0.005
    embedding_optimizer: str = "lazy_adam"


class UserTower(tf.keras.Model):
    """Figure 3's user tower: concatenated context features through a ReLU stack to d.

    Args:
      embeddings: the shared `FeatureEmbeddings`.
      config: a `CandidateConfig`.
      seed: initialiser seed.
    """

    def __init__(self, embeddings: FeatureEmbeddings, config: CandidateConfig, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.embeddings = embeddings
        self.config = config
        d = embeddings.config.video_dim
        init = lambda i: tf.keras.initializers.GlorotUniform(seed=seed + 100 + i)  # noqa: E731
        widths = DEPTH_PRESETS[config.depth]
        layers = [tf.keras.layers.Dense(m * d, activation="relu", kernel_initializer=init(i))
                  for i, m in enumerate(widths[:-1])]
        # The last layer is linear for depth 0 and ReLU otherwise, as in the paper's towers.
        last_activation = "relu" if widths else None
        layers.append(tf.keras.layers.Dense(d, activation=last_activation, kernel_initializer=init(len(widths))))
        self.tower = tf.keras.Sequential(layers, name="tower")

    def request_inputs(self) -> tuple[str, ...]:
        """The request inputs the tower reads (all that `retrieve` and `user_embedding` take,
        whichever input groups the config switches off: the signature does not change)."""
        return ("watch_history", "search_tokens", *self.embeddings.user_fields, "age")

    def call(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        c, e = self.config, self.embeddings
        parts = []
        if c.use_watches:
            decays = (0.0, c.recency_decay) if c.recency_decay > 0 else (0.0,)
            parts += e.video.means(features["watch_history"], decays)
        if c.use_searches:
            parts.append(e.token.mean(features["search_tokens"]))
        if c.use_geography:
            parts += [e.categorical["country"](features["country"]), e.categorical["language"](features["language"])]
        if c.use_demographics:
            parts += [
                e.categorical["gender"](features["gender"]),
                e.categorical["device"](features["device"]),
                e.normalized("age", features["age"]),
            ]
            parts += [e.categorical[name](features[name]) for name in e.extra_user_features]
        if c.use_example_age:
            # Serving passes the feature already normalised (example age is always 0 there).
            parts.append(features[NORMALIZED_EXAMPLE_AGE] if NORMALIZED_EXAMPLE_AGE in features
                         else e.normalized("example_age_s", features["example_age_s"]))
        if not parts:
            raise ValueError("CandidateConfig switches every input group off")
        vector = self.tower(tf.concat(parts, axis=-1))
        return tf.math.l2_normalize(vector, axis=-1) if c.l2_normalize else vector


class CandidateGenerator(tfrs.Model):
    """The candidate generation network, trained with a log-Q-corrected sampled softmax.

    Args:
      config: a `CandidateConfig`.
      embeddings: the shared `FeatureEmbeddings` (its video table gives the candidates).
      sampling_probabilities: p, the per-example label probability over the video table's indices
        (see `sampling.background_probabilities`); by default the embeddings' own
        `video_label_probability` (from `FeatureEmbeddings.from_examples`).
      topk_metrics: when True, validation reports factorized top-K accuracy over the corpus.
      seed: initialiser and sampling seed.
    """

    def __init__(self, config: CandidateConfig, embeddings: FeatureEmbeddings,
                 sampling_probabilities: np.ndarray | None = None, topk_metrics: bool = True, seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        if config.frequency_estimation not in ("counts", "streaming"):
            raise ValueError("frequency_estimation must be 'counts' or 'streaming', "
                             f"got {config.frequency_estimation!r}")
        if config.negative_distribution not in ("unigram", "uniform"):
            raise ValueError("negative_distribution must be 'unigram' or 'uniform', "
                             f"got {config.negative_distribution!r}")
        self.config = config
        self.embeddings = embeddings
        self.seed = int(seed)
        self.user_tower = UserTower(embeddings, config, seed=seed, name="user_tower")
        size = embeddings.video.vocabulary_size
        if sampling_probabilities is None:
            sampling_probabilities = embeddings.video_label_probability
        if sampling_probabilities is None:
            if config.frequency_estimation == "counts" or config.negative_distribution == "unigram":
                raise ValueError("sampling_probabilities (label frequencies) are needed for count-based "
                                 "correction and unigram negatives; pass background_probabilities(label counts)")
            sampling_probabilities = uniform_probabilities(size)
        p = np.asarray(sampling_probabilities, np.float32)
        if p.shape != (size + 1,):
            raise ValueError(f"sampling_probabilities must have {size + 1} entries (index 0: out of vocabulary)")
        # p: per-example label probability; q: the distribution negatives are drawn from. Both
        # live in variables that a step only gathers from: nothing of size V in the step's graph.
        self.label_probability = tf.Variable(p, trainable=False, name="label_probability")
        q = p if config.negative_distribution == "unigram" else uniform_probabilities(size)
        self.negative_probability = tf.Variable(q, trainable=False, name="negative_probability")
        self.negatives = NegativeSampler(q) if config.num_sampled_negatives > 0 else None
        self.frequency = None
        if config.frequency_estimation == "streaming":
            self.frequency = StreamingFrequencyEstimator(
                num_buckets=config.streaming_buckets, num_hashes=config.streaming_hashes,
                alpha=config.streaming_alpha, seed=seed, name="frequency")
        self.topk = None
        if topk_metrics:
            # Streams the current video vectors at every evaluation, so the metric follows training.
            rows = tf.data.Dataset.range(1, size + 1).batch(4096)
            candidates = tfrs.layers.factorized_top_k.Streaming(k=100).index_from_dataset(
                rows.map(lambda i: (i, self.video_vectors(i))))
            self.topk = tfrs.metrics.FactorizedTopK(candidates=candidates, ks=(10, 50, 100), name="factorized_top_k")
        self.task = tfrs.tasks.Retrieval(
            temperature=config.temperature if config.l2_normalize else None,
            remove_accidental_hits=True,
        )

    @property
    def trainable_weights(self):
        # Tables of inputs switched off get no gradient; leaving them out keeps Keras from
        # warning about it at every step (the ranker may still train them).
        c, e = self.config, self.embeddings
        unused = []
        if not c.use_searches:
            unused.append(e.token)
        if not c.use_geography:
            unused += [e.categorical["country"], e.categorical["language"]]
        if not c.use_demographics:
            unused += [e.categorical[n] for n in ("gender", "device", *e.extra_user_features)]
        skip = {id(w) for table in unused for w in table.trainable_weights}
        return [w for w in super().trainable_weights if id(w) not in skip]

    def video_vectors(self, video_index: tf.Tensor) -> tf.Tensor:
        """Candidate vectors v_j of video indices: rows of the shared video table (unit length if
        normalised; zero for index 0, an unknown video)."""
        v = self.embeddings.video(video_index)
        return tf.math.l2_normalize(v, axis=-1) if self.config.l2_normalize else v

    def call(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        return self.user_tower(features)

    def train_step(self, inputs):
        # Top-K accuracy is only computed in evaluation; keep its idle zeros out of the progress bar.
        logs = super().train_step(inputs)
        return {k: v for k, v in logs.items() if not k.startswith(self.topk.name)} if self.topk else logs

    def sampling_probability(self, candidate_index: tf.Tensor, batch_size: tf.Tensor) -> tf.Tensor:
        """Q_j for each candidate column: its expected number of copies in this batch's
        candidate set (see `sampling`)."""
        if self.frequency is not None:
            in_positives = self.frequency.probability(candidate_index)
        else:
            in_positives = expected_in_batch(rows(self.label_probability, candidate_index), batch_size)
        return expected_count(in_positives, rows(self.negative_probability, candidate_index),
                              self.config.num_sampled_negatives)

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        query = self.user_tower(features)
        batch_size = tf.shape(query)[0]
        positive_index = tf.cast(features["video_id"], tf.int64)
        if training and self.frequency is not None:
            self.frequency.update(positive_index)
        candidate_index = positive_index
        if self.config.num_sampled_negatives > 0:
            # Extra negatives from the background distribution, shared by the whole batch.
            sampled = self.negatives.sample(self.config.num_sampled_negatives)
            candidate_index = tf.concat([positive_index, sampled], axis=0)
        candidates = self.embeddings.video.embedding(candidate_index)
        if self.config.l2_normalize:
            candidates = tf.math.l2_normalize(candidates, axis=-1)
        q = None
        if self.config.log_q_correction:
            q = per_draw_probability(self.sampling_probability(candidate_index, batch_size), batch_size,
                                     self.config.num_sampled_negatives)
        if not training and self.topk is not None:
            # Scored against the whole corpus, for the positives only (not the sampled negatives).
            self.topk.update_state(query, candidates[:batch_size], true_candidate_ids=positive_index)
        return self.task(
            query,
            candidates,
            candidate_sampling_probability=q,
            candidate_ids=candidate_index,
            compute_metrics=False,
        )


def candidate_features(embeddings: FeatureEmbeddings) -> tuple[str, ...]:
    """What the candidate generator reads of a retrieval example, in training and validation:
    the user tower's inputs (the user fields the embeddings hold) and the label."""
    return ("watch_history", "search_tokens", *embeddings.user_fields, "age", "example_age_s", "video_id")
