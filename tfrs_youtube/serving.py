"""Serving: one graph from a raw request to ranked videos (paper Figure 2).

`TwoStageRecommender` composes the trained models: the request's ids become vocabulary indices
(`FeatureEmbeddings.encode`, the only step training does not repeat: its examples hold indices
already), the user tower gives the user vector, ScaNN retrieves the top-N videos by dot product
(sublinear in the corpus), and the ranker scores them with the call it was trained with: each
candidate's features (time since the user last watched its topic, how often it was shown in the
window, its age) come from the same `CandidateFeatures` layer that read its training pages.
The top-K by expected watch time come out. No preprocessing happens outside the graph.

Without a ranker, the same class serves the first stage alone: a retrieval-only model, for a
run that trained only candidate generation (MovieLens records no impressions, the ranker's
training signal). Its signatures are `retrieve` and `user_embedding`, with `serving_default`
the same function as `retrieve`; there is no `rank` and no whole chain.

Variants share everything but the index: `index="scann"` (ScaNN's ops, sublinear; needs a
TF Serving built with them), `index="ivf"` (`ivf.PartitionedIndex`: k-means partitions searched
with core ops, sublinear too) and `index="exact"` (TFRS's brute-force layer: MatMul and TopKV2).
The last two are portable: stock TF Serving runs them. The ScaNN model's portable twin uses the
partitioned index from `ServingConfig.ivf_min_corpus` videos up, exact search below.

Every signature checks its request first (`served_request.validate_request`) and refuses a
malformed one with an InvalidArgument naming the input; unknown ids are not errors.

No ranked answer holds a video uploaded after the request's `request_time` (`_ranked`). `retrieve`
takes no request time (the user tower reads none): it answers for now, from the catalog as it was
at export, every video of which was uploaded by then.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_youtube.candidate import NORMALIZED_EXAMPLE_AGE, CandidateGenerator
from tfrs_youtube.features.lookup import rows
from tfrs_youtube.index import DIMENSIONS_PER_BLOCK, TRAINING_ITERATIONS, scann_settings, store_in_leaf_order
from tfrs_youtube.ivf import PartitionedIndex, exact_top_k
from tfrs_youtube.ranking import Ranker
from tfrs_youtube.served_request import request_signature, validate_request

INDEXES = ("scann", "ivf", "exact")
PORTABLE_INDEXES = ("auto", "ivf", "exact")
CANDIDATES_INPUT = "candidate_ids"


@dataclasses.dataclass
class ServingConfig:
    """How the served chain is sized.

    Args:
      num_candidates: N, videos retrieved by ScaNN for the ranker.
      k: K, videos returned.
      num_leaves: ScaNN partitions (None: about sqrt of the corpus).
      leaves_to_search: partitions searched per query (None: `index.scann_settings`).
      reorder: candidates re-scored exactly after the quantised search (None: `index.scann_settings`).
      index: "scann", "ivf" or "exact" (the last two: core TensorFlow ops only).
      portable_index: the portable twin's index: "ivf", "exact", or "auto" (ivf from
        `ivf_min_corpus` videos up, where it is faster than exact search; see docs/serving_latency.md).
      ivf_partitions: the partitioned index's P (None: `ivf.default_partitions`).
      ivf_probes: partitions searched per query (None: chosen at export to reach `ivf_recall_target`
        of the exact top 100 on held-out user vectors).
      ivf_recall_target: see `ivf_probes`.
      ivf_min_corpus: see `portable_index`.
    """

    num_candidates: int = 200
    k: int = 10
    num_leaves: int | None = None
    leaves_to_search: int | None = None
    reorder: int | None = None
    index: str = "scann"
    portable_index: str = "auto"
    ivf_partitions: int | None = None
    ivf_probes: int | None = None
    ivf_recall_target: float = 0.95
    ivf_min_corpus: int = 50_000

    def __post_init__(self):
        if self.index not in INDEXES:
            raise ValueError(f"ServingConfig.index must be one of {INDEXES}, got {self.index!r}")
        if self.portable_index not in PORTABLE_INDEXES:
            raise ValueError(f"ServingConfig.portable_index must be one of {PORTABLE_INDEXES}, "
                             f"got {self.portable_index!r}")
        if not 0 < self.ivf_recall_target <= 1:
            raise ValueError(f"ServingConfig.ivf_recall_target must be in (0, 1], got {self.ivf_recall_target}")
        if not 0 < self.k <= self.num_candidates:
            raise ValueError(f"ServingConfig needs 0 < k <= num_candidates, got k={self.k}, "
                             f"num_candidates={self.num_candidates}")


class TwoStageRecommender(tf.Module):
    """Raw request -> ScaNN top-N -> ranker -> top-K videos with expected watch times.

    With `ranker=None` it is retrieval-only: candidate generation without the ranking stage, what
    a data set without impressions (MovieLens) can train. Retrieval and the user vector need only
    the candidate generator and the embeddings it shares, so the signatures are `retrieve` and
    `user_embedding`; `serving_default` is `retrieve` itself (same inputs, the user tower's; same
    outputs, the top-N `video_ids` and their `retrieval_scores` u·v), so that a TF Serving REST
    `:predict` naming no signature answers with the candidates. `rank`, the whole chain and
    `candidate_features` do not exist.

    Args:
      candidate_generator: a trained `CandidateGenerator`.
      ranker: a trained `Ranker` (sharing the candidate generator's embeddings), or None for a
        retrieval-only model.
      config: a `ServingConfig`.
      corpus_ids, video_vectors: the corpus to retrieve from and its vectors; by default the
        video table's vocabulary and the candidate generator's vectors of it (a corpus extended
        beyond the trained table gives both; its extra ids are unknown videos to the ranker).
      index_queries: user vectors that the partitioned index chooses its number of probes on
        (`index="ivf"` only; without them video vectors stand in, and the metadata says so).
    """

    def __init__(self, candidate_generator: CandidateGenerator, ranker: Ranker | None,
                 config: ServingConfig | None = None, corpus_ids: np.ndarray | None = None,
                 video_vectors: np.ndarray | tf.Tensor | None = None, index_queries: np.ndarray | None = None):
        super().__init__(name="two_stage_recommender")
        self.config = config or ServingConfig()
        # Not tracked as an attribute: the generator also holds its validation dataset (for
        # FactorizedTopK), which a SavedModel cannot and need not contain. The video table it
        # reads is `self.embeddings`' (shared), so the export has it anyway.
        self._video_vectors = candidate_generator.video_vectors
        self.user_tower = candidate_generator.user_tower
        # One object either way: the ranker is built on the candidate generator's embeddings.
        self.embeddings = candidate_generator.embeddings if ranker is None else ranker.embeddings
        self._normalized_example_age = tf.constant(
            self.embeddings.normalized("example_age_s", tf.zeros([1])).numpy())
        self.ranker = ranker
        vocabulary = self.embeddings.video.vocabulary
        ids = np.asarray(vocabulary if corpus_ids is None else corpus_ids).astype(str)
        if video_vectors is None:
            index = self.embeddings.video.indices(tf.constant(ids)) if corpus_ids is not None else tf.range(
                1, len(ids) + 1, dtype=tf.int64)
            vectors = candidate_generator.video_vectors(index)
        else:
            vectors = tf.constant(video_vectors, tf.float32)
        n = len(ids)
        if vectors.shape[0] != n:
            raise ValueError(f"video_vectors has {vectors.shape[0]} rows for {n} videos")
        if self.config.num_candidates > n:
            raise ValueError(f"num_candidates {self.config.num_candidates} exceeds the corpus ({n} videos)")
        self._vectors = vectors  # kept (untracked) to build the portable twin without recomputing
        self._twin = lambda twin_config, queries: TwoStageRecommender(
            candidate_generator, ranker, twin_config, ids, video_vectors=self._vectors, index_queries=queries)
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
        elif self.config.index == "ivf":
            self.index = PartitionedIndex(k=self.config.num_candidates, num_partitions=self.config.ivf_partitions,
                                          num_probes=self.config.ivf_probes,
                                          recall_target=self.config.ivf_recall_target)
        else:
            settings = {"exact": True}
            self.index = tfrs.layers.factorized_top_k.BruteForce(k=self.config.num_candidates)
        if self.config.index == "ivf":
            self.index.index(vectors, tf.constant(ids), queries=index_queries)
            settings = dict(self.index.settings, ivf=True)
        else:
            self.index.index(vectors, tf.constant(ids))
        if self.config.index == "scann":
            store_in_leaf_order(self.index)  # before any search: see its docstring
        # The request: the contract's histories, the user fields the models were built with.
        self.contract = self.embeddings.contract
        self.request_signature = request_signature(self.embeddings.user_fields)
        self.user_signature = {name: self.request_signature[name] for name in self.user_tower.request_inputs()}
        self.retrieve = tf.function(self._retrieve, input_signature=[self.user_signature])
        self.user_embedding = tf.function(self._user_embedding, input_signature=[self.user_signature])
        if ranker is not None:
            # Only with a ranker: a function saved with the module is traced at export, and these
            # call the ranker (or, for `candidate_features`, read the features only it uses).
            self.rank_signature = dict(self.request_signature, **{
                CANDIDATES_INPUT: tf.TensorSpec([None, None], tf.string, name=CANDIDATES_INPUT)})
            self.recommend = tf.function(self._recommend, input_signature=[self.request_signature])
            self.rank = tf.function(self._rank, input_signature=[self.rank_signature])
            # Not a signature: the ranking features the served graph derives for the request's
            # candidates, for checking them against training's (tests/test_parity.py).
            self.candidate_features = tf.function(self._candidate_features, input_signature=[self.rank_signature])
        self.corpus_ids = ids  # numpy, not tracked: the index holds its own copy
        self.index_settings = settings

    @property
    def retrieval_only(self) -> bool:
        """Whether this is the first stage alone (no ranker): `serving_default` is `retrieve`."""
        return self.ranker is None

    @property
    def serving_signature(self) -> dict[str, tf.TensorSpec]:
        """The inputs `serving_default` takes: the whole request, or the user's inputs when
        retrieval-only."""
        return self.user_signature if self.retrieval_only else self.request_signature

    def portable_index(self) -> str:
        """The index the portable twin uses: "ivf" or "exact" (see `ServingConfig.portable_index`)."""
        if self.config.index != "scann":
            return self.config.index
        if self.config.portable_index == "auto":
            return "ivf" if len(self.corpus_ids) >= self.config.ivf_min_corpus else "exact"
        return self.config.portable_index

    def portable(self, index_queries: np.ndarray | None = None) -> "TwoStageRecommender":
        """The twin with the same models, corpus and signatures, searched with core ops only
        (`portable_index`); `index_queries` are user vectors to tune its partitioned index on."""
        return self._twin(dataclasses.replace(self.config, index=self.portable_index()), index_queries)

    def index_recall(self, user_vectors: np.ndarray, item_vectors: np.ndarray | None = None, k: int | None = None
                     ) -> float:
        """Share of the exact top-k (by dot product; k defaults to N) that the index's top-k finds."""
        k = k or self.config.num_candidates
        item_vectors = self._vectors if item_vectors is None else item_vectors
        user_vectors = np.asarray(user_vectors, np.float32)
        found = 0
        # In chunks: a batched partitioned search holds [batch, probed videos, d] at once.
        for start in range(0, len(user_vectors), 32):
            chunk = tf.constant(user_vectors[start:start + 32])
            _, approximate = self.index(chunk, k=k)
            exact = exact_top_k(chunk, item_vectors, k)
            found += sum(len(set(a.astype(str)) & set(self.corpus_ids[e])) for a, e in zip(approximate.numpy(), exact))
        return float(found / (len(user_vectors) * k))

    def user_request(self, request: dict) -> dict:
        """The part of a whole request that `retrieve` and `user_embedding` take."""
        return {name: request[name] for name in self.user_signature}

    def serving_request(self, request: dict) -> dict:
        """The part of a whole request that `serving_default` takes (e.g. for warm-up records)."""
        return {name: request[name] for name in self.serving_signature}

    def user_features(self, encoded: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The user tower's inputs from an encoded request: a request stands for now, so example
        age 0."""
        batch = tf.shape(encoded["watch_history"])[0]
        return {
            **{name: encoded[name] for name in self.user_signature},
            # At serving every request is "now": example age 0, whose normalised features are
            # constant (computed once in __init__ rather than ~20 ops per request).
            NORMALIZED_EXAMPLE_AGE: tf.broadcast_to(self._normalized_example_age,
                                                    [batch, self._normalized_example_age.shape[-1]]),
        }

    def _ranked(self, request, encoded, candidates, retrieval_scores, k):
        """Ranks [batch, n] candidates by expected watch time; returns the top k of them.

        Already-watched candidates, "" padding and ids outside the served catalog (nothing is
        known of them: no upload time, topic or language to score them by) are never ranked above
        a real one and get an expected watch time of 0 (with `rank` they are kept, last; the full
        chain drops them).

        A video uploaded after the request's `request_time` is never served: it is ranked last
        like those, and its id comes back as "" (padding) with a retrieval score of 0, so neither
        `serving_default` nor `rank` ever answers with a video from the request's future. The
        index's top-N is searched over the whole catalog, so a request early in the catalog's
        history may get fewer than K real videos (the rest "").
        """
        n = tf.shape(candidates)[1]
        index = self.embeddings.video.indices(candidates)
        logits = self.ranker(dict(encoded, video_id=index, retrieval_score=retrieval_scores))
        already = tf.reduce_any(tf.equal(candidates[:, :, None], request["watch_history"][:, None, :]), axis=-1)
        upload_time = rows(self.embeddings.catalog.upload_time, index)
        future = (index > 0) & (upload_time > tf.cast(request["request_time"], tf.float64)[:, None])
        excluded = already | tf.equal(index, 0) | future
        logits = tf.where(excluded, tf.float32.min, logits)
        # An empty batch retrieves no columns: answer it with empty lists rather than fail.
        top_logits, top = tf.math.top_k(logits, k=tf.minimum(k, n))
        top_future = tf.gather(future, top, batch_dims=1)
        return {
            "video_ids": tf.where(top_future, "", tf.gather(candidates, top, batch_dims=1)),
            "expected_watch_time_s": tf.where(tf.gather(excluded, top, batch_dims=1), 0.0, tf.exp(top_logits)),
            "retrieval_scores": tf.where(top_future, 0.0, tf.gather(retrieval_scores, top, batch_dims=1)),
        }

    def _recommend(self, request):
        """The whole chain; the `serving_default` signature."""
        request = validate_request(request, self.request_signature)
        encoded = self.embeddings.encode(request)
        user_vector = self.user_tower(self.user_features(encoded))
        retrieval_scores, candidates = self.index(user_vector)
        return self._ranked(request, encoded, candidates, retrieval_scores, self.config.k)

    def _retrieve(self, request):
        """Candidates only: the index's top-N for the user vector (the user tower's inputs only)."""
        request = validate_request(request, self.user_signature)
        scores, ids = self.index(self.user_tower(self.user_features(self.embeddings.encode(request))))
        return {"video_ids": ids, "retrieval_scores": scores}

    def _rank(self, request):
        """Ranks the request's `candidate_ids` ([batch, M], "" pads) by expected watch time; all M
        come back, best first, with their retrieval scores u·v (0 for unknown ids)."""
        request = validate_request(request, self.rank_signature)
        encoded = self.embeddings.encode(request)
        candidates = request[CANDIDATES_INPUT]
        user_vector = self.user_tower(self.user_features(encoded))
        retrieval_scores = tf.einsum("bd,bmd->bm", user_vector, self._video_vectors(encoded[CANDIDATES_INPUT]))
        return self._ranked(request, encoded, candidates, retrieval_scores, tf.shape(candidates)[1])

    def _user_embedding(self, request):
        """The user vector u (the user tower's inputs only)."""
        request = validate_request(request, self.user_signature)
        return {"user_embedding": self.user_tower(self.user_features(self.embeddings.encode(request)))}

    def _candidate_features(self, request):
        """The ranker's derived features of the request's `candidate_ids`, [batch, M] each."""
        request = validate_request(request, self.rank_signature)
        encoded = self.embeddings.encode(request)
        return self.embeddings.candidate_features(encoded, encoded[CANDIDATES_INPUT])

    def signatures(self) -> dict:
        """The SavedModel's signatures by name (see the class docstring for a retrieval-only one)."""
        retrieve = self.retrieve.get_concrete_function()
        if self.retrieval_only:
            return {"serving_default": retrieve, "retrieve": retrieve,
                    "user_embedding": self.user_embedding.get_concrete_function()}
        return {
            "serving_default": self.recommend.get_concrete_function(),
            "retrieve": retrieve,
            "rank": self.rank.get_concrete_function(),
            "user_embedding": self.user_embedding.get_concrete_function(),
        }
