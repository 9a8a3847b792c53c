"""Serving: one graph from a raw request to ranked videos (paper Figure 2).

`TwoStageRecommender` composes the trained models: the user tower gives the user vector, ScaNN
retrieves the top-N videos by dot product (sublinear in the corpus), each candidate's ranking
features are derived inside the graph from the request (time since the user last watched its
topic, how often it was shown lately, its age), the ranker scores them, and the top-K by expected
watch time come out. No preprocessing happens outside the graph.

Two variants share everything but the index: `index="scann"` (ScaNN's ops, sublinear; needs a
TF Serving built with them) and `index="exact"`, the portable twin (TFRS's brute-force layer:
MatMul and TopKV2 only, servable by stock TF Serving). Every signature checks its request first
and refuses, with an InvalidArgument naming the input, mismatched batch sizes, histories whose
ages do not line up, and NaN, infinite or negative numbers; unknown ids are not errors (they
embed to zero, as out-of-vocabulary ids do in training).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_youtube.candidate import NORMALIZED_EXAMPLE_AGE, CandidateGenerator
from tfrs_youtube.data.examples import IMPRESSION_WINDOW_S, NEVER_WATCHED_S
from tfrs_youtube.index import DIMENSIONS_PER_BLOCK, TRAINING_ITERATIONS, scann_settings, store_in_leaf_order
from tfrs_youtube.ranking import Ranker

# The request: batch dimension first; histories padded with "" (their ages then ignored).
REQUEST_SIGNATURE = {
    "watch_history": tf.TensorSpec([None, None], tf.string, name="watch_history"),
    "watch_ages_s": tf.TensorSpec([None, None], tf.float32, name="watch_ages_s"),
    "search_tokens": tf.TensorSpec([None, None], tf.string, name="search_tokens"),
    "impression_history": tf.TensorSpec([None, None], tf.string, name="impression_history"),
    "impression_ages_s": tf.TensorSpec([None, None], tf.float32, name="impression_ages_s"),
    "country": tf.TensorSpec([None], tf.string, name="country"),
    "language": tf.TensorSpec([None], tf.string, name="language"),
    "gender": tf.TensorSpec([None], tf.string, name="gender"),
    "device": tf.TensorSpec([None], tf.string, name="device"),
    "age": tf.TensorSpec([None], tf.float32, name="age"),
    "request_time": tf.TensorSpec([None], tf.float64, name="request_time"),
}


# The inputs the user tower reads: all that `retrieve` and `user_embedding` take. (Every input a
# signature takes costs something per request, read or not: at 1M videos, taking the whole
# request made `retrieve` about 8% slower.)
USER_INPUTS = ("watch_history", "search_tokens", "country", "language", "gender", "device", "age")

INDEXES = ("scann", "exact")
# Inputs that are numbers: finite, and (ages, times) never negative.
NON_NEGATIVE_INPUTS = ("watch_ages_s", "impression_ages_s", "age", "request_time")
# History inputs whose ages must line up with them, element by element.
AGED_HISTORIES = {"watch_ages_s": "watch_history", "impression_ages_s": "impression_history"}
CANDIDATES_INPUT = "candidate_ids"


def validate_request(request: dict[str, tf.Tensor], specs: dict[str, tf.TensorSpec]) -> dict[str, tf.Tensor]:
    """The request, once every input has its rank, all agree on the batch size and every number
    is sane.

    Failing checks raise InvalidArgumentError naming the input, inside the graph, so TF Serving
    answers them as INVALID_ARGUMENT instead of computing on garbage. (A loaded signature checks
    dtypes and names by itself, but not shapes: a [batch] history would otherwise broadcast.)
    """
    # (Assertion messages name inputs unquoted: TensorFlow would print quotes backslash-escaped.)
    names = sorted(request)
    reference = "country" if "country" in request else names[0]
    # EnsureShape runs in the graph and names the tensor ("Shape of tensor age [2,3] is not
    # compatible with expected shape [?]"); an assert on tf.rank would be constant-folded away,
    # since the placeholders' ranks are known statically.
    request = {name: tf.ensure_shape(request[name], specs[name].shape, name=name) for name in names}
    # Every check is one boolean and a single Assert reports the first that fails, by its message:
    # at batch 1 the executor's per-op overhead, not the arithmetic, is what a check costs, and the
    # checks sit on the critical path (everything waits for them).
    # Every shape in one vector (one ShapeN per dtype, one concat): the ranks are known here, so
    # each input's batch size and every history's shape sit at fixed positions in it.
    groups = {}
    for name in names:
        groups.setdefault(request[name].dtype, []).append(name)
    ordered = [name for group in groups.values() for name in group]
    shapes = tf.concat([shape for group in groups.values()
                        for shape in tf.shape_n([request[name] for name in group])], axis=0)
    position, offset = {}, 0
    for name in ordered:
        position[name] = offset
        offset += request[name].shape.rank
    batch_sizes = tf.gather(shapes, [position[name] for name in names])
    conditions = [tf.equal(batch_sizes, batch_sizes[names.index(reference)])]
    messages = [f"request input {name}: its batch size differs from that of {reference}" for name in names]
    for ages, history in AGED_HISTORIES.items():
        if ages in request:
            dims = lambda name: [position[name] + i for i in range(request[name].shape.rank)]  # noqa: E731
            same = tf.equal(tf.gather(shapes, dims(ages)), tf.gather(shapes, dims(history)))
            conditions.append(tf.reduce_all(same)[None])
            messages.append(f"request input {ages}: must have the shape of {history} (one age per entry)")
    for name in NON_NEGATIVE_INPUTS:
        if name in request:
            x = request[name]
            # NaN fails `x >= 0`; infinity fails `x < inf`.
            conditions.append(tf.reduce_all((x >= 0) & (x < np.inf))[None])
            messages.append(f"request input {name}: NaN, infinite or negative values")
    passed = tf.concat(conditions, axis=0)
    first_failure = tf.argmin(tf.cast(passed, tf.int32))
    check = tf.debugging.Assert(tf.reduce_all(passed), [tf.gather(tf.constant(messages), first_failure)])
    with tf.control_dependencies([check]):
        return {name: tf.identity(x) for name, x in request.items()}


@dataclasses.dataclass
class ServingConfig:
    """How the served chain is sized.

    Args:
      num_candidates: N, videos retrieved by ScaNN for the ranker.
      k: K, videos returned.
      num_leaves: ScaNN partitions (None: about sqrt of the corpus).
      leaves_to_search: partitions searched per query (None: `index.scann_settings`).
      reorder: candidates re-scored exactly after the quantised search (None: `index.scann_settings`).
      index: "scann" or "exact" (the portable twin: core TensorFlow ops only).
    """

    num_candidates: int = 200
    k: int = 10
    num_leaves: int | None = None
    leaves_to_search: int | None = None
    reorder: int | None = None
    index: str = "scann"

    def __post_init__(self):
        if self.index not in INDEXES:
            raise ValueError(f"ServingConfig.index must be one of {INDEXES}, got {self.index!r}")
        if not 0 < self.k <= self.num_candidates:
            raise ValueError(f"ServingConfig needs 0 < k <= num_candidates, got k={self.k}, "
                             f"num_candidates={self.num_candidates}")


class VideoCatalog(tf.Module):
    """Per-video facts the ranker needs at serving (topic, language, upload time), as lookups."""

    def __init__(self, videos: pd.DataFrame):
        super().__init__(name="video_catalog")
        ids = tf.constant(videos["video_id"].astype(str).to_numpy())

        def table(values, default):
            return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(ids, values), default)

        self.topic = table(tf.constant(videos["topic"].astype(str).to_numpy()), "")
        self.language = table(tf.constant(videos["language"].astype(str).to_numpy()), "")
        self.upload_time = table(tf.constant(videos["upload_time"].to_numpy(np.float64)), tf.constant(0.0, tf.float64))


class TwoStageRecommender(tf.Module):
    """Raw request -> ScaNN top-N -> ranker -> top-K videos with expected watch times.

    Args:
      candidate_generator: a trained `CandidateGenerator`.
      ranker: a trained `Ranker` (sharing the candidate generator's embeddings).
      videos: the videos table (the corpus and its catalog facts).
      config: a `ServingConfig`.
    """

    def __init__(self, candidate_generator: CandidateGenerator, ranker: Ranker, videos: pd.DataFrame,
                 config: ServingConfig | None = None, video_vectors: np.ndarray | tf.Tensor | None = None):
        super().__init__(name="two_stage_recommender")
        self.config = config or ServingConfig()
        # Not tracked as an attribute: the generator also holds its validation dataset (for
        # FactorizedTopK), which a SavedModel cannot and need not contain. The video table it
        # reads is the ranker's (shared), so the export has it anyway.
        self._video_vectors = candidate_generator.video_vectors
        self._twin = lambda twin_config: TwoStageRecommender(candidate_generator, ranker, videos, twin_config,
                                                             video_vectors=self._vectors)
        self.user_tower = candidate_generator.user_tower
        self._normalized_example_age = tf.constant(
            self.user_tower.embeddings.normalized("example_age_s", tf.zeros([1])).numpy())
        self.ranker = ranker
        self.catalog = VideoCatalog(videos)
        ids = videos["video_id"].astype(str).to_numpy()
        # The corpus' vectors: the candidate generator's, unless given (e.g. a corpus extended
        # beyond the trained table, whose extra ids the ranker sees as out of vocabulary).
        vectors = candidate_generator.video_vectors(tf.constant(ids)) if video_vectors is None else tf.constant(
            video_vectors, tf.float32)
        n = len(ids)
        if vectors.shape[0] != n:
            raise ValueError(f"video_vectors has {vectors.shape[0]} rows for {n} videos")
        if self.config.num_candidates > n:
            raise ValueError(f"num_candidates {self.config.num_candidates} exceeds the corpus ({n} videos)")
        self._vectors = vectors  # kept (untracked) to build the portable twin without recomputing
        if self.config.index == "scann":
            settings = scann_settings(n, self.config.num_candidates, self.config.num_leaves,
                                      self.config.leaves_to_search, self.config.reorder)
            self.index = tfrs.layers.factorized_top_k.ScaNN(
                k=self.config.num_candidates,
                num_leaves=settings["num_leaves"],
                num_leaves_to_search=settings["leaves_to_search"],
                num_reordering_candidates=settings["reordering_candidates"],
                training_iterations=TRAINING_ITERATIONS,
                dimensions_per_block=DIMENSIONS_PER_BLOCK,
            )
        else:
            settings = {"exact": True}
            self.index = tfrs.layers.factorized_top_k.BruteForce(k=self.config.num_candidates)
        self.index.index(vectors, tf.constant(ids))
        if self.config.index == "scann":
            store_in_leaf_order(self.index)  # before any search: see its docstring
        # The request: the standard inputs plus the extra user features the models were built with.
        self.extra_user_features = ranker.embeddings.extra_user_features
        self.request_signature = dict(REQUEST_SIGNATURE, **{
            name: tf.TensorSpec([None], tf.string, name=name) for name in self.extra_user_features})
        self.rank_signature = dict(self.request_signature, **{
            CANDIDATES_INPUT: tf.TensorSpec([None, None], tf.string, name=CANDIDATES_INPUT)})
        self.user_signature = {name: self.request_signature[name]
                               for name in USER_INPUTS + tuple(self.extra_user_features)}
        self.recommend = tf.function(self._recommend, input_signature=[self.request_signature])
        self.retrieve = tf.function(self._retrieve, input_signature=[self.user_signature])
        self.rank = tf.function(self._rank, input_signature=[self.rank_signature])
        self.user_embedding = tf.function(self._user_embedding, input_signature=[self.user_signature])
        self.corpus_ids = ids  # numpy, not tracked: the index holds its own copy
        self.index_settings = settings

    def portable(self) -> "TwoStageRecommender":
        """The twin with the same models, corpus and signatures, searched exactly with core ops."""
        return self._twin(dataclasses.replace(self.config, index="exact"))

    def index_recall(self, user_vectors: np.ndarray, item_vectors: np.ndarray | None = None, k: int | None = None
                     ) -> float:
        """Share of the exact top-k (by dot product; k defaults to N) that the index's top-k finds."""
        k = k or self.config.num_candidates
        item_vectors = self._vectors if item_vectors is None else item_vectors
        user_vectors = tf.constant(user_vectors, tf.float32)
        _, approximate = self.index(user_vectors, k=k)
        exact = tf.math.top_k(tf.linalg.matmul(user_vectors, item_vectors, transpose_b=True), k=k).indices.numpy()
        found = [len(set(a.astype(str)) & set(self.corpus_ids[e])) for a, e in zip(approximate.numpy(), exact)]
        return float(np.sum(found) / exact.size)

    def user_request(self, request: dict) -> dict:
        """The part of a whole request that `retrieve` and `user_embedding` take."""
        return {name: request[name] for name in self.user_signature}

    def user_features(self, request: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The user tower's inputs from a request: a request stands for now, so example age 0."""
        batch = tf.shape(request["country"])[0]
        return {
            **self.user_request(request),
            # At serving every request is "now": example age 0, whose normalised features are
            # constant (computed once in __init__ rather than ~20 ops per request).
            NORMALIZED_EXAMPLE_AGE: tf.broadcast_to(self._normalized_example_age,
                                                    [batch, self._normalized_example_age.shape[-1]]),
        }

    def impression_features(self, request: dict[str, tf.Tensor], candidates: tf.Tensor,
                            retrieval_scores: tf.Tensor) -> dict[str, tf.Tensor]:
        """Each candidate's own ranking features, [batch * N] rows, derived from the request (the
        user's features stay one row per request: `Ranker.score_candidates`)."""
        history = request["watch_history"]
        watched = history != ""
        # Time since the user last watched each candidate's topic, within the given history.
        same_topic = tf.equal(self.catalog.topic.lookup(candidates)[:, :, None],
                              self.catalog.topic.lookup(history)[:, None, :]) & watched[:, None, :]
        ages = tf.where(same_topic, request["watch_ages_s"][:, None, :], np.inf)
        since_topic = tf.reduce_min(ages, axis=-1)
        since_topic = tf.where(tf.math.is_finite(since_topic), since_topic, NEVER_WATCHED_S)
        # Impressions of the candidate in the recent window.
        shown = tf.equal(candidates[:, :, None], request["impression_history"][:, None, :]) & (
            request["impression_ages_s"][:, None, :] < IMPRESSION_WINDOW_S)
        previous = tf.reduce_sum(tf.cast(shown, tf.float32), axis=-1)
        video_age = tf.maximum(request["request_time"][:, None] - self.catalog.upload_time.lookup(candidates), 0.0)

        flat = lambda x: tf.reshape(x, [-1])  # noqa: E731
        return {
            "video_id": flat(candidates),
            "video_language": flat(self.catalog.language.lookup(candidates)),
            "time_since_topic_watch_s": flat(since_topic),
            "previous_impressions": flat(previous),
            "video_age_s": flat(tf.cast(video_age, tf.float32)),
            "retrieval_score": flat(retrieval_scores),
        }

    def _ranked(self, request, candidates, retrieval_scores, k):
        """Ranks [batch, n] candidates by expected watch time; returns the top k of them.

        Already-watched candidates and "" padding are never ranked above a real one and get an
        expected watch time of 0 (with `rank` they are kept, last; the full chain drops them).
        """
        batch, n = tf.shape(candidates)[0], tf.shape(candidates)[1]
        logits = self.ranker.score_candidates(request, self.impression_features(request, candidates, retrieval_scores),
                                              n)
        logits = tf.reshape(logits, [batch, n])
        already = tf.reduce_any(tf.equal(candidates[:, :, None], request["watch_history"][:, None, :]), axis=-1)
        excluded = already | tf.equal(candidates, "")
        logits = tf.where(excluded, tf.float32.min, logits)
        # An empty batch retrieves no columns: answer it with empty lists rather than fail.
        top_logits, top = tf.math.top_k(logits, k=tf.minimum(k, n))
        return {
            "video_ids": tf.gather(candidates, top, batch_dims=1),
            "expected_watch_time_s": tf.where(tf.gather(excluded, top, batch_dims=1), 0.0, tf.exp(top_logits)),
            "retrieval_scores": tf.gather(retrieval_scores, top, batch_dims=1),
        }

    def _recommend(self, request):
        """The whole chain; the `serving_default` signature."""
        request = validate_request(request, self.request_signature)
        user_vector = self.user_tower(self.user_features(request))
        retrieval_scores, candidates = self.index(user_vector)
        return self._ranked(request, candidates, retrieval_scores, self.config.k)

    def _retrieve(self, request):
        """Candidates only: the index's top-N for the user vector (the user tower's inputs only)."""
        request = validate_request(request, self.user_signature)
        scores, ids = self.index(self.user_tower(self.user_features(request)))
        return {"video_ids": ids, "retrieval_scores": scores}

    def _rank(self, request):
        """Ranks the request's `candidate_ids` ([batch, M], "" pads) by expected watch time; all M
        come back, best first, with their retrieval scores u·v (0 for unknown ids)."""
        request = validate_request(request, self.rank_signature)
        candidates = request[CANDIDATES_INPUT]
        user_vector = self.user_tower(self.user_features(request))
        vectors = self._video_vectors(candidates)
        retrieval_scores = tf.einsum("bd,bmd->bm", user_vector, vectors)
        return self._ranked(request, candidates, retrieval_scores, tf.shape(candidates)[1])

    def _user_embedding(self, request):
        """The user vector u (the user tower's inputs only)."""
        request = validate_request(request, self.user_signature)
        return {"user_embedding": self.user_tower(self.user_features(request))}

    def signatures(self) -> dict:
        return {
            "serving_default": self.recommend.get_concrete_function(),
            "retrieve": self.retrieve.get_concrete_function(),
            "rank": self.rank.get_concrete_function(),
            "user_embedding": self.user_embedding.get_concrete_function(),
        }
