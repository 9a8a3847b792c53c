"""Serving: one graph from a raw request to ranked videos (paper Figure 2).

`TwoStageRecommender` composes the trained models: the user tower gives the user vector, ScaNN
retrieves the top-N videos by dot product (sublinear in the corpus), each candidate's ranking
features are derived inside the graph from the request (time since the user last watched its
topic, how often it was shown lately, its age), the ranker scores them, and the top-K by expected
watch time come out. No preprocessing happens outside the graph.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_youtube.candidate import CandidateGenerator
from tfrs_youtube.data.examples import IMPRESSION_WINDOW_S, NEVER_WATCHED_S
from tfrs_youtube.index import scann_settings
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


@dataclasses.dataclass
class ServingConfig:
    """How the served chain is sized.

    Args:
      num_candidates: N, videos retrieved by ScaNN for the ranker.
      k: K, videos returned.
      num_leaves: ScaNN partitions (None: about sqrt of the corpus).
      leaves_to_search: partitions searched per query (None: a tenth of the leaves, at least 8).
      reorder: candidates re-scored exactly after the quantised search.
    """

    num_candidates: int = 200
    k: int = 10
    num_leaves: int | None = None
    leaves_to_search: int | None = None
    reorder: int | None = None


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
                 config: ServingConfig | None = None):
        super().__init__(name="two_stage_recommender")
        self.config = config or ServingConfig()
        self.user_tower = candidate_generator.user_tower
        self.ranker = ranker
        self.catalog = VideoCatalog(videos)
        ids = videos["video_id"].astype(str).to_numpy()
        vectors = candidate_generator.video_vectors(tf.constant(ids))
        n = len(ids)
        if self.config.num_candidates > n:
            raise ValueError(f"num_candidates {self.config.num_candidates} exceeds the corpus ({n} videos)")
        settings = scann_settings(n, self.config.num_candidates, self.config.num_leaves,
                                  self.config.leaves_to_search, self.config.reorder)
        self.index = tfrs.layers.factorized_top_k.ScaNN(
            k=self.config.num_candidates,
            num_leaves=settings["num_leaves"],
            num_leaves_to_search=settings["leaves_to_search"],
            num_reordering_candidates=settings["reordering_candidates"],
            training_iterations=10,
        )
        self.index.index(vectors, tf.constant(ids))
        # The request: the standard inputs plus the extra user features the models were built with.
        self.extra_user_features = ranker.embeddings.extra_user_features
        self.request_signature = dict(REQUEST_SIGNATURE, **{
            name: tf.TensorSpec([None], tf.string, name=name) for name in self.extra_user_features})
        self.recommend = tf.function(self._recommend, input_signature=[self.request_signature])
        self.retrieve = tf.function(self._retrieve, input_signature=[self.request_signature])
        self.user_embedding = tf.function(self._user_embedding, input_signature=[self.request_signature])
        self.corpus_ids = ids  # numpy, not tracked: the index holds its own copy
        self.index_settings = settings

    def index_recall(self, user_vectors: np.ndarray, item_vectors: np.ndarray) -> float:
        """Share of the exact top-N (by dot product) that ScaNN's top-N finds, over these users."""
        _, approximate = self.index(tf.constant(user_vectors, tf.float32))
        exact = tf.math.top_k(tf.linalg.matmul(user_vectors, item_vectors, transpose_b=True),
                              k=self.config.num_candidates).indices.numpy()
        found = [len(set(a.astype(str)) & set(self.corpus_ids[e])) for a, e in zip(approximate.numpy(), exact)]
        return float(np.sum(found) / exact.size)

    def user_features(self, request: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The user tower's inputs from a request: a request stands for now, so example age 0."""
        batch = tf.shape(request["country"])[0]
        return {
            "watch_history": request["watch_history"],
            "search_tokens": request["search_tokens"],
            "country": request["country"],
            "language": request["language"],
            "gender": request["gender"],
            "device": request["device"],
            "age": request["age"],
            "example_age_s": tf.zeros([batch], tf.float32),
            **{name: request[name] for name in self.extra_user_features},
        }

    def ranking_features(self, request: dict[str, tf.Tensor], candidates: tf.Tensor,
                         retrieval_scores: tf.Tensor) -> dict[str, tf.Tensor]:
        """Each candidate's ranking features, [batch * N] rows, derived from the request."""
        n = tf.shape(candidates)[1]
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

        def per_candidate(x):  # [batch, ...] -> [batch * N, ...]
            return tf.repeat(x, n, axis=0)

        flat = lambda x: tf.reshape(x, [-1])  # noqa: E731
        return {
            "video_id": flat(candidates),
            "video_language": flat(self.catalog.language.lookup(candidates)),
            "watch_history": per_candidate(history),
            "search_tokens": per_candidate(request["search_tokens"]),
            "language": per_candidate(request["language"]),
            "country": per_candidate(request["country"]),
            "gender": per_candidate(request["gender"]),
            "device": per_candidate(request["device"]),
            "age": per_candidate(request["age"]),
            "time_since_topic_watch_s": flat(since_topic),
            "previous_impressions": flat(previous),
            "video_age_s": flat(tf.cast(video_age, tf.float32)),
            "retrieval_score": flat(retrieval_scores),
            **{name: per_candidate(request[name]) for name in self.extra_user_features},
        }

    def _recommend(self, request):
        """The whole chain; the `serving_default` signature."""
        user_vector = self.user_tower(self.user_features(request))
        retrieval_scores, candidates = self.index(user_vector)
        batch, n = tf.shape(candidates)[0], tf.shape(candidates)[1]
        logits = tf.reshape(self.ranker(self.ranking_features(request, candidates, retrieval_scores)), [batch, n])
        # Videos the user has already watched are not recommended again.
        already = tf.reduce_any(tf.equal(candidates[:, :, None], request["watch_history"][:, None, :]), axis=-1)
        logits = tf.where(already, tf.float32.min, logits)
        top_logits, top = tf.math.top_k(logits, k=self.config.k)
        return {
            "video_ids": tf.gather(candidates, top, batch_dims=1),
            "expected_watch_time_s": tf.exp(top_logits),
            "retrieval_scores": tf.gather(retrieval_scores, top, batch_dims=1),
        }

    def _retrieve(self, request):
        """Candidates only: ScaNN's top-N for the user vector."""
        scores, ids = self.index(self.user_tower(self.user_features(request)))
        return {"video_ids": ids, "retrieval_scores": scores}

    def _user_embedding(self, request):
        """The user vector u."""
        return {"user_embedding": self.user_tower(self.user_features(request))}

    def signatures(self) -> dict:
        return {
            "serving_default": self.recommend.get_concrete_function(),
            "retrieve": self.retrieve.get_concrete_function(),
            "user_embedding": self.user_embedding.get_concrete_function(),
        }
