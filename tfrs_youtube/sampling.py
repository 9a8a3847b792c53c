"""What the sampled softmax's log Q correction needs: each candidate's chance to be in the batch.

A training batch scores every query against a candidate set made of the batch's B positives
(each an independent draw from the label distribution p) and M extra negatives drawn with
replacement from a background distribution q. Popular videos are in that set far more often
than rare ones, so an uncorrected softmax learns to push them down. Yi et al. (2019) subtract
log Q_j from every logit of candidate j, Q_j being the probability that j is in the set:

    P(j among the B positives) = 1 - (1 - p_j)^B
    P(j among the M negatives) = 1 - (1 - q_j)^M
    Q_j = 1 - (1 - p_j)^B (1 - q_j)^M        (the draws are independent)

For small p and q this is B p_j + M q_j, the expected count, so the classic sampled-softmax
correction and this one agree where it matters. With the streaming estimator, the first factor
comes straight from the estimate of P(j in a batch) instead of from counts.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def background_probabilities(video_vocabulary: list[str], labels: np.ndarray) -> np.ndarray:
    """p over the video table's indices (0 = out of vocabulary): label frequency, add-one smoothed.

    Smoothing keeps log Q finite for videos never seen as a label, which can still be sampled.
    """
    index = {v: i + 1 for i, v in enumerate(video_vocabulary)}
    counts = np.ones(len(video_vocabulary) + 1, np.float64)
    counts[0] = 0.0
    known = np.fromiter((index.get(v, 0) for v in labels), np.int64, len(labels))
    np.add.at(counts, known[known > 0], 1.0)
    return (counts / counts.sum()).astype(np.float32)


def uniform_probabilities(vocabulary_size: int) -> np.ndarray:
    """q uniform over the known videos (index 0, out of vocabulary, is never sampled)."""
    q = np.full(vocabulary_size + 1, 1.0 / max(vocabulary_size, 1), np.float32)
    q[0] = 0.0
    return q


def in_batch_probability(p: tf.Tensor, batch_size: tf.Tensor) -> tf.Tensor:
    """1 - (1 - p)^B: the chance that a candidate of per-example probability p is among B positives."""
    p = tf.cast(p, tf.float32)
    return -tf.math.expm1(tf.cast(batch_size, tf.float32) * tf.math.log1p(-tf.minimum(p, 1.0 - 1e-7)))


def inclusion_probability(p_in_batch: tf.Tensor, q: tf.Tensor | None, num_negatives: int) -> tf.Tensor:
    """Q = 1 - (1 - P(in the positives)) (1 - q)^M: the chance to be anywhere in the candidate set."""
    p_in_batch = tf.minimum(tf.cast(p_in_batch, tf.float32), 1.0 - 1e-7)
    log_absent = tf.math.log1p(-p_in_batch)
    if q is not None and num_negatives > 0:
        log_absent += float(num_negatives) * tf.math.log1p(-tf.minimum(tf.cast(q, tf.float32), 1.0 - 1e-7))
    # Floor: an item with Q = 0 would get an infinite correction.
    return tf.maximum(-tf.math.expm1(log_absent), 1e-12)
