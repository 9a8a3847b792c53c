"""A partitioned (inverted-file) index made of core TensorFlow ops: sublinear retrieval that stock
TF Serving can run.

The candidate generator's serving problem is maximum inner-product search: the N videos whose
vectors v score highest against the user vector u. Exact search reads the whole corpus per
request; ScaNN reads a few partitions of it, but its ops are not in stock TF Serving. This index
does what ScaNN's first stage does with ops every TensorFlow has: k-means splits the corpus into
P partitions, a request scores u against the P partition means, and only the L best partitions'
videos are scored exactly. L is chosen at export, on held-out user vectors, as the smallest
number of probes that finds a target share (default 95%) of the exact top 100.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

# Probing more partitions than this at batch 1 would unroll too many slices into the graph: the
# batched gather path answers instead (the same result, a little slower per candidate).
MAX_UNROLLED_PROBES = 256
KMEANS_ITERATIONS = 10
# The k-means is trained on a sample of this many points per partition (at least
# MIN_KMEANS_SAMPLE, at most the corpus); the whole corpus is then assigned.
KMEANS_SAMPLE_PER_PARTITION = 40
MIN_KMEANS_SAMPLE = 100_000
_CHUNK = 32_768  # rows per matrix product when assigning the corpus or scoring it exactly


def default_partitions(num_items: int) -> int:
    """About 4 sqrt(N) partitions, and at least 16 videos in each on average.

    More partitions make each probe cheaper and the probed share smaller at the same recall; each
    probe also costs a fixed few microseconds of graph overhead, so very many tiny partitions lose.
    """
    return int(max(1, min(round(4 * math.sqrt(num_items)), num_items // 16)))


def _unit(x: tf.Tensor) -> tf.Tensor:
    return tf.math.l2_normalize(x, axis=-1)


def spherical_kmeans(vectors: np.ndarray, num_partitions: int, seed: int = 0,
                     iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """Each vector's partition: k-means on the unit sphere, trained on a seeded sample.

    Why spherical: under inner product, plain k-means puts the long vectors (popular videos) in
    a few huge partitions; clustering directions keeps the lists balanced, so every probe costs
    about the same.
    """
    n = len(vectors)
    rng = np.random.default_rng(seed)
    sample_size = min(n, max(MIN_KMEANS_SAMPLE, KMEANS_SAMPLE_PER_PARTITION * num_partitions))
    sample = _unit(tf.constant(vectors[np.sort(rng.choice(n, sample_size, replace=False))]))
    centroids = tf.gather(sample, rng.choice(sample_size, num_partitions, replace=False))
    for _ in range(iterations):
        assignment = _assign(sample, centroids)
        sums = tf.math.unsorted_segment_sum(sample, assignment, num_partitions)
        counts = tf.math.bincount(assignment, minlength=num_partitions)
        # An empty partition restarts at a random sample point rather than staying empty.
        restart = tf.gather(sample, rng.integers(0, sample_size, num_partitions))
        centroids = _unit(tf.where((counts > 0)[:, None], sums, restart))
    return _assign(_unit(tf.constant(vectors)), centroids).numpy()


def _assign(unit_vectors: tf.Tensor, centroids: tf.Tensor) -> tf.Tensor:
    parts = [tf.argmax(tf.matmul(unit_vectors[i:i + _CHUNK], centroids, transpose_b=True), axis=1,
                       output_type=tf.int32) for i in range(0, int(unit_vectors.shape[0]), _CHUNK)]
    return tf.concat(parts, axis=0)


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """Rows of the exact top-k by dot product, [queries, k] (the reference for recall)."""
    queries, vectors = tf.constant(queries, tf.float32), tf.constant(vectors, tf.float32)
    k = min(k, int(vectors.shape[0]))
    scores, rows = [], []
    for start in range(0, int(vectors.shape[0]), _CHUNK * 8):
        block = vectors[start:start + _CHUNK * 8]
        s, r = tf.math.top_k(tf.matmul(queries, block, transpose_b=True), k=min(k, int(block.shape[0])))
        scores.append(s)
        rows.append(r + start)
    best = tf.math.top_k(tf.concat(scores, axis=1), k=k).indices
    return tf.gather(tf.concat(rows, axis=1), best, batch_dims=1).numpy()


class PartitionedIndex(tfrs.layers.factorized_top_k.TopK):
    """Inverted-file retrieval with core ops: k-means partitions, L probed per query, exact scores.

    Storage: the corpus sorted partition by partition as one [N, d] table, the partitions' start
    offsets [P + 1] and means [P, d], and the ids in the same order. No padding: lists vary in
    length (the largest a few times the mean), and a dense [P, longest, d] layout would spend
    most of its memory and time on padding.

    Search: the L partitions whose means score highest against u, every video in them scored
    exactly, the top k returned. At batch 1 each probed partition is a zero-copy slice of the
    table and one MatMul (the common online case, and the fastest); larger batches gather the
    probed rows. When the probed partitions hold fewer than k videos the answer is padded with
    id "" and the lowest float score, as the ranker expects of padding.

    Args:
      k: default number of results.
      num_partitions: P (None: `default_partitions(N)`).
      num_probes: L (None: chosen at `index` from the queries given there, see `choose_probes`).
      recall_target: the share of the exact top `recall_k` that the chosen L must find.
      recall_k: the top that recall is measured on (100, or k if smaller).
      seed: the k-means seed.
    """

    def __init__(self, k: int = 10, num_partitions: int | None = None, num_probes: int | None = None,
                 recall_target: float = 0.95, recall_k: int = 100, seed: int = 0, name: str | None = None):
        super().__init__(k=k, name=name)
        if not 0 < recall_target <= 1:
            raise ValueError(f"recall_target must be in (0, 1], got {recall_target}")
        self._num_partitions, self._num_probes = num_partitions, num_probes
        self._recall_target, self._recall_k, self._seed = recall_target, recall_k, seed
        self.settings: dict = {}
        self._table = None

    def index(self, candidates: tf.Tensor, identifiers: tf.Tensor | None = None,
              queries: np.ndarray | None = None) -> "PartitionedIndex":
        """Partitions the candidates and chooses the number of probes.

        Args:
          candidates: [N, d] vectors.
          identifiers: [N] ids (default: row numbers).
          queries: user vectors to choose L on (half of them) and to measure the recall reached
            (the other half). Without them a sample of the candidates stands in for users, and the
            settings say so.
        """
        vectors = np.asarray(candidates, np.float32)
        if vectors.ndim != 2 or not len(vectors):
            raise ValueError(f"PartitionedIndex needs [N, d] candidates with N > 0, got shape {vectors.shape}")
        ids = tf.range(len(vectors), dtype=tf.int64) if identifiers is None else tf.convert_to_tensor(identifiers)
        if int(ids.shape[0]) != len(vectors):
            raise ValueError(f"{int(ids.shape[0])} identifiers for {len(vectors)} candidates")
        n = len(vectors)
        p = min(n, self._num_partitions or default_partitions(n))
        partition = spherical_kmeans(vectors, p, seed=self._seed)
        order = np.argsort(partition, kind="stable")
        counts = np.bincount(partition, minlength=p)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        means = tf.math.unsorted_segment_sum(vectors, partition, p) / np.maximum(counts, 1)[:, None].astype(np.float32)
        self._partition_of_row = partition
        self._vectors = vectors
        # Each tensor is only ever read densely (then sliced or gathered as a tensor): a variable
        # read by a resource gather switches to copy-on-read, and every later dense read of it
        # would copy the whole table.
        self._table = tf.Variable(vectors[order], trainable=False, name="partitioned_vectors")
        self._identifiers = tf.Variable(tf.gather(ids, order), trainable=False, name="partitioned_identifiers")
        self._offsets = tf.Variable(offsets, trainable=False, name="partition_offsets")
        self._means = tf.Variable(means, trainable=False, name="partition_means")
        self.settings = {"partitions": p, "largest_partition": int(counts.max()), "mean_partition": n / p}
        if self._num_probes:
            self.settings.update(probes=min(self._num_probes, p), probes_chosen_by="config")
        else:
            self.settings.update(self.choose_probes(queries))
        self._reset_tf_function_cache()
        return self

    @property
    def num_probes(self) -> int:
        return self.settings["probes"]

    def probe_recall(self, queries: np.ndarray, k: int | None = None, per_query: bool = False) -> np.ndarray:
        """recall[L - 1]: the share of the exact top k that probing the best L partitions finds,
        for L = 1..P, averaged over the queries (`per_query`: one such row per query).

        No search is run: an exact top-k video is found exactly when its partition is probed
        (scored exactly, it beats every probed video outside the top k), so the recall at L is the
        share of the top k whose partition ranks among the query's L best.
        """
        k = min(k or self._recall_k, len(self._vectors))
        queries = np.asarray(queries, np.float32)
        p = self.settings["partitions"]
        top = self._partition_of_row[exact_top_k(queries, self._vectors, k)]  # [q, k] partitions
        ranking = tf.argsort(tf.matmul(queries, self._means, transpose_b=True), axis=1, direction="DESCENDING")
        rank_of = tf.argsort(ranking, axis=1)  # the inverse permutation: partition -> its rank
        found_at = tf.gather(rank_of, top, batch_dims=1).numpy()  # the probe that finds each
        counts = np.zeros((len(queries), p))
        np.add.at(counts, (np.repeat(np.arange(len(queries)), k), found_at.ravel()), 1)
        rows = np.cumsum(counts, axis=1) / k
        return rows if per_query else rows.mean(axis=0)

    def choose_probes(self, queries: np.ndarray | None) -> dict:
        """The smallest L whose recall on half the queries reaches the target by a margin of one
        standard error (so that other users, too, more likely than not get the target), and the
        recall that L reaches on the other half (on all of them when there are fewer than 20)."""
        source = "user vectors"
        if queries is None or not len(queries):
            rng = np.random.default_rng(self._seed)
            queries = self._vectors[rng.choice(len(self._vectors), min(1000, len(self._vectors)), replace=False)]
            source = "video vectors (no user vectors were given)"
        queries = np.asarray(queries, np.float32)
        half = len(queries) // 2 if len(queries) >= 20 else len(queries)
        choose, measure = queries[:half], queries[half:] if len(queries) >= 20 else queries
        rows = self.probe_recall(choose, per_query=True)
        standard_error = rows.std(axis=0, ddof=1) / np.sqrt(len(rows)) if len(rows) > 1 else 0.0
        reaches = rows.mean(axis=0) - standard_error >= self._recall_target - 1e-9
        probes = int(np.argmax(reaches)) + 1 if reaches.any() else rows.shape[1]
        k = min(self._recall_k, len(self._vectors))
        reached = float(self.probe_recall(measure)[probes - 1])
        return {"probes": probes, "probes_chosen_by": f"recall target {self._recall_target} on {len(choose)} "
                f"{source}", f"recall_at_{k}_held_out": reached, "held_out_queries": int(len(measure))}

    def call(self, queries: tf.Tensor, k: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        if self._table is None:
            raise ValueError("The `index` method must be called first to create the retrieval index.")
        k = k if k is not None else self._k
        queries = tf.convert_to_tensor(queries, tf.float32)
        probes = self.num_probes
        table, offsets = tf.convert_to_tensor(self._table), tf.convert_to_tensor(self._offsets)
        identifiers = tf.convert_to_tensor(self._identifiers)
        _, probed = tf.math.top_k(tf.matmul(queries, tf.convert_to_tensor(self._means), transpose_b=True), k=probes)
        starts = tf.gather(offsets, probed)
        lengths = tf.gather(offsets, probed + 1) - starts
        if probes > MAX_UNROLLED_PROBES:
            scores, rows = self._gathered(queries, table, starts, lengths, k)
        else:
            scores, rows = tf.cond(tf.equal(tf.shape(queries)[0], 1),
                                   lambda: self._sliced(queries, table, starts[0], lengths[0], k),
                                   lambda: self._gathered(queries, table, starts, lengths, k))
        found = scores > tf.float32.min
        ids = tf.gather(identifiers, tf.where(found, rows, 0))
        return scores, tf.where(found, ids, tf.zeros_like(ids))

    def _sliced(self, query, table, starts, lengths, k):
        """Batch 1: a slice of the table per probed partition (no copy) and a MatMul each."""
        d = table.shape[1]
        parts = [tf.matmul(query, tf.slice(table, tf.stack([starts[i], 0]), tf.stack([lengths[i], d])),
                           transpose_b=True) for i in range(self.num_probes)]
        total = tf.reduce_sum(lengths)
        # top_k needs k columns: pad with the lowest score (then id ""). The batch size stays
        # dynamic here: a literal 1 lets Grappler's constant folding (TF 2.20) carry it back
        # through the batch-size condition onto the request's own shape, failing its validation.
        scores = tf.concat([*parts, tf.fill(tf.stack([tf.shape(query)[0], k]), tf.float32.min)], axis=1)
        top_scores, top = tf.math.top_k(scores, k=k)
        position = tf.cast(tf.reshape(top, [-1]), tf.int64)
        begins = tf.cumsum(lengths, exclusive=True)
        slot = tf.maximum(tf.searchsorted(begins, position, side="right") - 1, 0)
        rows = tf.gather(starts, slot) + position - tf.gather(begins, slot)
        valid = position < total
        return (tf.where(valid, tf.reshape(top_scores, [-1]), tf.float32.min)[None],
                tf.where(valid, rows, 0)[None])

    def _gathered(self, queries, table, starts, lengths, k):
        """Any batch: the probed partitions' rows gathered into [batch, longest] and scored."""
        batch = tf.cast(tf.shape(queries)[0], tf.int64)
        total = tf.reduce_sum(lengths, axis=1)
        width = tf.maximum(tf.reduce_max(tf.concat([total, [0]], axis=0)), k)
        position = tf.broadcast_to(tf.range(width)[None], tf.stack([batch, width]))
        begins = tf.cumsum(lengths, axis=1, exclusive=True)
        slot = tf.maximum(tf.searchsorted(begins, position, side="right") - 1, 0)
        rows = tf.gather(starts, slot, batch_dims=1) + position - tf.gather(begins, slot, batch_dims=1)
        valid = position < total[:, None]
        rows = tf.where(valid, rows, 0)
        scores = tf.where(valid, tf.einsum("bd,bwd->bw", queries, tf.gather(table, rows)), tf.float32.min)
        top_scores, top = tf.math.top_k(scores, k=k)
        return top_scores, tf.gather(rows, top, batch_dims=1)

    def is_exact(self) -> bool:
        return self.num_probes >= self.settings["partitions"]
