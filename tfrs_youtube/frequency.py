"""Streaming item-frequency estimation for the log Q correction (Yi et al. 2019).

The sampled softmax subtracts log Q(y) from every logit, where Q(y) is the probability that item y
appears in a training batch. When the data is an unbounded stream there is no vocabulary to count
over, so the paper keeps, per hash bucket, the last step the bucket was seen (array A) and a moving
average of the number of steps between two sightings (array B); the probability is 1 / B.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class StreamingFrequencyEstimator(tf.keras.layers.Layer):
    """Estimates each item's per-batch occurrence probability from a stream of batches.

    The log Q correction of a sampled softmax needs every candidate's sampling probability, but a
    stream neither ends nor has a fixed vocabulary, so counts are impossible. Instead each item is
    hashed to a bucket that remembers the global step it was last seen (A) and an exponential
    moving average of the gap between consecutive sightings (B): an item in a fraction p of the
    batches recurs every 1/p steps on average, so p is estimated as 1 / B (Algorithm 2 of Yi et al.
    2019). Items that share a bucket make it look more frequent than each of them is; with several
    independent hash functions (Algorithm 3) the largest gap over the arrays, the least polluted
    bucket, is used, which shrinks that over-estimate.

    Call `update(ids)` once per training step with the batch's positive ids, and `probability(ids)`
    (or the layer itself) for Q. Within one step each distinct bucket is updated once: an id
    repeated in a batch, or two ids that collide, count as one sighting. That matches what is
    estimated (does the item occur in the batch, not how often) and keeps the scatter deterministic.

    Initialisation: the step counter starts at 0 and the first `update` is step 1. A starts at 0,
    as if every bucket had been seen just before the stream began, so a bucket first seen at step t
    contributes a gap of t: a fair sample when every item is in the stream from its start (shuffled
    training data), too long for an item that appears later. B starts at `initial_gap`, which the
    paper's moving average forgets only after about 1/alpha sightings; `warmup` (the default)
    instead takes the plain mean of a bucket's gaps until it has about 1/alpha of them, so the
    first gap replaces the prior. A bucket never seen gets 1 / max(initial_gap, step + 1): small,
    never a division by zero, and, like a real gap, no shorter than the item's absence so far.

    Args:
      num_buckets: size H of each hash array. Memory: 12 bytes x H x num_hashes (16 with warmup).
      num_hashes: number of independent hash functions (1: Algorithm 2; more: Algorithm 3).
      alpha: learning rate of the moving average of gaps; larger adapts faster, noisier.
      initial_gap: prior gap B of a bucket before it is first seen (>= 1).
      warmup: average a bucket's first ~1/alpha gaps with equal weights (False: the paper's rule).
      seed: derives the keys of the hash functions; same seed, same buckets.
    """

    def __init__(self, num_buckets: int = 1 << 20, num_hashes: int = 1, alpha: float = 0.01,
                 initial_gap: float = 1000.0, warmup: bool = True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if num_buckets < 1 or num_hashes < 1:
            raise ValueError(f"num_buckets and num_hashes must be >= 1: {num_buckets}, {num_hashes}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if initial_gap < 1.0:
            raise ValueError(f"initial_gap must be >= 1 (a probability <= 1), got {initial_gap}")
        self.num_buckets = int(num_buckets)
        self.num_hashes = int(num_hashes)
        self.alpha = float(alpha)
        self.initial_gap = float(initial_gap)
        self.warmup = bool(warmup)
        self._max_count = int(np.ceil(1.0 / self.alpha))  # weights stop changing here
        self.seed = int(seed)
        # SipHash keys (to_hash_bucket_strong): one independent pair per hash function.
        rng = np.random.default_rng(self.seed)
        self._keys = rng.integers(0, 2**63 - 1, size=(self.num_hashes, 2)).tolist()
        shape = (self.num_hashes, self.num_buckets)
        self.step = self.add_weight("step", shape=(), dtype=tf.int64, initializer="zeros",
                                    trainable=False)
        self.last_seen = self.add_weight("last_seen", shape=shape, dtype=tf.int64,
                                         initializer="zeros", trainable=False)  # A
        self.gap = self.add_weight(  # B
            "gap", shape=shape, dtype=tf.float32, trainable=False,
            initializer=tf.keras.initializers.Constant(self.initial_gap))
        if self.warmup:  # sightings per bucket, capped at 1/alpha
            self.sightings = self.add_weight("sightings", shape=shape, dtype=tf.int32,
                                             initializer="zeros", trainable=False)

    def buckets(self, ids: tf.Tensor) -> tf.Tensor:
        """The [num_hashes, n] bucket of each id under each hash function."""
        ids = tf.reshape(tf.convert_to_tensor(ids), [-1])
        if ids.dtype != tf.string:
            if not ids.dtype.is_integer:
                raise TypeError(f"ids must be strings or integers, got {ids.dtype}")
            # Via their decimal form, integer ids get the same keyed, independent hashes.
            ids = tf.strings.as_string(tf.cast(ids, tf.int64))
        return tf.stack([tf.strings.to_hash_bucket_strong(ids, self.num_buckets, key)
                         for key in self._keys])

    def _index(self, ids: tf.Tensor) -> tf.Tensor:
        """[num_hashes, n, 2] (hash function, bucket) positions of the ids in the arrays."""
        buckets = self.buckets(ids)
        hashes = tf.broadcast_to(tf.range(self.num_hashes, dtype=tf.int64)[:, None],
                                 tf.shape(buckets, out_type=tf.int64))
        return tf.stack([hashes, buckets], axis=-1)

    def update(self, ids: tf.Tensor) -> tf.Tensor:
        """Records one training step whose batch holds `ids`; returns the new step number."""
        index = tf.reshape(self._index(ids), [-1, 2])
        # Each distinct (hash, bucket) once: scatters with duplicate indices are order-dependent.
        flat = tf.unique(index[:, 0] * self.num_buckets + index[:, 1]).y
        index = tf.stack([flat // self.num_buckets, flat % self.num_buckets], axis=1)

        self.step.assign_add(1)
        t = self.step.read_value()
        last = tf.gather_nd(self.last_seen, index)
        observed = tf.cast(t - last, tf.float32)
        rate = tf.constant(self.alpha)
        if self.warmup:
            # The n-th sighting gets weight max(alpha, 1/n): a plain mean until the average has
            # about 1/alpha samples, so the prior does not outweigh a rare item's few sightings.
            count = tf.minimum(tf.gather_nd(self.sightings, index) + 1, self._max_count)
            self.sightings.scatter_nd_update(index, count)
            rate = tf.maximum(rate, 1.0 / tf.cast(count, tf.float32))
        gap = (1.0 - rate) * tf.gather_nd(self.gap, index) + rate * observed
        self.gap.scatter_nd_update(index, gap)
        self.last_seen.scatter_nd_update(index, tf.fill(tf.shape(last), t))
        return tf.identity(t)

    def probability(self, ids: tf.Tensor) -> tf.Tensor:
        """Estimated probability, in (0, 1], that each id occurs in a batch; float32, ids' shape."""
        ids = tf.convert_to_tensor(ids)
        index = self._index(ids)
        gap = tf.gather_nd(self.gap, index)
        # Never seen: the true gap is at least the time since the stream began.
        absent = tf.cast(self.step, tf.float32) + 1.0
        gap = tf.where(tf.gather_nd(self.last_seen, index) == 0, tf.maximum(gap, absent), gap)
        # Max over the arrays: the bucket shared with the fewest other sightings.
        probability = 1.0 / tf.maximum(tf.reduce_max(gap, axis=0), 1.0)
        return tf.reshape(probability, tf.shape(ids))

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return self.probability(ids)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_buckets": self.num_buckets,
                "num_hashes": self.num_hashes, "alpha": self.alpha, "initial_gap": self.initial_gap,
                "warmup": self.warmup, "seed": self.seed}
